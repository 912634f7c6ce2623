#!/usr/bin/env python3
"""flowmarkd's ipfix backend end to end (issue 17), read back by independent IPFIX readers.

flowmarkd runs with a firefly source and three ipfix backends: a file (biflows), a file with
uniflow = true, and a TCP collector run by this test (a socket server keeping the bytes of
each connection: a TCP stream of IPFIX messages has the byte format of a file). This test
sends start and end fireflies with usage for IPv4 and IPv6 flows; then
  - python3-ipfix reads from the file exactly the flows that ended, each with its addresses,
    ports, protocol, start and end milliseconds, and octets (sent forward, received as
    RFC 5103 reverse octets), flowEndReason 3 (4 for the flow ended by the stop), and no
    packet, TCP flag, class-of-service or VLAN element (events do not know them); the TCP
    collector's stream gives the same records;
  - libfixbuf's ipfixDump reads the file and the stream with no warning or error;
  - the uniflow file holds a forward and a reverse record per flow, no reverse elements;
  - at exit the counters flowmark_ipfix_records_total{outcome=exported} equal the flows;
  - a misspelt key and a bad target are refused by `flowmarkd --check`, naming the key.
Loopback only; no root. Usage: test_flowmarkd_ipfix.py BUILD_DIR. Exit 0 pass, 1 fail.
"""

import collections
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from ipfix_tcp_collector import TcpCollector
import ipfix.ie
import ipfix.reader

T0 = 1796616000  # 2026-12-07T04:00:00Z
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", flush=True)
    return cond


def wait_for(pred, what, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def read_records(data):
    import io
    return list(ipfix.reader.from_stream(io.BytesIO(data)).namedict_iterator())


def utc_ms(t):
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return round(t.timestamp() * 1000)


def ipfixdump(path, n):
    xml = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "packaging",
                       "ipfix", "cesnet-scitags.xml")
    r = subprocess.run(["ipfixDump", "-e", xml, "-i", path], capture_output=True, timeout=60)
    out = r.stdout.decode()
    check(r.returncode == 0 and r.stderr == b"", f"ipfixDump {path}: {r.returncode} {r.stderr}")
    check("warning" not in out.lower() and "error" not in out.lower(),
          f"ipfixDump {path}: a warning or error")
    check(f"{n} Data Records" in out, f"ipfixDump {path}: {n} data records")


def run(build):
    flowmarkd = os.path.join(build, "flowmarkd")
    root = tempfile.mkdtemp(prefix="flowmark-ipfix-backend-")
    daemon = None
    try:
        # ---- configuration errors name the key -------------------------------------------
        bad = os.path.join(root, "bad.toml")
        for body, word in (('target = "/tmp/x.ipfix"\ntrget = "x"\n', "trget"),
                           ('target = "sctp://127.0.0.1"\n', "target"),
                           ('target = "/tmp/x.ipfix"\nmax_message = 100\n', "max_message"),
                           ('uniflow = true\n', "target")):
            with open(bad, "w") as f:
                f.write(f'[source.ff]\ntype = "firefly"\nport = 10514\n'
                        f'[backend.x]\ntype = "ipfix"\n{body}')
            r = subprocess.run([flowmarkd, "--check", "-c", bad], capture_output=True,
                               timeout=30, text=True)
            check(r.returncode == 78 and "[backend.x]" in r.stderr and word in r.stderr,
                  f"--check refuses {body!r} naming {word}: {r.returncode} {r.stderr}")

        collector = TcpCollector()
        ff_port = free_port(socket.SOCK_DGRAM)
        biflow, uniflow = os.path.join(root, "flows.ipfix"), os.path.join(root, "uni.ipfix")
        config = os.path.join(root, "flowmark.toml")
        with open(config, "w") as f:
            f.write(f"""
[source.ff]
type = "firefly"
port = {ff_port}
bind = "127.0.0.1"

[backend.file]
type = "ipfix"
target = "{biflow}"
observation_domain = 77

[backend.uni]
type = "ipfix"
target = "{uniflow}"
uniflow = true

[backend.tcp]
type = "ipfix"
target = "tcp://127.0.0.1:{collector.port}"
""")
        log = open(os.path.join(root, "flowmarkd.log"), "w+")
        daemon = subprocess.Popen([flowmarkd, "-c", config], stdout=log,
                                  stderr=subprocess.STDOUT)

        def log_text():
            log.flush()
            with open(log.name) as f:
                return f.read()

        wait_for(lambda: daemon.poll() is not None or "flowmarkd running" in log_text(),
                 "flowmarkd running")
        check(daemon.poll() is None, f"flowmarkd runs: {log_text()}")

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = {}

        def send(state, afi, src, dst, sport, start, end=None, usage=None, tag=(2, 1)):
            d = {"version": 1,
                 "flow-lifecycle": {"state": state, "start-time": iso(start)},
                 "flow-id": {"afi": afi, "src-ip": src, "dst-ip": dst, "protocol": "tcp",
                             "src-port": sport, "dst-port": 443},
                 "context": {"experiment-id": tag[0], "activity-id": tag[1]}}
            if end is not None:
                d["flow-lifecycle"]["end-time"] = iso(end)
            if usage is not None:
                d["usage"] = {"sent": usage[0], "received": usage[1]}
            sock.sendto(json.dumps(d).encode(), ("127.0.0.1", ff_port))

        flows = []
        for i in range(40):
            v6 = i % 2 == 1
            src, dst = ("2001:db8::1", "2001:db8::99") if v6 else ("192.0.2.1", "198.51.100.7")
            flows.append(("ipv6" if v6 else "ipv4", src, dst, 20000 + i, T0 + i * 10,
                          T0 + i * 10 + 1 + i % 7, (1000 * i + 17, 37 * i),
                          (2 + i % 5, 1 + i % 3)))
        for afi, src, dst, sport, start, end, usage, tag in flows:
            send("start", afi, src, dst, sport, start, tag=tag)
            send("end", afi, src, dst, sport, start, end, usage, tag=tag)
            sent[(src, dst, sport)] = (start * 1000, end * 1000, usage, tag)
        # A flow that starts and does not end before the stop: ended by the shutdown, so
        # exported too (with no usage: octets 0).
        send("start", "ipv4", "192.0.2.9", "198.51.100.9", 30000, T0)

        def file_records(path):
            if not os.path.exists(path):
                return []
            with open(path, "rb") as f:
                return read_records(f.read())

        # Messages leave at least every second: all 40 in the file while flowmarkd runs.
        try:
            wait_for(lambda: len(file_records(biflow)) == len(flows), "40 records in the file")
        except AssertionError:
            print(log_text())
            raise
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(timeout=20)
        check(rc == 0, f"flowmarkd exit {rc}")
        text = log_text()
        m = re.search(r"counters (\{.*\})\s*$", text, re.M)
        counters = json.loads(m.group(1)) if m else {}
        wait_for(lambda: collector.closed and collector.closed[0], "the TCP connection closed")
        check(len(collector.sessions) == 1, f"one TCP connection: {len(collector.sessions)}")
        stream = os.path.join(root, "stream.ipfix")
        with open(stream, "wb") as f:
            f.write(collector.sessions[0])

        n = len(flows) + 1  # and the flow ended by the shutdown
        for backend in ("file", "tcp"):
            got = counters.get(f"flowmark_ipfix_records_total{{backend={backend},"
                               f"outcome=exported}}", 0)
            check(got == n, f"{backend}: records exported {got}, want {n}")
        n_uni = sum(1 + (u[1] > 0) for _, _, u, _ in sent.values()) + 1
        check(counters.get("flowmark_ipfix_records_total{backend=uni,outcome=exported}", 0)
              == n_uni, "uni: a forward record per flow, a reverse one when it received")

        def by_flow(recs):
            out = {}
            for r in recs:
                v6 = "sourceIPv6Address" in r
                k = (str(r["sourceIPv6Address" if v6 else "sourceIPv4Address"]),
                     str(r["destinationIPv6Address" if v6 else "destinationIPv4Address"]),
                     r["sourceTransportPort"])
                check(k not in out, f"one record per flow: {k}")
                out[k] = r
            return out

        for path in (biflow, stream):
            recs = file_records(path)
            ipfixdump(path, n)
            got = by_flow(recs)
            check(len(got) == n, f"{path}: {len(got)} flows, want {n}")
            for k, (start, end, usage, tag) in sent.items():
                r = got.get(k)
                if not check(r is not None, f"{path}: no record for {k}"):
                    continue
                # The experiment and activity as CESNET's Scitags elements, IPv4 and IPv6.
                want = (443, 6, start, end, usage[0], usage[1], tag[0], tag[1])
                have = (r["destinationTransportPort"], r["protocolIdentifier"],
                        utc_ms(r["flowStartMilliseconds"]), utc_ms(r["flowEndMilliseconds"]),
                        r["octetDeltaCount"], r["reverseOctetDeltaCount"],
                        r.get("scitagExperimentID"), r.get("scitagExperimentAct"))
                check(have == want, f"{path} {k}: {have} != {want}")
                # Announced ends: flowEndReason 3 (end detected). Events know no packets,
                # flags, class of service or VLAN: not in the template (never a false 0).
                check(r.get("flowEndReason") == 3, f"{path} {k}: flowEndReason "
                      f"{r.get('flowEndReason')}, want 3")
                absent = [e for e in ("packetDeltaCount", "reversePacketDeltaCount",
                                      "tcpControlBits", "ipClassOfService", "vlanId") if e in r]
                check(not absent, f"{path} {k}: elements events do not know: {absent}")
            r = got.get(("192.0.2.9", "198.51.100.9", 30000))
            check(r is not None and r["octetDeltaCount"] == 0, f"{path}: the shutdown's flow")
            check(r is not None and r.get("flowEndReason") == 4,
                  f"{path}: the shutdown's flow ends forced (flowEndReason 4): "
                  f"{r and r.get('flowEndReason')}")
        with open(biflow, "rb") as f:
            dom = int.from_bytes(f.read(16)[12:16], "big")
        check(dom == 77, f"observation domain {dom}")

        uni = file_records(uniflow)
        check(len(uni) == n_uni, f"uniflow: {len(uni)} records, want {n_uni}")
        check(not any(n.startswith("reverse") for r in uni for n in r), "uniflow: no reverse")
        pairs = collections.Counter((str(r.get("sourceIPv4Address", r.get("sourceIPv6Address"))),
                                     r["octetDeltaCount"]) for r in uni)
        for (src, dst, sport), (_, _, usage, _) in sent.items():
            check(pairs[(src, usage[0])] >= 1 and (usage[1] == 0 or pairs[(dst, usage[1])] >= 1),
                  f"uniflow: both directions of {src} {sport}")
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(root, ignore_errors=True)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    ipfix.ie.use_iana_default()
    ipfix.ie.use_5103_default()
    ipfix.ie.use_specfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                       "packaging", "ipfix", "cesnet-scitags.iespec"))
    started = time.monotonic()
    try:
        run(os.path.abspath(sys.argv[1]))
    except AssertionError as e:
        FAILURES.append(str(e))
        print(f"FAIL: {e}", flush=True)
    print(f"{'FAIL' if FAILURES else 'PASS'}: flowmarkd ipfix backend, {len(FAILURES)} "
          f"failure(s), {time.monotonic() - started:.1f} s")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
