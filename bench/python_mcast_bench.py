#!/usr/bin/env python3
"""Datagrams per second into Python: flowmark.mcast.Receiver.recv_many (recvmmsg batches)
against two floors measured in the same run — the C++ receiver (`flowmark mcast recv
--count N --stats`) and a plain Python socket (socket.recv_into in a loop).

    bench/python_mcast_bench.py BUILD_DIR [--count 2000000] [--size 64] [--batch 256]
                                [--rounds 3]

In a private network namespace whose loopback does multicast (lo up, multicast on,
224.0.0.0/4 dev lo). The sender is C++: `flowmark mcast say --count N --size S` (a
sequenced stream, sendmmsg batches of 64, as fast as the kernel takes them), started once
the receiver has joined. Every receiver keeps the stream statistics (the stream header's
sequence numbers), so each run says how many datagrams were sent, how many arrived and how
many were lost (dropped by a full receive buffer when the sender is faster than the
receiver). The rate is the datagrams received over the time from the first to the last
arrival.

Needs root (a network namespace) and /usr/bin/python3 with PYTHONPATH=BUILD_DIR/python
(set here). Measures and prints; asserts nothing. The machine's other work shares its
cores: say how many there are, and what else ran, with the figures.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

# Sockets opened by a thread inside a namespace: the integration tests' helper.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "integration"))
from netns_helpers import in_netns  # noqa: E402
GROUP = "239.255.77.1"


def sh(*args):
    subprocess.run(args, check=True)


def send(build, ns, port, count, size):
    return subprocess.Popen(["ip", "netns", "exec", ns, os.path.join(build, "flowmark"), "mcast",
                             "say", "--group", GROUP, "--port", str(port), "--count", str(count),
                             "--size", str(size), "-m", "bench", "--gso"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def rcvbuf_errors(ns):
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    udp = [line.split() for line in out if line.startswith("Udp:")]
    return int(udp[1][udp[0].index("RcvbufErrors")])


def python_receiver(mcast, ns, port, count, size, batch):
    rx = in_netns(ns, lambda: mcast.Receiver(GROUP, port, iface="lo", stats=True, batch=batch,
                                             buffer_size=max(size, 2048)))
    return rx


def run_recv_many(mcast, build, ns, port, count, size, batch):
    rx = python_receiver(mcast, ns, port, count, size, batch)
    tx = send(build, ns, port, count, size)
    n, first, last, first_batch = 0, None, None, 0
    while n < count:
        got = rx.recv_many(batch, timeout=1.0)
        if not got:
            break
        now = time.perf_counter()
        if first is None:
            first, first_batch = now, len(got)
        n += len(got)
        last = now
    tx.wait()
    streams = rx.stats()["streams"]
    rx.close()
    lost = streams[0]["lost"] + (count - 1 - streams[0]["last_seq"]) if streams else count
    rate = (n - first_batch) / (last - first) if last and last > first else 0.0
    return n, lost, rate


def run_cpp(build, ns, port, count, size):
    """The C++ floor: flowmark's own receiver (recvmmsg, stream statistics, nothing printed
    per datagram). Its rate: datagrams over the time from the sender's start to the
    receiver's exit (less the 1 s idle timeout when some never came)."""
    rx = subprocess.Popen(["ip", "netns", "exec", ns, os.path.join(build, "flowmark"), "mcast",
                           "recv", "--group", GROUP, "--port", str(port), "--iface", "lo",
                           "--count", str(count), "--stats", "--timeout", "1"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Joined when the group shows on lo (no fixed wait).
    deadline = time.monotonic() + 10
    while GROUP not in subprocess.run(["ip", "-n", ns, "maddr", "show", "dev", "lo"],
                                      capture_output=True, text=True).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("flowmark mcast recv did not join")
        time.sleep(0.01)
    t0 = time.perf_counter()
    tx = send(build, ns, port, count, size)
    out, _ = rx.communicate()
    elapsed = time.perf_counter() - t0
    tx.wait()
    stats = json.loads(out.strip().splitlines()[-1])
    s = stats["streams"][0] if stats["streams"] else None
    n = s["received"] if s else 0
    if n < count:
        elapsed -= 1.0
    lost = (s["lost"] + count - 1 - s["last_seq"]) if s else count
    return n, lost, n / elapsed if elapsed > 0 else 0.0


def drain(mcast, build, ns, port, count, size, batch, how):
    """The receiver's own cost: the C++ sender queues `count` datagrams first (a receive
    buffer large enough for all), then they are read as fast as `how` can. Returns
    (received, lost, datagrams/s of wall time, datagrams/s of this process's CPU time —
    what one core would do alone, when other work shares the cores)."""
    rcvbuf = 1 << 30
    if how == "socket":
        fd = in_netns(ns, lambda: mcast.open_joined_socket(GROUP, port, iface="lo",
                                                           rcvbuf=rcvbuf))
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, fileno=fd)
        s.setblocking(False)
        send(build, ns, port, count, size).wait()
        buf = bytearray(max(size, 2048))
        n = 0
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            while True:
                try:
                    s.recv_into(buf)
                except BlockingIOError:
                    break
                n += 1
        finally:
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            s.close()
        return n, count - n, n / dt, n / cpu
    rx = in_netns(ns, lambda: mcast.Receiver(GROUP, port, iface="lo", stats=True, batch=batch,
                                             buffer_size=max(size, 2048), rcvbuf=rcvbuf))
    send(build, ns, port, count, size).wait()
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    if how == "recv_many":
        while True:
            got = rx.recv_many(batch, timeout=0)
            if not got:
                break
            n += len(got)
    else:
        while rx.recv(timeout=0) is not None:
            n += 1
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    st = rx.stats()["streams"]
    rx.close()
    lost = st[0]["lost"] + (count - 1 - st[0]["last_seq"]) if st else count
    return n, lost, n / dt, n / cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queued", type=int, default=200_000,
                    help="datagrams queued before reading in part 1")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    sys.path.insert(0, os.path.join(build, "python"))
    import flowmark.mcast as mcast

    if os.geteuid() != 0:
        sys.exit("needs root (a network namespace)")
    ns = f"pymcbench{os.getpid()}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "multicast", "on")
        sh("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", "lo")
        print(f"{os.cpu_count()} CPUs (shared with whatever else runs); datagrams of "
              f"{args.size} bytes from a C++ sender (flowmark mcast say --count --gso); "
              f"loopback in a namespace")
        port = 47000
        print(f"\n1. The receiver alone: {args.queued:,} datagrams queued first, then read")
        drains = [(f"Python Receiver.recv_many({args.batch})", "recv_many"),
                  ("Python Receiver.recv() one at a time", "recv"),
                  ("Python socket.recv_into (stdlib floor)", "socket")]
        best = {}
        for r in range(args.rounds):
            for name, how in drains:
                port += 1
                n, lost, rate, cpu_rate = drain(mcast, build, ns, port, args.queued, args.size,
                                                args.batch, how)
                b = best.setdefault(name, [0, 0])
                b[0], b[1] = max(b[0], rate), max(b[1], cpu_rate)
                print(f"  round {r + 1}  {name:40s} {rate:11,.0f} datagrams/s "
                      f"({cpu_rate:11,.0f} per CPU second)  received {n:,} of "
                      f"{args.queued:,}, lost {lost:,}")
        floor = best[drains[2][0]]
        for name, _ in drains:
            rate, cpu_rate = best[name]
            print(f"  best  {name:40s} {rate:11,.0f} datagrams/s ({cpu_rate:11,.0f} per CPU "
                  f"second)  {rate / floor[0]:5.2f}x / {cpu_rate / floor[1]:5.2f}x the "
                  f"stdlib socket")

        print(f"\n2. Live: {args.count:,} datagrams, the sender running on the same cores")
        runs = [
            ("C++ flowmark mcast recv (floor)", lambda p: run_cpp(build, ns, p, args.count,
                                                                  args.size)),
            (f"Python Receiver.recv_many({args.batch})",
             lambda p: run_recv_many(mcast, build, ns, p, args.count, args.size, args.batch)),
        ]
        results = {}
        for r in range(args.rounds):
            for name, run in runs:
                port += 1
                drops0 = rcvbuf_errors(ns)
                n, lost, rate = run(port)
                drops = rcvbuf_errors(ns) - drops0
                results.setdefault(name, []).append(rate)
                print(f"  round {r + 1}  {name:40s} {rate:11,.0f} datagrams/s  received "
                      f"{n:,} of {args.count:,}, lost {lost:,} (receive-buffer drops {drops:,})")
        cpp = max(results[runs[0][0]]) or 1
        for name, rates in results.items():
            print(f"  best  {name:40s} {max(rates):11,.0f} datagrams/s  "
                  f"{max(rates) / cpp:5.2f}x the C++ receiver")
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)


if __name__ == "__main__":
    main()
