#!/usr/bin/python3
"""Live capture: `flowmark observe -i IFACE` with --capture afpacket (TPACKET_V3 ring) and
--capture pcap (libpcap) on a real interface.

    /usr/bin/python3 tests/integration/test_observe_live.py BUILD_DIR [unittest options]

Two network namespaces A and B joined by a veth pair (vethA <-> vethB), with IPv4 and IPv6
addresses. Both capture back ends run at the same time on vethA in A while known traffic
crosses the link: UDP request/response exchanges (IPv4, IPv6), each datagram answered by
an echo server in B, and 802.1Q-tagged UDP frames (VLAN 100) written by a packet socket in
B (the receiving kernel takes the tag off into the packet's metadata, so the capture must
put it back), so every packet count and IP byte count is known in advance. Then both observers are
interrupted (SIGINT: exit 130, every flow still held is emitted) and their records are
checked against the expected flows and against each other. An interrupt straight after the
last datagram must still count it (frames already in the kernel's ring, or in libpcap's,
are read before the observer stops). Needs root (CI runs as root);
skips with the reason otherwise.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_helpers import (_delete_namespace, _live_namespaces, _sh,  # noqa: E402
                           signals_handled)

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_observe_live.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")

A4, B4 = "10.77.0.1", "10.77.0.2"
A6, B6 = "fd77::1", "fd77::2"
AV, BV = "10.78.0.1", "10.78.0.2"  # tagged frames, VLAN 100, B -> A only
PORT = 5000
TAGGED = (BV, AV, 5001, 40003, 5, 50)  # source, destination, ports, frames, payload

# (client address, server address, client port, datagrams, payload bytes, family)
EXCHANGES = [
    (A4, B4, 40001, 20, 100, 4),
    (A6, B6, 40002, 10, 300, 6),
]

ECHO_SERVER = r"""
import socket, sys
socks = []
for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, int(sys.argv[1])))
    s.settimeout(0.05)
    socks.append(s)
print("ready", flush=True)
import time
end = time.monotonic() + 20
while time.monotonic() < end:
    for s in socks:
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        s.sendto(data, peer)
"""

CLIENT = r"""
import socket, sys
server, port, cport, count, size, fam = sys.argv[1:7]
family = socket.AF_INET6 if fam == "6" else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind(("::" if fam == "6" else "0.0.0.0", int(cport)))
s.settimeout(2)
for i in range(int(count)):
    s.sendto(bytes([i % 256]) * int(size), (server, int(port)))
    s.recvfrom(65535)  # one answer per datagram: the exchange is lock-step
"""

# Writes Ethernet + 802.1Q (VLAN 100) + IPv4 + UDP frames on an interface.
TAGGER = r"""
import socket, struct, sys
dev, src, dst, sport, dport, count, size = sys.argv[1:8]
payload = bytes(int(size))
udp = struct.pack("!HHHH", int(sport), int(dport), 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                 socket.inet_aton(src), socket.inet_aton(dst))
frame = (b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x02" + struct.pack("!HH", 0x8100, 100) +
         struct.pack("!H", 0x0800) + ip + udp)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
for _ in range(int(count)):
    s.send(frame)
"""


# Opened on vethA in A before the observers, it reports when all the tagged frames crossed
# the interface. Those frames come from another namespace, so the tagger's exit does not show
# that A has received them; this witness does: the kernel hands a received frame to the
# interface's packet sockets newest first, so when the witness (the oldest) has it, the
# observers' sockets have it too.
WITNESS = r"""
import socket, struct, sys, time
dev, sport, dport, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((dev, 0))
s.settimeout(0.2)
print("ready", flush=True)
ports = struct.pack("!HH", sport, dport)
seen = 0
end = time.monotonic() + 30
while seen < count and time.monotonic() < end:
    try:
        frame = s.recv(65535)
    except socket.timeout:
        continue
    if ports in frame:
        seen += 1
print("seen" if seen == count else f"only {seen} of {count}", flush=True)
"""


# Sends datagrams from A and interrupts the observers (pids) straight after the last one.
SEND_AND_INTERRUPT = r"""
import os, signal, socket, sys
dst, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    s.sendto(bytes(10), (dst, port))
for pid in sys.argv[4:]:
    os.kill(int(pid), signal.SIGINT)
"""


def expected_records():
    out = []
    for cip, sip, cport, n, size, fam in EXCHANGES:
        ip_len = (20 if fam == 4 else 40) + 8 + size
        out.append({"sip": cip, "dip": sip, "sp": cport, "dp": PORT, "proto": 17,
                    "pkt_fwd": n, "pkt_rev": n, "oct_fwd": n * ip_len, "oct_rev": n * ip_len,
                    "vlan": 0})
    src, dst, sport, dport, n, size = TAGGED
    out.append({"sip": src, "dip": dst, "sp": sport, "dp": dport, "proto": 17, "pkt_fwd": n,
                "pkt_rev": 0, "oct_fwd": n * (28 + size), "oct_rev": 0, "vlan": 100})
    return out


def skip_reason():
    if os.geteuid() != 0:
        return "needs root (network namespaces and packet sockets)"
    if not os.access(FLOWMARK, os.X_OK):
        return None  # a failure, reported by the test
    r = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        return f"cannot use network namespaces: {r.stderr.decode().strip()}"
    return None


class LiveCapture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reason = skip_reason()
        if reason:
            print(f"test_observe_live: skipped: {reason}", file=sys.stderr)
            raise unittest.SkipTest(reason)
        cls.a = f"fmoA{os.getpid()}"
        cls.b = f"fmoB{os.getpid()}"
        for ns in (cls.a, cls.b):
            _sh(["ip", "netns", "add", ns])
            _live_namespaces.add(ns)
        _sh(["ip", "-n", cls.a, "link", "add", "vethA", "type", "veth", "peer", "name", "vethB",
             "netns", cls.b])
        for ns, dev, v4, v6 in ((cls.a, "vethA", A4, A6), (cls.b, "vethB", B4, B6)):
            _sh(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0"])
            _sh(["ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev])
            _sh(["ip", "-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad"])
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            _sh(["ip", "-n", ns, "link", "set", dev, "up"])

    @classmethod
    def tearDownClass(cls):
        for ns in (getattr(cls, "a", None), getattr(cls, "b", None)):
            if ns:
                _delete_namespace(ns)

    def in_ns(self, ns, args, **kw):
        return subprocess.Popen(["ip", "netns", "exec", ns] + args, **kw)

    def observe(self, backend, extra=()):
        return self.in_ns(self.a, [FLOWMARK, "observe", "-i", "vethA", "--capture", backend,
                                   "--stats"] + list(extra),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run_traffic(self):
        server = self.in_ns(self.b, [sys.executable, "-c", ECHO_SERVER, str(PORT)],
                            stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(server.stdout.readline().strip(), "ready")
            for cip, sip, cport, n, size, fam in EXCHANGES:
                r = subprocess.run(["ip", "netns", "exec", self.a, sys.executable, "-c", CLIENT,
                                    sip, str(PORT), str(cport), str(n), str(size), str(fam)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   timeout=30)
                self.assertEqual(r.returncode, 0, f"client {cip} -> {sip}: {r.stderr}")
        finally:
            server.kill()
            server.wait()
            server.stdout.close()
        src, dst, sport, dport, n, size = TAGGED
        r = subprocess.run(["ip", "netns", "exec", self.b, sys.executable, "-c", TAGGER, "vethB",
                            src, dst, str(sport), str(dport), str(n), str(size)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, f"tagged frames: {r.stderr}")

    def stop(self, proc):
        proc.send_signal(signal.SIGINT)
        return self.collect(proc)

    @staticmethod
    def collect(proc):
        out, err = proc.communicate(timeout=20)
        return proc.returncode, [json.loads(line) for line in out.splitlines() if line], err

    def capture_both(self, extra=()):
        src, dst, sport, dport, n, size = TAGGED
        witness = self.in_ns(self.a, [sys.executable, "-c", WITNESS, "vethA", str(sport),
                                      str(dport), str(n)], stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(witness.stdout.readline().strip(), "ready")
            procs = self.capture_traffic(extra)
            # Every frame of the exchanges was captured before the client saw its answer; the
            # tagged ones once the witness has seen them all. Frames the kernel captured are
            # read after the interrupt too, so the observers can be stopped now.
            self.assertEqual(witness.stdout.readline().strip(), "seen")
            return {b: self.stop(p) for b, p in procs.items()}
        finally:
            witness.kill()
            witness.wait()
            witness.stdout.close()

    def open_both(self, extra=()):
        procs = {b: self.observe(b, extra) for b in ("afpacket", "pcap")}
        # Both captures open before the first packet: flowmark installs its SIGINT handler
        # right after opening the capture.
        deadline = time.monotonic() + 10
        for b, p in procs.items():
            while not signals_handled(p.pid):
                if p.poll() is not None:
                    self.fail(f"{b}: flowmark exited early ({p.returncode}): {p.stderr.read()}")
                if time.monotonic() > deadline:
                    self.fail(f"{b}: capture not open within 10 s")
                time.sleep(0.01)
        return procs

    def capture_traffic(self, extra):
        procs = self.open_both(extra)
        self.run_traffic()
        return procs

    @staticmethod
    def udp_records(records):
        keys = ("sip", "dip", "sp", "dp", "proto", "pkt_fwd", "pkt_rev", "oct_fwd", "oct_rev",
                "vlan")
        return sorted((tuple(r[k] for k in keys) for r in records if r["proto"] == 17),
                      key=repr)

    def test_both_back_ends_see_the_known_flows(self):
        results = self.capture_both()
        want = self.udp_records(expected_records())
        for backend, (rc, records, err) in results.items():
            self.assertEqual(rc, 130, f"{backend}: interrupted: exit 130 expected; {err}")
            self.assertEqual(self.udp_records(records), want, f"{backend}: UDP flows; {err}")
            m = re.search(r"(\d+) packets, drops (\S+),", err)
            self.assertIsNotNone(m, f"{backend}: no statistics: {err!r}")
            self.assertEqual(m.group(2), "0", f"{backend}: the kernel's drop count: {err}")
            self.assertRegex(err, r"ignored_packets 0, late_packets \d+,")
        self.assertEqual(self.udp_records(results["afpacket"][1]),
                         self.udp_records(results["pcap"][1]))

    def test_filter_in_the_kernel(self):
        results = self.capture_both(["--filter", f"udp port {PORT} or vlan 100"])
        want = self.udp_records(expected_records())
        for backend, (rc, records, err) in results.items():
            self.assertEqual(rc, 130, f"{backend}: {err}")
            got = self.udp_records(records)
            # The kernel runs the filter with the VLAN tag in the packet's metadata, not in
            # the frame: "vlan 100" must still select the tagged frames.
            self.assertEqual(got, want, f"{backend}: {err}")
            self.assertTrue(all(r["proto"] == 17 for r in records), f"{backend}: {records}")
        self.assertEqual(self.udp_records(results["afpacket"][1]),
                         self.udp_records(results["pcap"][1]))

    def test_interrupt_reads_what_the_kernel_captured(self):
        # The frames sent before the interrupt are in the capture's ring (or libpcap's) when
        # it comes, some in a block the kernel has not handed over yet: all are counted.
        # A datagram waiting for address resolution leaves later, on the ARP answer: B's
        # address is made known in advance, so each one leaves within its sendto().
        mac = json.loads(_sh(["ip", "-j", "-n", self.b, "link", "show", "vethB"]).stdout)[0]
        _sh(["ip", "-n", self.a, "neigh", "replace", B4, "lladdr", mac["address"], "dev",
             "vethA", "nud", "permanent"])
        procs = self.open_both()
        n, port = 10, 6000
        r = subprocess.run(["ip", "netns", "exec", self.a, sys.executable, "-c",
                            SEND_AND_INTERRUPT, B4, str(port), str(n)] +
                           [str(p.pid) for p in procs.values()],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        for backend, p in procs.items():
            rc, records, err = self.collect(p)
            self.assertEqual(rc, 130, f"{backend}: {err}")
            sent = [rec for rec in records if rec["proto"] == 17 and rec["dp"] == port]
            self.assertEqual([(rec["sip"], rec["dip"], rec["pkt_fwd"]) for rec in sent],
                             [(A4, B4, n)], f"{backend}: {records}; {err}")

    def test_unknown_interface(self):
        for backend in ("afpacket", "pcap"):
            r = subprocess.run(["ip", "netns", "exec", self.a, FLOWMARK, "observe", "-i",
                                "nosuchif0", "--capture", backend], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=10)
            self.assertEqual(r.returncode, 68, f"{backend}: {r.stderr}")  # no such interface
            self.assertIn("nosuchif0", r.stderr)


if __name__ == "__main__":
    if not os.access(FLOWMARK, os.X_OK):
        sys.exit(f"test_observe_live.py: {FLOWMARK} is missing or not executable: build first")
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
