#!/usr/bin/python3
"""`flowmark observe -i IFACE --workers N` (issue 17): one AF_PACKET socket per worker in a
fanout group (PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG). The kernel must hand both
directions of every flow to one socket; this proves it on the running kernel.

    /usr/bin/python3 tests/integration/observe_live_workers.py BUILD_DIR [unittest options]

Two namespaces A and B joined by a veth pair. flowmark observes vethA in A with --workers 2
(and, in a second test, with the default number of workers). Once it handles SIGINT (it
installs the handler after every socket has joined the group and has its filter), A opens
200 IPv4 and 20 IPv6 TCP connections to an echo server in B (data both ways, clean close)
and 40 IPv4 and 10 IPv6 UDP flows from distinct ports (5 datagrams each, each answered:
lock-step, so 5 + 5 packets). A witness packet socket on vethA (no fanout) counts every
frame per flow; a last datagram to a marker port tells it that the traffic is over (frames
reach all packet sockets of the interface before the sender's call returns or the receiver
gets them). Then flowmark is stopped, by SIGINT (--workers 2) or SIGTERM (the default): its
sockets' rings are read to their end, every worker's flows emitted.

Checked: every flow has exactly one record, whose packets in both directions add up to what
the witness counted (both directions > 0; the UDP flows exactly 5 and 5, forward from the
client); both workers had flows (per-worker --stats lines); the kernel dropped nothing (per
socket and summed); flowmark's own check saw every handshake whole (SYN and SYN-ACK on one
socket). Records while capturing: with a 1 s idle timeout, 16 short UDP flows
then one steady flow (a datagram every 50 ms, on one worker): every short flow's record is
written before the stop — those on the worker without the steady flow only because an idle
worker's clock follows the others' (--filter udp keeps other frames from moving it); the
same with one worker, and with one worker and --ipfix FILE (the messages holding the short
flows' records are in the file before the stop: a live export flushes at least every second).
`--capture pcap --workers 2` is a usage error. Needs root; skips with the
reason otherwise.
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_helpers import (NetnsProcesses, VethHosts, in_netns,  # noqa: E402
                           wait_signals_handled, wait_stdout)

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: observe_live_workers.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")

A4, B4 = "10.79.0.1", "10.79.0.2"
A6, B6 = "fd79::1", "fd79::2"
PORT, MARKER_PORT = 7000, 7999
TCP_FLOWS = ((A4, B4, 200), (A6, B6, 20))  # (client, server, connections)
UDP_FLOWS = ((A4, B4, 40, 41000), (A6, B6, 10, 42000))  # (client, server, flows, first port)
UDP_DATAGRAMS = 5

SERVER = r"""
import socket, sys, threading
port = int(sys.argv[1])

def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, port))
    s.listen(64)
    return s

def serve_tcp(s):
    while True:
        c, _ = s.accept()
        data = b""
        while chunk := c.recv(65536):
            data += chunk
        c.sendall(data)  # the echo, then the close
        c.close()

def serve_udp(s):
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)

for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    threading.Thread(target=serve_tcp, args=(tcp(fam, addr),), daemon=True).start()
    u = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    u.bind((addr, port))
    threading.Thread(target=serve_udp, args=(u,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()  # until the test kills it
"""

CLIENT = r"""
import json, socket, sys
port, datagrams, marker_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
tcp_flows, udp_flows = json.loads(sys.argv[4]), json.loads(sys.argv[5])
for client, server, n in tcp_flows:
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    for i in range(n):
        s = socket.create_connection((server, port), timeout=10)
        s.sendall(bytes([i % 256]) * (200 + i))
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        assert len(got) == 200 + i, (server, i, len(got))
        s.close()
for client, server, n, first in udp_flows:
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    for i in range(n):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((client, first + i))
        s.settimeout(10)
        for k in range(datagrams):
            s.sendto(bytes([k]) * 64, (server, port))
            s.recvfrom(65535)  # one answer each: lock-step
        s.close()
m = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
m.sendto(b"done", (tcp_flows[0][1], marker_port))
"""


# Records while capturing: short flows from ports 43000 + 37 i (one datagram and its answer each),
# then one flow from port 43999 every 50 ms until the test stops it (on one worker: the other
# is idle unless it holds short flows, and moves its clock with the busy one's).
SHORT_THEN_STEADY = r"""
import socket, sys, time
server, port, short = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(short):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 43000 + 37 * i))
    s.settimeout(10)
    s.sendto(b"short", (server, port))
    s.recvfrom(65535)
    s.close()
print("short flows done", flush=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 43999))
end = time.monotonic() + 60
while time.monotonic() < end:
    s.sendto(b"steady", (server, port))
    time.sleep(0.05)
"""


def ipfix_source_ports(path):
    """sourceTransportPort of every data record in the whole messages of an IPFIX file
    (RFC 7011: a message's length at bytes 2..4; data sets of templates 256-259, the port at
    the offset the template gives). A message still being written is left out."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    ports, off, templates = [], 0, {}
    while off + 16 <= len(data):
        length = struct.unpack_from("!H", data, off + 2)[0]
        if length < 16 or off + length > len(data):
            break
        p = off + 16
        while p + 4 <= off + length:
            sid, slen = struct.unpack_from("!HH", data, p)
            if slen < 4:
                break
            q, end = p + 4, p + slen
            if sid == 2:
                while q + 4 <= end:
                    tid, count = struct.unpack_from("!HH", data, q)
                    q += 4
                    at, where, size = 0, None, 0
                    for _ in range(count):
                        ie, ln = struct.unpack_from("!HH", data, q)
                        q += 4
                        if ie & 0x8000:
                            q += 4
                        elif ie == 7:
                            where = at
                        at += ln
                    templates[tid] = (where, at)
            elif sid >= 256 and sid in templates:
                where, size = templates[sid]
                while size and q + size <= end:
                    if where is not None:
                        ports.append(struct.unpack_from("!H", data, q + where)[0])
                    q += size
            p = end
        off += length
    return ports


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def skip_reason():
    if os.geteuid() != 0:
        return "needs root (network namespaces and packet sockets)"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot use network namespaces: {r.stderr.strip()}"
    return None


def flow_of(frame):
    """(proto, canonical endpoints, source endpoint) of an Ethernet TCP/UDP frame, or None."""
    if len(frame) < 14:
        return None
    etype = struct.unpack_from("!H", frame, 12)[0]
    if etype == 0x0800 and len(frame) >= 34:
        ihl = (frame[14] & 0x0F) * 4
        proto = frame[23]
        src, dst = socket.inet_ntop(socket.AF_INET, frame[26:30]), \
            socket.inet_ntop(socket.AF_INET, frame[30:34])
        l4 = 14 + ihl
    elif etype == 0x86DD and len(frame) >= 54:
        proto = frame[20]
        src, dst = socket.inet_ntop(socket.AF_INET6, frame[22:38]), \
            socket.inet_ntop(socket.AF_INET6, frame[38:54])
        l4 = 54
    else:
        return None
    if proto not in (6, 17) or len(frame) < l4 + 4:
        return None
    sp, dp = struct.unpack_from("!HH", frame, l4)
    a, b = (src, sp), (dst, dp)
    return proto, tuple(sorted((a, b))), a


class Witness:
    """A packet socket on `dev` in `ns` (no fanout) counting the frames of each TCP/UDP flow,
    until the marker datagram."""

    def __init__(self, ns, dev):
        self.sock = in_netns(ns, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                                       socket.htons(0x0003)))
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE
        self.sock.bind((dev, 0))
        self.counts = Counter()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            frame = self.sock.recv(65535)
            f = flow_of(frame)
            if f is None:
                continue
            proto, ends, _ = f
            if proto == 17 and any(p == MARKER_PORT for _, p in ends):
                self.done.set()
                return
            if any(p == PORT for _, p in ends):
                self.counts[(proto, ends)] += 1

    def drops(self):
        # PACKET_STATISTICS (struct tpacket_stats: packets, drops)
        return struct.unpack("II", self.sock.getsockopt(263, 6, 8))[1]


STATS_RE = re.compile(r"^flowmark observe( worker (\d+))?: (\d+) packets, drops (\S+),.*"
                      r" flows (\d+),.* emitted (\d+),", re.M)
KERNEL_RE = re.compile(r"^flowmark observe( worker (\d+))?: kernel: packets (\d+), drops (\d+), "
                       r"queue freezes (\d+)$", re.M)


class LiveWorkers(NetnsProcesses, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reason = skip_reason()
        if reason:
            print(f"observe_live_workers: skipped: {reason}", file=sys.stderr)
            raise unittest.SkipTest(reason)
        if not os.access(FLOWMARK, os.X_OK):
            raise AssertionError(f"{FLOWMARK} is missing or not executable: build first")
        cls.hosts = VethHosts("fmw", ("vethA", A4, A6), ("vethB", B4, B6))
        cls.hosts.create()
        cls.a, cls.b = cls.hosts.a, cls.hosts.b

    @classmethod
    def tearDownClass(cls):
        cls.hosts.destroy()

    def run_traffic(self):
        """The flows (client ports as the kernel and the list give them) crossing vethA, until
        the witness has seen them all: its counts per flow."""
        witness = Witness(self.a, "vethA")
        server = subprocess.Popen(["ip", "netns", "exec", self.b, sys.executable, "-c", SERVER,
                                   str(PORT)], stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(server.stdout.readline().strip(), "ready")
            rc, out, err = self.run_cmd(self.a, [
                sys.executable, "-c", CLIENT, str(PORT), str(UDP_DATAGRAMS), str(MARKER_PORT),
                json.dumps(TCP_FLOWS), json.dumps(UDP_FLOWS)], timeout=120)
            self.assertEqual(rc, 0, f"traffic: {err}")
            self.assertTrue(witness.done.wait(30), "the witness did not see the marker")
        finally:
            server.kill()
            server.wait()
            server.stdout.close()
        self.assertEqual(witness.drops(), 0, "the witness socket dropped frames")
        witness.sock.close()
        return witness.counts

    def observe(self, *extra, sig=signal.SIGINT):
        p = self.spawn(self.a, [FLOWMARK, "observe", "-i", "vethA", "--stats", *extra])
        # The handlers are installed once every socket is in the group with its filter.
        wait_signals_handled(p.pid, timeout=10)
        counts = self.run_traffic()
        p.send_signal(sig)
        rc, out, err = self.finish(p, timeout=30)
        self.assertEqual(rc, 128 + sig, f"stopped by {sig.name}: exit {128 + sig} expected; {err}")
        records = [json.loads(line) for line in out.splitlines() if line]
        return counts, records, err

    def check_flows(self, counts, records, err):
        expected_flows = sum(n for *_, n in TCP_FLOWS) + sum(n for _, _, n, _ in UDP_FLOWS)
        self.assertEqual(len(counts), expected_flows, f"the witness saw {len(counts)} flows")
        mine = Counter()
        by_flow = {}
        for r in records:
            if r["proto"] not in (6, 17) or PORT not in (r["sp"], r["dp"]):
                continue
            key = (r["proto"], tuple(sorted(((r["sip"], r["sp"]), (r["dip"], r["dp"])))))
            mine[key] += 1
            by_flow[key] = r
        twice = [k for k, n in mine.items() if n > 1]
        self.assertEqual(twice, [], f"flows with more than one record (split?); {err}")
        self.assertEqual(set(mine), set(counts), f"flows recorded vs seen; {err}")
        for key, seen in counts.items():
            r = by_flow[key]
            what = f"{key}: {r}"
            self.assertGreater(r["pkt_fwd"], 0, what)
            self.assertGreater(r["pkt_rev"], 0, what)
            self.assertEqual(r["pkt_fwd"] + r["pkt_rev"], seen, f"{what}: witness {seen}")
            if key[0] == 17:
                self.assertEqual((r["dp"], r["pkt_fwd"], r["pkt_rev"]),
                                 (PORT, UDP_DATAGRAMS, UDP_DATAGRAMS), what)

    def check_stats(self, err, workers):
        lines = {m.group(2): m for m in STATS_RE.finditer(err)}
        kernel = {m.group(2): m for m in KERNEL_RE.finditer(err)}
        names = {None} | {str(i) for i in range(workers)}
        self.assertEqual(set(lines), names, err)
        self.assertEqual(set(kernel), names, err)
        for name in names:
            self.assertEqual(lines[name].group(4), "0", f"drops, worker {name}: {err}")
            self.assertEqual(kernel[name].group(4), "0", f"kernel drops, worker {name}: {err}")
        per = [lines[str(i)] for i in range(workers)]
        self.assertTrue(all(int(m.group(5)) > 0 for m in per), f"a worker without flows: {err}")
        for col in (3, 5, 6):
            self.assertEqual(sum(int(m.group(col)) for m in per), int(lines[None].group(col)),
                             err)
        self.assertEqual(sum(int(kernel[str(i)].group(3)) for i in range(workers)),
                         int(kernel[None].group(3)), err)
        # flowmark's own check: every handshake's SYN and SYN-ACK on one socket.
        m = re.search(r"fanout check: (\d+) TCP handshakes seen on the sockets, (\d+) split", err)
        self.assertIsNotNone(m, err)
        self.assertEqual((int(m.group(1)), int(m.group(2))),
                         (sum(n for *_, n in TCP_FLOWS), 0), err)
        self.assertNotIn("warning", err)
        # The frames the sockets took were observed: all but those that came after the
        # stop (the sockets are counted until the statistics are read: an IPv6 neighbour
        # probe may come in between).
        took, observed = int(kernel[None].group(3)), int(lines[None].group(3))
        self.assertLessEqual(observed, took, err)
        self.assertLess(took - observed, 10, err)

    def test_two_workers_every_flow_once(self):
        counts, records, err = self.observe("--workers", "2")
        print(f"  --workers 2: {len(records)} records; {err.strip()}", file=sys.stderr)
        self.check_flows(counts, records, err)
        self.check_stats(err, 2)

    def test_default_workers_are_the_cores(self):
        cores = len(os.sched_getaffinity(0))
        counts, records, err = self.observe(sig=signal.SIGTERM)
        self.check_flows(counts, records, err)
        if cores > 1:
            self.check_stats(err, min(cores, 64))
        else:
            self.assertNotIn("worker", err)

    def records_while_capturing(self, workers, ipfix=None):
        # With a 1 s idle timeout and no expiry delay the short flows end while the capture
        # runs: every worker writes its records then, the idle one too (its clock follows the
        # busy one's), without waiting for the stop or a full buffer; with --ipfix FILE the
        # messages holding them are written too (at least once a second).
        short = 16
        ports = {43000 + 37 * i for i in range(short)}
        # --filter udp: nothing else (an IPv6 neighbour or multicast listener message) moves
        # a worker's clock but the short and the steady flows.
        extra = ["--ipfix", ipfix] if ipfix else []
        p = self.spawn(self.a, [FLOWMARK, "observe", "-i", "vethA", "--workers", str(workers),
                                "--idle-timeout", "1", "--expiry-delay", "0", "--filter", "udp",
                                "--stats", *extra])
        wait_signals_handled(p.pid, timeout=10)
        server = self.spawn(self.b, [sys.executable, "-c", SERVER, str(PORT)])
        wait_stdout(server, lambda text: "ready" in text, timeout=10, what="echo server")
        traffic = self.spawn(self.a, [sys.executable, "-c", SHORT_THEN_STEADY, B4, str(PORT),
                                      str(short)])
        wait_stdout(traffic, lambda text: "short flows done" in text, timeout=30,
                    what="short flows")

        def short_records(text):
            got = set()
            for line in text.splitlines():
                if line.endswith("}"):
                    r = json.loads(line)
                    if r["proto"] == 17 and r["sp"] in ports:
                        got.add(r["sp"])
            return got == ports
        if ipfix:
            wait_until(lambda: set(ipfix_source_ports(ipfix)) >= ports, timeout=30,
                       what="the short flows' IPFIX records, while running")
        else:
            wait_stdout(p, short_records, timeout=30,
                        what="the short flows' records, while running")
        traffic.kill()
        p.send_signal(signal.SIGINT)
        rc, out, err = self.finish(p, timeout=30)
        self.assertEqual(rc, 130, err)
        if ipfix:
            got = Counter(sp for sp in ipfix_source_ports(ipfix) if sp in ports)
        else:
            got = Counter(r["sp"] for r in map(json.loads, out.splitlines())
                          if r["proto"] == 17 and r["sp"] in ports)
        self.assertEqual(got, Counter(ports), f"once each; {err}")

    def test_records_while_capturing(self):
        self.records_while_capturing(2)

    def test_records_while_capturing_one_worker(self):
        self.records_while_capturing(1)

    def test_ipfix_records_while_capturing(self):
        tmp = tempfile.mkdtemp(prefix="flowmark-live-ipfix-")
        try:
            self.records_while_capturing(1, ipfix=os.path.join(tmp, "live.ipfix"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_pcap_back_end_has_one_worker(self):
        rc, _, err = self.run_cmd(self.a, [FLOWMARK, "observe", "-i", "vethA", "--capture",
                                           "pcap", "--workers", "2"])
        self.assertEqual(rc, 2, err)
        self.assertIn("--workers 2 with --capture pcap", err)


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
