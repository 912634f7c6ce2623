#!/usr/bin/env python3
"""The flowlabel backend's rules evaluated in the kernel, flowd-go's strategies and interface
discovery, end to end between two network namespaces.

    python3 tests/integration/test_flowlabel_rules.py BUILD_DIR [unittest options]

Hosts A and B on one bridge (test_flowmarkd.Site); flowmarkd in A; a packet socket on B's
eth0 reads every IPv6 packet that arrives: its flow label, and the chain of extension
headers with the Scitags option (walked, so that inserted headers are seen as on the wire).

- perfSONAR / matchAll: one rule `destination = "::/0"`, no ports: every IPv6 TCP and UDP
  packet from A carries the rule's experiment and activity (one label per flow), IPv4
  passes untouched; the exit counters say "marked_rule", not "marked".
- prefix and port rules: a rule marks only its prefix and its ports; a flow started by the
  named pipe (a per-flow entry) wins over the rule.
- strategy = "hopByHopDestination": a hop-by-hop and a destination-options header, each
  with option 0x1E (experiment, activity), and the flow label left alone (as flowd-go).
- interfaces = "auto": A's eth0 is hooked at start; a veth given a global IPv6 address
  after start is hooked within a second (waited for, timed), released when deleted; after
  SIGTERM no filter and no clsact qdisc of ours is left.
- configuration errors (bad prefix, bad port range, unknown strategy, strategy with
  ext_header, "auto" in a list) name their key (`flowmarkd --check`, no root needed).

Needs root for the namespace tests; skips with the reason when the kernel refuses BPF.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_flowmarkd as fmd  # noqa: E402  (takes BUILD_DIR from sys.argv)
import test_flowmarkd_bpf as fb  # noqa: E402  (its helpers only; its tests are not loaded)
from netns_helpers import Ipv6PacketCapture, _sh, in_netns  # noqa: E402

FLOWMARK, FLOWMARKD = fmd.FLOWMARK, fmd.FLOWMARKD
IFACE = fmd.IFACE
OUR_PRIO = 0xF1
SEMANTIC = 0x3FEFC
OTHER_NET = "fd85:1::"  # a second prefix of B's, on the same link


class WireReader(Ipv6PacketCapture):
    """(proto, sport, dport, label, ext chain [(next header, option bytes)...], dst)."""

    def __init__(self, ns):
        super().__init__(ns, IFACE)

    def parse(self, frame):
        word, _, nxt = struct.unpack("!IHB", frame[14:21])
        dst = socket.inet_ntop(socket.AF_INET6, frame[38:54])
        off, chain = 54, []
        while nxt in (0, 60) and len(frame) >= off + 8:
            hdr_len = (frame[off + 1] + 1) * 8
            chain.append((nxt, bytes(frame[off + 2:off + hdr_len])))
            nxt, off = frame[off], off + hdr_len
        if nxt not in (6, 17) or len(frame) < off + 4:
            return None
        sport, dport = struct.unpack("!HH", frame[off:off + 4])
        return (nxt, sport, dport, word & 0xFFFFF, chain, dst)


def encode(exp, act):
    return fb.encode(exp, act)


SITE = None
READER = None


def setUpNetwork():
    """The two hosts, once, for the namespace tests."""
    global SITE, READER
    if SITE is not None:
        return
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root (network namespaces, BPF)")
    SITE = fmd.Site(names=("A", "B"), v4_prefix="10.85.0.", v6_prefix="fd85::")
    unittest.addModuleCleanup(SITE.destroy)
    SITE.create()
    a, b = SITE.ns["A"], SITE.ns["B"]
    # Unmarked packets then carry label 0, not the kernel's automatic flow hash.
    _sh(["ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv6.auto_flowlabels=0"])
    _sh(["ip", "-n", b, "-6", "addr", "add", f"{OTHER_NET}2/64", "dev", IFACE, "nodad"])
    _sh(["ip", "-n", a, "-6", "route", "add", f"{OTHER_NET}/64", "dev", IFACE])
    fb.SITE = SITE  # fb.tc() and friends work on A
    servers = fb.Servers(b, SITE.v6["B"])
    unittest.addModuleCleanup(servers.close)
    READER = WireReader(b)
    unittest.addModuleCleanup(READER.close)


def tc_json(args):
    r = _sh(SITE.argv("A", ["tc", "-j", *args]), check=False)
    return json.loads(r.stdout or "[]") if r.returncode == 0 else []


def our_filters(dev):
    return [f for f in tc_json(["filter", "show", "dev", dev, "egress"])
            if f.get("pref") == OUR_PRIO and "options" in f]


def clsact(dev):
    return [q for q in tc_json(["qdisc", "show", "dev", dev]) if q.get("kind") == "clsact"]


class RulesTestCase(unittest.TestCase):
    def setUp(self):
        setUpNetwork()
        self.A6, self.B6, self.B4 = SITE.v6["A"], SITE.v6["B"], SITE.v4["B"]
        self.dir = tempfile.mkdtemp(prefix="fmd-rules-test-")
        os.chmod(self.dir, 0o755)
        self.pipe = os.path.join(self.dir, "flowmark.pipe")

    def start(self, backend_toml, pipe=False, ready=r"flowmarkd running"):
        text = ""
        if pipe:
            text += f'[source.pipe]\ntype = "named-pipe"\npath = "{self.pipe}"\n\n'
        text += backend_toml
        path = os.path.join(self.dir, "flowmarkd.toml")
        with open(path, "w") as f:
            f.write(text)
        d = fmd.Proc(SITE.argv("A", [FLOWMARKD, "-c", path]))
        self.addCleanup(d.kill)
        try:
            d.wait_err(ready, timeout=15)
        except AssertionError:
            if any("CAP_BPF" in line for line in d.err):
                self.skipTest("the kernel refuses BPF here: " + d.err[-1])
            raise
        return d

    def stop(self, d):
        d.signal(15)
        rc = d.wait(10)
        d.counters = fmd.parse_counters(d.err) or {}
        self.assertEqual(rc, 0, d.describe())
        return d.counters

    def udp(self, sport, dst, dport=5001, count=10, family=socket.AF_INET6, src=None):
        s = in_netns(SITE.ns["A"], lambda: socket.socket(family, socket.SOCK_DGRAM))
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((src or self.A6, sport))
            for _ in range(count):
                s.sendto(b"u" * 200, (dst, dport))

    def tcp(self, sport, count=5):
        s = in_netns(SITE.ns["A"], lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.A6, sport))
            s.connect((self.B6, 5002))
            for _ in range(count):
                s.sendall(b"t" * 1000)
                time.sleep(0.002)

    def marks(self, packets):
        """{(experiment bits of the label)}: the distinct labels of `packets`."""
        return {p[3] for p in packets}

    def assertMarked(self, packets, exp, act):
        labels = self.marks(packets)
        self.assertEqual(len(labels), 1, f"not one label for the flow: {labels}")
        label = labels.pop()
        self.assertEqual(label & SEMANTIC, encode(exp, act), f"label {label:#x}")
        return label

    def assertUnmarked(self, packets):
        self.assertEqual(self.marks(packets), {0}, packets[:2])

    def counter(self, counters, outcome, backend="m"):
        return counters.get(
            f"flowmark_flowlabel_packets_total{{backend={backend},outcome={outcome}}}", 0)


class TestRules(RulesTestCase):
    def test_perfsonar_match_all_marks_every_ipv6_flow_ipv4_untouched(self):
        d = self.start(f'[backend.m]\ntype = "flowlabel"\ninterfaces = ["{IFACE}"]\n\n'
                       '[[backend.m.rule]]\nexperiment = 2\nactivity = 2\n')
        self.assertTrue(any("perfSONAR" in line for line in d.err), d.describe())
        labels = set()
        for sport in range(42001, 42009):
            self.udp(sport, self.B6)
            labels.add(self.assertMarked(READER.take(sport, 10), 2, 2))
        self.tcp(42010)
        tcp_pk = READER.take(42010, 7)  # SYN, ACK, 5 segments (and the FIN)
        self.assertMarked(tcp_pk, 2, 2)  # the handshake too: no entry needed
        # IPv4 to B: arrives, untouched (counted as not IPv6).
        v4 = in_netns(SITE.ns["B"], lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.addCleanup(v4.close)
        v4.bind((self.B4, 5011))
        v4.settimeout(5)
        self.udp(42011, self.B4, dport=5011, count=3, family=socket.AF_INET, src=SITE.v4["A"])
        for _ in range(3):
            self.assertEqual(v4.recv(1000), b"u" * 200)
        c = self.stop(d)
        print(f"\n  match-all: {len(labels)} distinct labels over 8 UDP flows; counters "
              f"marked_rule {self.counter(c, 'marked_rule')}, marked "
              f"{self.counter(c, 'marked')}, not_ipv6 {self.counter(c, 'not_ipv6')}",
              file=sys.stderr)
        self.assertGreater(len(labels), 1, "the entropy does not spread over flows")
        self.assertGreaterEqual(self.counter(c, "marked_rule"), 8 * 10 + 7)
        self.assertEqual(self.counter(c, "marked"), 0)
        self.assertGreaterEqual(self.counter(c, "not_ipv6"), 3)
        self.assertEqual(our_filters(IFACE), [])
        self.assertEqual(clsact(IFACE), [])

    def test_prefix_and_port_rules_and_a_flow_entry_wins(self):
        other = f"{OTHER_NET}2"
        d = self.start(
            f'[backend.m]\ntype = "flowlabel"\ninterfaces = ["{IFACE}"]\n\n'
            f'[[backend.m.rule]]\ndestination = "{OTHER_NET}/64"\nports = "5001"\n'
            'experiment = 2\nactivity = 1\n\n'
            '[[backend.m.rule]]\ndestination = "fd85::/64"\nports = "5002-5003"\n'
            'experiment = 2\nactivity = 3\n', pipe=True)
        self.udp(42101, other, 5001)
        self.assertMarked(READER.take(42101, 10), 2, 1)  # its prefix, its port
        self.udp(42102, other, 5009)
        self.assertUnmarked(READER.take(42102, 10))  # its prefix, another port
        self.udp(42103, self.B6, 5001)
        self.assertUnmarked(READER.take(42103, 10))  # the other prefix: ports 5002-5003 only
        self.udp(42104, self.B6, 5003)
        self.assertMarked(READER.take(42104, 10), 2, 3)
        self.tcp(42105)
        self.assertMarked(READER.take(42105, 7), 2, 3)
        # A per-flow entry (the named pipe) wins over the rule.
        fmd.write_pipe(self.pipe, f"start udp {self.A6} 42106 {other} 5001 3 3\n")
        deadline = time.monotonic() + 5
        while True:
            self.udp(42106, other, 5001, count=1)
            pk = READER.take(42106, 1)
            if pk[-1][3] & SEMANTIC == encode(3, 3) or time.monotonic() > deadline:
                break
        self.udp(42106, other, 5001)
        self.assertMarked(READER.take(42106, 10), 3, 3)
        c = self.stop(d)
        print(f"\n  prefix/port rules: marked_rule {self.counter(c, 'marked_rule')}, marked "
              f"(flow entry) {self.counter(c, 'marked')}, not_in_map "
              f"{self.counter(c, 'not_in_map')}", file=sys.stderr)
        self.assertGreaterEqual(self.counter(c, "marked"), 10)
        self.assertGreaterEqual(self.counter(c, "marked_rule"), 10 + 10 + 7)
        self.assertGreaterEqual(self.counter(c, "not_in_map"), 20)

    def test_hop_by_hop_destination_puts_both_headers_on_the_wire(self):
        d = self.start(f'[backend.m]\ntype = "flowlabel"\ninterfaces = ["{IFACE}"]\n'
                       'strategy = "hopByHopDestination"\n\n'
                       '[[backend.m.rule]]\nports = "5001"\nexperiment = 2\nactivity = 9\n')
        self.udp(42201, self.B6, 5001, count=5)
        pk = READER.take(42201, 5)
        option = bytes([0x1E, 3, 0, 2, 9, 0])  # type, length, experiment (2 bytes), activity, Pad1
        for p in pk:
            self.assertEqual(p[4], [(0, option), (60, option)], p)
            self.assertEqual(p[3], 0, "flowd-go's hopByHopDestination leaves the label alone")
        self.udp(42202, self.B6, 5009, count=3)  # not the rule's port: no header
        self.assertTrue(all(p[4] == [] for p in READER.take(42202, 3)))
        self.stop(d)


class TestInterfaceDiscovery(RulesTestCase):
    def test_auto_hooks_a_new_interface_within_a_second_and_releases_it(self):
        d = self.start('[backend.m]\ntype = "flowlabel"\ninterfaces = "auto"\n\n'
                       '[[backend.m.rule]]\nexperiment = 2\nactivity = 2\n')
        d.wait_err(rf"hooked {IFACE}\b", timeout=5)
        self.assertEqual(len(our_filters(IFACE)), 1)
        a = SITE.ns["A"]
        _sh(["ip", "-n", a, "link", "add", "fmv0", "type", "veth", "peer", "name", "fmv1"])
        self.addCleanup(_sh, ["ip", "-n", a, "link", "del", "fmv0"], check=False)
        _sh(["ip", "-n", a, "link", "set", "fmv0", "up"])
        t0 = time.monotonic()
        _sh(["ip", "-n", a, "-6", "addr", "add", "fd86::1/64", "dev", "fmv0", "nodad"])
        while not our_filters("fmv0"):
            self.assertLess(time.monotonic() - t0, 5, "fmv0 not hooked: " + d.describe())
            time.sleep(0.01)
        hooked_after = time.monotonic() - t0
        d.wait_err(r"hooked fmv0\b", timeout=2)
        self.assertEqual(len(clsact("fmv0")), 1)
        # fmv1 has no global address: not hooked.
        self.assertEqual(our_filters("fmv1"), [])
        # The address goes away: released (filter and the clsact qdisc we added).
        t0 = time.monotonic()
        _sh(["ip", "-n", a, "-6", "addr", "del", "fd86::1/64", "dev", "fmv0"])
        d.wait_err(r"released fmv0\b", timeout=2)
        released_after = time.monotonic() - t0
        self.assertEqual(our_filters("fmv0"), [])
        self.assertEqual(clsact("fmv0"), [])
        # Back again, then the interface is deleted: released without error.
        n = len(d.err)
        _sh(["ip", "-n", a, "-6", "addr", "add", "fd86::1/64", "dev", "fmv0", "nodad"])
        d.wait_err(r"hooked fmv0\b", timeout=2, start=n)
        n = len(d.err)
        _sh(["ip", "-n", a, "link", "del", "fmv0"])
        d.wait_err(r"released fmv0\b", timeout=2, start=n)
        self.assertFalse(any("releasing fmv0" in line for line in d.err), d.describe())
        c = self.stop(d)
        print(f"\n  auto: hooked {hooked_after * 1000:.0f} ms after the address came, released "
              f"{released_after * 1000:.0f} ms after it went; hooked_total "
              f"{c.get('flowmark_flowlabel_interfaces_hooked_total{backend=m}')}, released_total "
              f"{c.get('flowmark_flowlabel_interfaces_released_total{backend=m}')}",
              file=sys.stderr)
        self.assertLess(hooked_after, 1.0)
        self.assertEqual(c.get("flowmark_flowlabel_interfaces_hooked_total{backend=m}"), 3)
        self.assertEqual(c.get("flowmark_flowlabel_interfaces_released_total{backend=m}"), 2)
        # Nothing left: no filter, no clsact qdisc on eth0 (we created it).
        self.assertEqual(our_filters(IFACE), [])
        self.assertEqual(clsact(IFACE), [])
        out = _sh(SITE.argv("A", [FLOWMARK, "bpf", "status"])).stdout.strip()
        self.assertEqual(out, "no flowmark hooks in this network namespace")


class TestConfigErrors(unittest.TestCase):
    """`flowmarkd --check`: each mistake named by its key."""

    def check(self, body):
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write('[source.p]\ntype = "named-pipe"\npath = "/nonexistent/p"\n\n'
                    '[backend.m]\ntype = "flowlabel"\n' + body)
        self.addCleanup(os.unlink, f.name)
        r = subprocess.run([FLOWMARKD, "--check", "-c", f.name], capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr

    def test_errors_name_the_key(self):
        cases = [
            ('\n[[backend.m.rule]]\ndestination = "2001:db8::/129"\nexperiment = 2\n'
             'activity = 1\n', "[[backend.m.rule]] #1 destination"),
            ('\n[[backend.m.rule]]\ndestination = "10.0.0.0/8"\nexperiment = 2\nactivity = 1\n',
             "[[backend.m.rule]] #1 destination: '10.0.0.0/8' is not an IPv6 prefix"),
            ('\n[[backend.m.rule]]\nexperiment = 2\nactivity = 1\n\n[[backend.m.rule]]\n'
             'ports = "2000-1000"\nexperiment = 2\nactivity = 1\n',
             "[[backend.m.rule]] #2 ports"),
            ('\n[[backend.m.rule]]\nports = "70000"\nexperiment = 2\nactivity = 1\n',
             "[[backend.m.rule]] #1 ports"),
            ('\n[[backend.m.rule]]\nexperiment = 2\n', "[[backend.m.rule]] #1 activity: missing"),
            ('\n[[backend.m.rule]]\nexperiment = 600\nactivity = 1\n',
             "[[backend.m.rule]] #1 experiment"),
            ('\n[[backend.m.rule]]\nexperiment = 2\nactivity = 1\nport = "80"\n',
             "[[backend.m.rule]] #1 unknown key port"),
            ('strategy = "hopbyhop"\n', "[backend.m] strategy: 'hopbyhop' is not one of"),
            ('strategy = "label"\next_header = "hop-by-hop"\n',
             "[backend.m] strategy: give strategy (flowd-go's names) or ext_header, not both"),
            ('interfaces = ["auto", "eth0"]\n', '[backend.m] interfaces: "auto" stands alone'),
        ]
        for body, want in cases:
            with self.subTest(want=want):
                rc, out = self.check(body)
                self.assertNotEqual(rc, 0, out)
                self.assertIn(want, out)

    def test_valid_configurations_pass(self):
        for body in ('interfaces = "auto"\nstrategy = "hopByHopDestination"\n\n'
                     '[[backend.m.rule]]\nexperiment = 2\nactivity = 2\n',
                     'strategy = "destination"\n\n[[backend.m.rule]]\n'
                     'destination = "2001:db8::/32"\nports = ["443", "1000-2000"]\n'
                     'experiment = 2\nactivity = 9\n',
                     'ext_header = "hop-by-hop"\n'):
            with self.subTest(body=body):
                rc, out = self.check(body)
                self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
