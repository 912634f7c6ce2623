#!/usr/bin/env python3
"""The delay from connect() to the start firefly: flowmarkd's kernel-events source (eBPF
TCP state tracepoint, no polling) against the sockets source polling every 2 s (flowd's
netstat/netlink plugins do the same).

    bench/kevents_delay_bench.py BUILD_DIR [--count 200] [--polled 5]

In a private network namespace (loopback only): flowmarkd runs with the source under test
and a firefly backend whose collector is a UDP socket of this script. For each of --count
connections: t0 = just before connect() to a local listener, t1 = when the start firefly of
that connection (matched by its source port) is received. Prints median, p90, p99 and max
of t1 - t0. The polled source is measured over --polled connections (0: skipped): its
delay is uniform over the period, half of it on average.

Needs root (a network namespace; CAP_BPF). Measures and prints; asserts nothing.
"""

import argparse
import ctypes
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLONE_NEWNET = 0x40000000
LISTEN_PORT = 47001
COLLECTOR_PORT = 47514


def setns(name):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def start_daemon(flowmarkd, workdir, source):
    cfg = os.path.join(workdir, "bench.toml")
    with open(cfg, "w") as f:
        f.write(source + "\n[backend.ff]\ntype = \"firefly\"\nto_destination = false\n"
                f"collectors = [\"127.0.0.1:{COLLECTOR_PORT}\"]\nsyslog_header = false\n")
    p = subprocess.Popen([flowmarkd, "-c", cfg], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:  # inherits this process's namespace
        if "flowmarkd running" in line:
            return p
        if p.poll() is not None:
            break
    p.kill()
    raise RuntimeError(f"flowmarkd did not start: {line.strip()}")


def measure(count, collector, listener, deadline_s, jitter_s=0.0):
    delays = []
    for _ in range(count):
        # A poller's delay depends on when in its period the connection comes: at random.
        if jitter_s:
            time.sleep(random.uniform(0, jitter_s))
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t0 = time.perf_counter_ns()
        c.connect(("127.0.0.1", LISTEN_PORT))
        sport = c.getsockname()[1]
        end = time.monotonic() + deadline_s
        got = None
        while got is None:
            collector.settimeout(max(end - time.monotonic(), 0.001))
            try:
                data = collector.recv(65536)
            except socket.timeout:
                break
            f = json.loads(data[data.index(b"{"):])
            if (f["flow-lifecycle"]["state"] == "start"
                    and f["flow-id"]["src-port"] == sport):
                got = time.perf_counter_ns()
        a, _ = listener.accept()
        c.close()
        a.close()
        if got is None:
            print(f"  no start firefly for port {sport} within {deadline_s} s", file=sys.stderr)
            continue
        delays.append((got - t0) / 1e6)
    return delays


def report(name, delays, count):
    if not delays:
        print(f"{name}: no start firefly received")
        return
    d = sorted(delays)
    pct = lambda q: d[min(len(d) - 1, int(q * len(d)))]
    print(f"{name}: {len(d)}/{count} connections; connect() -> start firefly: median "
          f"{statistics.median(d):.3f} ms, p90 {pct(0.90):.3f} ms, p99 {pct(0.99):.3f} ms, "
          f"max {d[-1]:.3f} ms, min {d[0]:.3f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--polled", type=int, default=5)
    a = ap.parse_args()
    flowmarkd = os.path.join(os.path.abspath(a.build), "flowmarkd")
    if os.geteuid() != 0:
        sys.exit("kevents_delay_bench: needs root (network namespace, BPF)")
    ns = f"fmkev{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        setns(ns)
        collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        collector.bind(("127.0.0.1", COLLECTOR_PORT))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", LISTEN_PORT))
        listener.listen(256)
        runs = [("kernel-events (eBPF tracepoint)", a.count, 2.0, 0.0,
                 f"[source.k]\ntype = \"kernel-events\"\nports = [\"{LISTEN_PORT}\"]\n"
                 "skip_private = false\nexperiment = 2\nactivity = 1\n")]
        if a.polled > 0:
            runs.append(("sockets, polled every 2 s (flowd's way)", a.polled, 5.0, 2.0,
                         f"[source.s]\ntype = \"sockets\"\nperiod = 2.0\n"
                         f"ports = [\"{LISTEN_PORT}\"]\nskip_private = false\n"
                         "experiment = 2\nactivity = 1\n"))
        with tempfile.TemporaryDirectory(prefix="fmkev-") as work:
            for name, count, deadline, jitter, source in runs:
                p = start_daemon(flowmarkd, work, source)
                try:
                    time.sleep(0.1 if "kernel" in name else 2.2)  # the poller's baseline
                    report(name, measure(count, collector, listener, deadline, jitter), count)
                finally:
                    p.terminate()
                    p.wait(10)
    finally:
        subprocess.run(["ip", "netns", "del", ns])


if __name__ == "__main__":
    main()
