#!/usr/bin/env python3
"""The flow-label datapath end to end, between two network namespaces.

    python3 tests/bpf/test_flowlabel_netns.py BUILD_DIR [unittest options]

Hosts A and B are namespaces joined by a veth pair (vethA in A, vethB in B, fd00::1 and
fd00::2). Before flowmark attaches, vethA carries the "site's" set-up: an htb root qdisc
and a clsact qdisc with an egress filter of its own (tests/bpf/site_filter.bpf.c, which
sets the hop limit to 42). bpf_marker_driver (a FlowLabelMarker read from stdin) runs in
A; a packet socket in B reads the flow label, traffic class and hop limit of every IPv6
packet from A, and the labels are checked against flowmark's encoder (`flowmark label`).

Needs root (namespaces, BPF). Python 3 stdlib only; sockets are opened inside the
namespaces with setns(2) from a short-lived thread.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_flowlabel_netns.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")
DRIVER = os.path.join(BUILD_DIR, "tests", "bpf_marker_driver")
SITE_FILTER = os.path.join(BUILD_DIR, "tests", "bpf", "site_filter.bpf.o")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from netns_helpers import (  # noqa: E402
    Ipv6PacketCapture, _delete_namespace, _live_namespaces, _sh, in_netns)

A_ADDR, B_ADDR = "fd00::1", "fd00::2"
SITE_PRIO = 1000
OUR_PRIO = 0xF1


def encode(exp, act, entropy):
    out = subprocess.run([FLOWMARK, "label", "encode", str(exp), str(act), "--entropy",
                          str(entropy), "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["label"]


class Capture(Ipv6PacketCapture):
    """Every IPv6 TCP/UDP packet arriving on vethB: (proto, sport, dport, label, tclass,
    hop limit, (ext header kind, its first 6 option bytes) or None)."""

    def parse(self, frame):
        ip = frame[14:]
        word, _, nxt, hop = struct.unpack("!IHBB", ip[:8])
        off, ext = 40, None
        if nxt in (0, 60) and len(ip) >= off + 8:  # one hop-by-hop / destination options
            ext = (nxt, bytes(ip[off + 2:off + 8]))
            nxt, off = ip[off], off + (ip[off + 1] + 1) * 8
        if nxt not in (6, 17) or len(ip) < off + 4:
            return None
        sport, dport = struct.unpack("!HH", ip[off:off + 4])
        return (nxt, sport, dport, word & 0xFFFFF, (word >> 20) & 0xFF, hop, ext)


class Driver:
    def __init__(self, ns, *ifaces):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, DRIVER, *ifaces],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("ready"):
            self.proc.kill()
            self.proc.wait()
            if "no CAP_BPF" in line:  # a container without BPF: nothing to test here
                raise unittest.SkipTest(f"marker_driver: {line}")
            raise RuntimeError(f"marker_driver: {line}")
        self.prog_id = int(line.split()[1])

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        if not reply.startswith("ok"):
            raise RuntimeError(f"marker_driver: {line!r}: {reply}")
        return reply.split()[1:]

    def quit(self):
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=10)
        self._close()

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._close()

    def _close(self):
        self.proc.stdin.close()
        self.proc.stdout.close()


class FlowLabelNetns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root: network namespaces and BPF")
        for path in (FLOWMARK, DRIVER, SITE_FILTER):
            if not os.path.exists(path):
                raise unittest.SkipTest(f"{path} is not built")
        tag = f"{os.getpid()}"
        cls.a, cls.b = f"fmbpfA{tag}", f"fmbpfB{tag}"
        for ns in (cls.a, cls.b):
            _sh(["ip", "netns", "add", ns])
            _live_namespaces.add(ns)
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        _sh(["ip", "-n", cls.a, "link", "add", "vethA", "type", "veth", "peer", "name", "vethB",
             "netns", cls.b])
        for ns, dev, addr in ((cls.a, "vethA", A_ADDR), (cls.b, "vethB", B_ADDR)):
            _sh(["ip", "-n", ns, "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad"])
            _sh(["ip", "-n", ns, "link", "set", dev, "up"])
        # Unmarked packets then carry label 0, not the kernel's automatic flow hash.
        _sh(["ip", "netns", "exec", cls.a, "sysctl", "-qw", "net.ipv6.auto_flowlabels=0"])
        # The site's set-up that flowmark must keep.
        cls.tc(["qdisc", "add", "dev", "vethA", "root", "handle", "1:", "htb", "default", "10"])
        cls.tc(["class", "add", "dev", "vethA", "parent", "1:", "classid", "1:10", "htb",
                "rate", "10gbit"])
        cls.tc(["qdisc", "add", "dev", "vethA", "clsact"])
        cls.tc(["filter", "add", "dev", "vethA", "egress", "prio", str(SITE_PRIO), "bpf", "da",
                "obj", SITE_FILTER, "sec", "tc"])
        cls.site_before = cls.site_setup()
        cls.capture = Capture(cls.b, "vethB")
        cls.tcp_server = in_netns(cls.b, lambda: socket.socket(socket.AF_INET6,
                                                               socket.SOCK_STREAM))
        cls.tcp_server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        cls.tcp_server.bind((B_ADDR, 5002))
        cls.tcp_server.listen(16)
        threading.Thread(target=cls._serve, daemon=True).start()
        cls.udp_server = in_netns(cls.b, lambda: socket.socket(socket.AF_INET6,
                                                               socket.SOCK_DGRAM))
        cls.udp_server.bind((B_ADDR, 5001))
        cls.udp_received = {}
        threading.Thread(target=cls._serve_udp, daemon=True).start()
        cls.next_port = 6000

    @classmethod
    def tearDownClass(cls):
        cls.capture.close()
        cls.tcp_server.close()
        cls.udp_server.close()
        for ns in (cls.a, cls.b):
            _delete_namespace(ns)

    @classmethod
    def _serve(cls):
        while True:
            try:
                conn, _ = cls.tcp_server.accept()
            except OSError:
                return

            def drain(c=conn):
                with c:
                    total = 0
                    while True:
                        data = c.recv(65536)
                        if not data:
                            break
                        total += len(data)
                    try:
                        c.sendall(str(total).encode())  # the client may be gone: fine
                    except OSError:
                        pass

            threading.Thread(target=drain, daemon=True).start()

    @classmethod
    def _serve_udp(cls):
        while True:
            try:
                _, peer = cls.udp_server.recvfrom(65536)
            except OSError:
                return
            cls.udp_received[peer[1]] = cls.udp_received.get(peer[1], 0) + 1

    @classmethod
    def tc(cls, args, check=True):
        return _sh(["ip", "netns", "exec", cls.a, "tc", *args], check=check)

    @classmethod
    def site_setup(cls):
        """The qdiscs and the filters that are not ours, on vethA, as text."""
        qd = json.loads(cls.tc(["-j", "qdisc", "show", "dev", "vethA"]).stdout)
        qdiscs = sorted(f"{q['kind']} {q.get('handle', '')} {q.get('parent', 'root')}" for q in qd)
        filters = json.loads(cls.tc(["-j", "filter", "show", "dev", "vethA", "egress"]).stdout)
        site = sorted(json.dumps(f, sort_keys=True) for f in filters if f.get("pref") != OUR_PRIO)
        return qdiscs, site

    def our_filters(self, dev="vethA"):
        filters = json.loads(self.tc(["-j", "filter", "show", "dev", dev, "egress"],
                                     check=False).stdout or "[]")
        # tc lists each priority once on its own, then each filter in it (with options).
        return [f for f in filters if f.get("pref") == OUR_PRIO and "options" in f]

    def port(self):
        type(self).next_port += 1
        return type(self).next_port

    def send_udp(self, sport, count=20, tclass=0xB9):
        s = in_netns(self.a, lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
        with s:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tclass)
            s.bind((A_ADDR, sport))
            for i in range(count):
                s.sendto(b"x" * 100, (B_ADDR, 5001))

    def tcp_connect(self, sport, tclass=0x28):
        s = in_netns(self.a, lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tclass)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((A_ADDR, sport))
        s.connect((B_ADDR, 5002))
        return s

    def tcp_send(self, s, count=10):
        for _ in range(count):
            s.sendall(b"y" * 1000)
            time.sleep(0.002)

    def flowmark(self, *args):
        return _sh(["ip", "netns", "exec", self.a, FLOWMARK, *args])

    def assert_site_intact(self):
        self.assertEqual(self.site_setup(), self.site_before)

    def test_1_mark_unmark_detach(self):
        d = Driver(self.a, "vethA", "lo")
        try:
            self.assertEqual(len(self.our_filters()), 1)
            status = json.loads(self.flowmark("bpf", "status", "--json").stdout)
            ifaces = {h["interface"]: h for h in status["hooks"]}
            self.assertEqual(set(ifaces), {"vethA", "lo"})
            self.assertEqual(ifaces["vethA"]["prog_id"], d.prog_id)
            self.assertIsNotNone(ifaces["vethA"]["owner_pid"])

            udp, tcp, other = self.port(), self.port(), self.port()
            udp_label = int(d.ask(f"set udp {A_ADDR} {udp} {B_ADDR} 5001 2 9 13")[0])
            tcp_label = int(d.ask(f"set tcp {A_ADDR} {tcp} {B_ADDR} 5002 5 14 21")[0])
            self.assertEqual(udp_label, encode(2, 9, 13))
            self.assertEqual(tcp_label, encode(5, 14, 21))

            self.send_udp(udp)
            self.send_udp(other)
            conn = self.tcp_connect(tcp)
            self.tcp_send(conn)

            pk = self.capture.take(udp, 20)
            self.assertEqual(len(pk), 20)
            for proto, _, _, label, tclass, hop, ext in pk:
                self.assertEqual(label, udp_label)
                self.assertEqual(label & 0x3FEFC, encode(2, 9, 0))
                self.assertEqual(tclass, 0xB9)  # DSCP and ECN kept
                self.assertEqual(hop, 42)       # the site's filter ran after ours
            pk = self.capture.take(tcp, 11)
            self.assertGreaterEqual(len(pk), 11)  # SYN, data
            for proto, _, _, label, tclass, hop, ext in pk:
                self.assertEqual(proto, 6)
                self.assertEqual(label, tcp_label)
                self.assertEqual(label & 0x3FEFC, encode(5, 14, 0))
                self.assertEqual(tclass >> 2, 0x28 >> 2)  # DSCP kept (ECN is TCP's)
                self.assertEqual(hop, 42)
            pk = self.capture.take(other, 20)
            self.assertEqual(len(pk), 20)
            self.assertTrue(all(p[3] == 0 and p[5] == 42 for p in pk), pk[:3])

            # The end of the flows: their packets are no longer marked, at once.
            self.assertEqual(d.ask(f"erase tcp {A_ADDR} {tcp} {B_ADDR} 5002"), ["1"])
            self.assertEqual(d.ask(f"erase udp {A_ADDR} {udp} {B_ADDR} 5001"), ["1"])
            self.tcp_send(conn)
            conn.close()
            self.send_udp(udp)
            for port in (tcp, udp):
                pk = self.capture.take(port)
                self.assertGreater(len(pk), 0)
                self.assertTrue(all(p[3] == 0 for p in pk), pk[:3])

            marked, not_in_map = (int(x) for x in d.ask("counters")[:2])
            self.assertGreaterEqual(marked, 31)
            self.assertGreaterEqual(not_in_map, 40)

            # Detach: our filter gone, the site's qdiscs and filter intact.
            d.ask("detach vethA")
            self.assertEqual(self.our_filters(), [])
            self.assert_site_intact()
            self.send_udp(udp)
            self.assertTrue(all(p[3] == 0 and p[5] == 42 for p in self.capture.take(udp)))
        finally:
            d.quit()
        # lo had no clsact: the one we created is gone too.
        self.assertNotIn("clsact", self.tc(["qdisc", "show", "dev", "lo"]).stdout)
        self.assertEqual(self.flowmark("bpf", "status").stdout.strip(),
                         "no flowmark hooks in this network namespace")

    def test_2_crash_then_clean(self):
        d = Driver(self.a, "vethA")
        udp = self.port()
        label = int(d.ask(f"set udp {A_ADDR} {udp} {B_ADDR} 5001 3 3 0")[0])
        # A second process cannot take over a live process's hook.
        r = _sh(["ip", "netns", "exec", self.a, DRIVER, "vethA"], check=False)
        self.assertIn("running process", r.stdout)
        d.kill9()
        # The filter outlives the process, and still marks: the defect `clean` repairs.
        self.assertEqual(len(self.our_filters()), 1)
        self.send_udp(udp)
        self.assertTrue(all(p[3] == label for p in self.capture.take(udp)))
        status = self.flowmark("bpf", "status").stdout
        self.assertIn("vethA", status)
        self.assertIn("leftover", status)
        out = self.flowmark("bpf", "clean").stdout
        self.assertIn("removed the flowmark filter from vethA", out)
        self.assertEqual(self.our_filters(), [])
        self.assert_site_intact()
        self.send_udp(udp)
        self.assertTrue(all(p[3] == 0 and p[5] == 42 for p in self.capture.take(udp)))
        self.assertIn("nothing to clean", self.flowmark("bpf", "clean").stdout)

    def test_4_extension_header_option(self):
        d = Driver(self.a, "vethA")
        try:
            udp, tcp = self.port(), self.port()
            udp_label = int(d.ask(f"set udp {A_ADDR} {udp} {B_ADDR} 5001 2 9 1 hbh")[0])
            tcp_label = int(d.ask(f"set tcp {A_ADDR} {tcp} {B_ADDR} 5002 300 26 2 dst")[0])
            self.send_udp(udp)
            conn = self.tcp_connect(tcp)
            self.tcp_send(conn)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(5)
            # B's stack took every byte through the new header: it answers the count.
            self.assertEqual(conn.recv(100), b"10000")
            conn.close()
            pk = self.capture.take(udp, 20)
            for p in pk:
                self.assertEqual(p[3], udp_label)
                self.assertEqual(p[4], 0xB9)
                self.assertEqual(p[6], (0, bytes([0x1E, 3, 0, 2, 9, 0])))
            for p in self.capture.take(tcp, 11):
                self.assertEqual(p[3], tcp_label)
                self.assertEqual(p[6], (60, bytes([0x1E, 3, 300 >> 8, 300 & 0xFF, 26, 0])))
            # B's UDP socket got every datagram: the hop-by-hop header is accepted.
            self.assertEqual(self.udp_received.get(udp), 20)
            counters = [int(x) for x in d.ask("counters")]
            self.assertGreaterEqual(counters[5], 31)  # ext_added
            self.assertEqual(counters[6], 0)          # none too big for the MTU
        finally:
            d.quit()

    def test_3_restart_replaces_leftover(self):
        d = Driver(self.a, "vethA")
        old = d.prog_id
        d.kill9()
        d2 = Driver(self.a, "vethA")  # recovers the slot without `clean`
        try:
            self.assertNotEqual(d2.prog_id, old)
            ours = self.our_filters()
            self.assertEqual(len(ours), 1)
        finally:
            d2.quit()
        self.assertEqual(self.our_filters(), [])
        self.assert_site_intact()


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
