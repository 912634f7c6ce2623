#!/usr/bin/env python3
"""flowmarkd's eBPF parts end to end, between two network namespaces.

    python3 tests/integration/test_flowmarkd_bpf.py BUILD_DIR [unittest options]

Hosts A and B (namespaces on one bridge, helpers of test_flowmarkd.py). Before flowmarkd
starts, A's eth0 carries the "site's" set-up that must survive it: an htb root qdisc and a
clsact qdisc with an egress filter of its own (tests/bpf/site_filter.bpf.c: hop limit 42).

- flowlabel backend: flowmarkd in A (named-pipe source, flowlabel backend on eth0). TCP and
  UDP flows from A to B over IPv6; a packet socket in B reads the flow label of every
  packet: its semantic bits (mask 0x3FEFC) are `flowmark label encode EXP ACT --entropy 0`
  of the flow, its entropy bits stay fixed for the flow; after the end line the packets
  carry label 0; after SIGTERM no hook of ours is left and the site's set-up is intact;
  the kernel's counters are in the service's exit counters.
- flowd's config (BACKEND = "ebpf", NETWORK_INTERFACE) runs the same backend: a firefly
  received by flowd's firefly plugin marks the flow; so does flowd-go's conf.yaml (namedPipe
  plugin, marker backend with targetInterfaces): a pipe line marks the flow.
- kernel-events source: a TCP connection opened in A → start firefly at a collector in B,
  closed → end firefly; the connect() → firefly delay is printed.
- kernel-events source driving the flowlabel backend (handshake marking): a connection from
  A to B carries the label from its SYN on (the kernel put the flow in the map before the
  SYN left), one label for the whole flow; a refused connection's SYN is labelled and its
  map entry is gone once connect() fails; a connection from B to A (passive side): the
  SYN-ACK carries the label (the handshake map), and the data the same; 10,000 SYNs from B
  to a listener of A overrun the handshake map but leave an established flow's entry (and
  its label) alone, and a real connection's SYN-ACK after the flood is marked.

Needs root (namespaces, BPF); skips with the reason when the kernel refuses BPF.
"""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# test_flowmarkd takes BUILD_DIR from sys.argv when imported.
import test_flowmarkd as fmd  # noqa: E402
from netns_helpers import Ipv6PacketCapture, _sh, in_netns  # noqa: E402

FLOWMARK, FLOWMARKD, BUILD_DIR = fmd.FLOWMARK, fmd.FLOWMARKD, fmd.BUILD_DIR
SITE_FILTER = os.path.join(BUILD_DIR, "tests", "bpf", "site_filter.bpf.o")
IFACE = fmd.IFACE
SITE_PRIO = 1000
OUR_PRIO = 0xF1
SEMANTIC = 0x3FEFC
NSENTER = shutil.which("nsenter") or "nsenter"


def encode(exp, act, entropy=0):
    r = subprocess.run([FLOWMARK, "label", "encode", str(exp), str(act), "--entropy",
                        str(entropy), "--json"], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)["label"]


class LabelReader(Ipv6PacketCapture):
    """A packet socket on B's eth0: (proto, sport, dport, flow label, hop limit, TCP flags)
    of every IPv6 TCP/UDP packet that arrives, by source port."""

    def __init__(self, ns):
        super().__init__(ns, IFACE)

    def parse(self, frame):
        word, _, nxt, hop = struct.unpack("!IHBB", frame[14:22])
        if nxt not in (6, 17):
            return None
        sport, dport = struct.unpack("!HH", frame[54:58])
        flags = frame[54 + 13] if nxt == 6 and len(frame) > 54 + 13 else 0
        return (nxt, sport, dport, word & 0xFFFFF, hop, flags)


class Servers:
    """In B: a TCP server (port 5002, reads until EOF) and a UDP sink (port 5001)."""

    def __init__(self, ns, addr):
        self.tcp = in_netns(ns, lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((addr, 5002))
        self.tcp.listen(64)
        self.udp = in_netns(ns, lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
        self.udp.bind((addr, 5001))
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._drain_udp, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(c,), daemon=True).start()

    @staticmethod
    def _drain(c):
        with c:
            try:
                while c.recv(65536):
                    pass
            except OSError:
                pass

    def _drain_udp(self):
        while True:
            try:
                self.udp.recvfrom(65536)
            except OSError:
                return

    def close(self):
        self.tcp.close()
        self.udp.close()


SITE = None
SERVERS = None
READER = None


def setUpModule():
    global SITE, SERVERS, READER
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root (network namespaces, BPF)")
    for path in (FLOWMARK, FLOWMARKD, SITE_FILTER):
        if not os.path.exists(path):
            raise RuntimeError(f"{path} is missing: build flowmark, flowmarkd, bpf_site_filter")
    SITE = fmd.Site(names=("A", "B"), v4_prefix="10.81.0.", v6_prefix="fd81::")
    unittest.addModuleCleanup(SITE.destroy)
    SITE.create()
    a = SITE.ns["A"]
    # Unmarked packets then carry label 0, not the kernel's automatic flow hash.
    _sh(["ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv6.auto_flowlabels=0"])
    tc(["qdisc", "add", "dev", IFACE, "root", "handle", "1:", "htb", "default", "10"])
    tc(["class", "add", "dev", IFACE, "parent", "1:", "classid", "1:10", "htb", "rate",
        "10gbit"])
    tc(["qdisc", "add", "dev", IFACE, "clsact"])
    tc(["filter", "add", "dev", IFACE, "egress", "prio", str(SITE_PRIO), "bpf", "da", "obj",
        SITE_FILTER, "sec", "tc"])
    SERVERS = Servers(SITE.ns["B"], SITE.v6["B"])
    unittest.addModuleCleanup(SERVERS.close)
    READER = LabelReader(SITE.ns["B"])
    unittest.addModuleCleanup(READER.close)


def tc(args, check=True):
    return _sh(["ip", "netns", "exec", SITE.ns["A"], "tc", *args], check=check)


def site_setup():
    """A's qdiscs and the egress filters that are not ours."""
    qd = json.loads(tc(["-j", "qdisc", "show", "dev", IFACE]).stdout)
    qdiscs = sorted(f"{q['kind']} {q.get('handle', '')} {q.get('parent', 'root')}" for q in qd)
    filters = json.loads(tc(["-j", "filter", "show", "dev", IFACE, "egress"]).stdout)
    return qdiscs, sorted(json.dumps(f, sort_keys=True) for f in filters
                          if f.get("pref") != OUR_PRIO)


def our_filters():
    filters = json.loads(tc(["-j", "filter", "show", "dev", IFACE, "egress"],
                            check=False).stdout or "[]")
    return [f for f in filters if f.get("pref") == OUR_PRIO and "options" in f]


class BpfServiceTestCase(fmd.ServiceTestCase):
    def setUp(self):
        self.t0 = time.monotonic()
        self.site = SITE
        self.A4, self.B4 = SITE.v4["A"], SITE.v4["B"]
        self.A6, self.B6 = SITE.v6["A"], SITE.v6["B"]
        import shutil
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="fmd-bpf-test-")
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.pipe = os.path.join(self.dir, "flowmark.pipe")
        self.site_before = site_setup()

    def start_daemon(self, doc_or_argv, nsenter=False):
        """flowmarkd in A; skips the test when the kernel refuses BPF here. nsenter: enter
        A's network namespace only, keeping the mount namespace — `ip netns exec` remounts
        /sys without the cgroup file systems, where the connect hook is attached."""
        if isinstance(doc_or_argv, dict):
            path = os.path.join(self.dir, "flowmarkd.toml")
            with open(path, "w") as f:
                f.write(fmd.toml(doc_or_argv))
            argv = ["-c", path]
        else:
            argv = doc_or_argv
        cmd = ([NSENTER, f"--net=/run/netns/{SITE.ns['A']}", FLOWMARKD, *argv] if nsenter
               else SITE.argv("A", [FLOWMARKD, *argv]))
        d = fmd.Proc(cmd)
        self.addCleanup(d.kill)
        try:
            d.wait_err(r"flowmarkd running", timeout=15)
        except AssertionError:
            if any("CAP_BPF" in l for l in d.err):
                self.skipTest("the kernel refuses BPF here: " + d.err[-1])
            raise
        d.counters = None
        return d

    def stop_daemon(self, d):
        d.signal(15)
        rc = d.wait(10)
        d.counters = fmd.parse_counters(d.err) or {}
        return rc

    def hook_status(self):
        out = _sh(SITE.argv("A", [FLOWMARK, "bpf", "status", "--json"])).stdout
        hooks = json.loads(out)["hooks"]
        return hooks[0] if hooks else {}

    def fill(self):
        return self.hook_status().get("flows")

    def wait_fill(self, n, timeout=5):
        deadline = time.monotonic() + timeout
        while self.fill() != n:
            if time.monotonic() > deadline:
                raise AssertionError(f"map fill {self.fill()}, expected {n}")
            time.sleep(0.05)

    def send_udp(self, sport, count=20):
        s = in_netns(SITE.ns["A"], lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.A6, sport))
            for _ in range(count):
                s.sendto(b"u" * 200, (self.B6, 5001))

    def tcp_connect(self, sport):
        s = in_netns(SITE.ns["A"], lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((self.A6, sport))
        s.connect((self.B6, 5002))
        return s

    @staticmethod
    def tcp_send(s, count=10):
        for _ in range(count):
            s.sendall(b"t" * 1000)
            time.sleep(0.002)

    def assertMarked(self, packets, exp, act):
        """Every packet carries exp/act in its semantic bits, and one entropy for the flow."""
        want = encode(exp, act)
        labels = {p[3] for p in packets}
        self.assertEqual(len(labels), 1, f"the label changed within the flow: {labels}")
        label = labels.pop()
        self.assertEqual(label & SEMANTIC, want, f"label {label:#x}, want {want:#x} & mask")
        self.assertTrue(all(p[4] == 42 for p in packets), "the site's filter did not run")
        return label

    def assertNoHookLeft(self):
        self.assertEqual(our_filters(), [])
        out = _sh(SITE.argv("A", [FLOWMARK, "bpf", "status"])).stdout.strip()
        self.assertEqual(out, "no flowmark hooks in this network namespace")
        self.assertEqual(site_setup(), self.site_before)


class TestFlowLabelBackend(BpfServiceTestCase):
    def test_pipe_start_marks_tcp_and_udp_end_unmarks_exit_cleans(self):
        A6, B6 = self.A6, self.B6
        d = self.start_daemon({
            "source": {"pipe": {"type": "named-pipe", "path": self.pipe}},
            "backend": {"label": {"type": "flowlabel", "interfaces": [IFACE]}}})
        self.assertEqual(len(our_filters()), 1)
        self.assertEqual(site_setup(), self.site_before)  # added beside the site's, not over
        tcp, udp, other = 41001, 41002, 41003
        fmd.write_pipe(self.pipe, f"start tcp {A6} {tcp} {B6} 5002 5 14\n"
                                  f"start udp {A6} {udp} {B6} 5001 2 9\n")
        self.wait_fill(2)
        conn = self.tcp_connect(tcp)
        self.tcp_send(conn)
        self.send_udp(udp)
        self.send_udp(other)
        tcp_pk = READER.take(tcp, 11)  # SYN, the handshake's ACK, 10 segments of data
        udp_pk = READER.take(udp, 20)
        tcp_label = self.assertMarked(tcp_pk, 5, 14)
        udp_label = self.assertMarked(udp_pk, 2, 9)
        self.assertEqual({p[0] for p in tcp_pk}, {6})
        self.assertEqual(len(udp_pk), 20)
        self.assertTrue(all(p[3] == 0 for p in READER.take(other, 20)), "unlisted flow marked")
        # More of the same flows: the same label (entropy drawn once per flow).
        self.tcp_send(conn, 3)
        self.send_udp(udp, 5)
        self.assertEqual({p[3] for p in READER.take(tcp, 3)}, {tcp_label})
        self.assertEqual({p[3] for p in READER.take(udp, 5)}, {udp_label})
        print(f"\n  labels: tcp {tcp_label:#07x} (5, 14), udp {udp_label:#07x} (2, 9)",
              file=sys.stderr)

        # The end lines: the packets that follow are no longer marked.
        fmd.write_pipe(self.pipe, f"end tcp {A6} {tcp} {B6} 5002 5 14\n"
                                  f"end udp {A6} {udp} {B6} 5001 2 9\n")
        self.wait_fill(0)
        self.tcp_send(conn, 3)
        conn.close()
        self.send_udp(udp, 5)
        for port, n in ((tcp, 3), (udp, 5)):
            pk = READER.take(port, n)
            self.assertTrue(all(p[3] == 0 for p in pk), pk[:3])

        self.assertEqual(self.stop_daemon(d), 0, d.describe())
        self.assertNoHookLeft()
        c = lambda outcome: d.counters.get(
            f"flowmark_flowlabel_packets_total{{backend=label,outcome={outcome}}}", 0)
        print(f"  exit counters: marked {c('marked')}, not_in_map {c('not_in_map')}, "
              f"not_ipv6 {c('not_ipv6')}", file=sys.stderr)
        self.assertGreaterEqual(c("marked"), 11 + 20 + 3 + 5)
        self.assertGreaterEqual(c("not_in_map"), 20 + 3 + 5)
        self.assertEqual(d.counters.get("flowmark_flowlabel_flows_inserted_total{backend=label}"),
                         2)
        self.assertEqual(d.counters.get("flowmark_flowlabel_flows_erased_total{backend=label}"),
                         2)

    def test_flowd_config_with_the_ebpf_backend(self):
        A6, B6 = self.A6, self.B6
        cfg = os.path.join(self.dir, "flowd.cfg")
        with open(cfg, "w") as f:
            f.write("# flowd as a firefly relay marking flow labels\n"
                    "PLUGIN = 'firefly'\n"
                    "FIREFLY_LISTENER_HOST = '::'\n"
                    "FIREFLY_LISTENER_PORT = '10515'\n"
                    "BACKEND = 'ebpf'\n"
                    f"NETWORK_INTERFACE = '{IFACE}'\n")
        d = self.start_daemon(["-c", cfg])
        self.assertEqual(len(our_filters()), 1)
        udp = 41011
        # B announces the flow A → B to A's relay, as a site's collector would.
        _sh(SITE.argv("B", [FLOWMARK, "firefly", "send", "--to", f"[{A6}]:10515", "start",
                            "udp", A6, str(udp), B6, "5001", "3", "3"]))
        self.wait_fill(1)
        self.send_udp(udp)
        self.assertMarked(READER.take(udp, 20), 3, 3)
        _sh(SITE.argv("B", [FLOWMARK, "firefly", "send", "--to", f"[{A6}]:10515", "end",
                            "udp", A6, str(udp), B6, "5001", "3", "3"]))
        self.wait_fill(0)
        self.send_udp(udp, 5)
        self.assertTrue(all(p[3] == 0 for p in READER.take(udp, 5)))
        self.assertEqual(self.stop_daemon(d), 0, d.describe())
        self.assertNoHookLeft()
        self.assertGreaterEqual(d.counters.get(
            "flowmark_flowlabel_packets_total{backend=ebpf,outcome=marked}", 0), 20, d.counters)

    def test_flowd_go_conf_yaml_with_the_marker_backend(self):
        """flowd-go's conf.yaml (namedPipe plugin, marker backend) runs the same backend."""
        A6, B6 = self.A6, self.B6
        pipe = os.path.join(self.dir, "np")
        cfg = os.path.join(self.dir, "conf.yaml")
        with open(cfg, "w") as f:
            f.write("# flowd-go marking what a storage system announces on its named pipe\n"
                    "plugins:\n"
                    f"  namedPipe: {{pipePath: \"{pipe}\"}}\n"
                    "backends:\n"
                    "  marker:\n"
                    f"    targetInterfaces: [\"{IFACE}\"]\n"
                    "    markingStrategy: label\n"
                    "    removeQdisc: true\n")
        d = self.start_daemon(["-c", cfg])
        self.assertEqual(len(our_filters()), 1)
        udp = 41021
        fmd.write_pipe(pipe, f"start udp {A6} {udp} {B6} 5001 5 14\n")
        self.wait_fill(1)
        self.send_udp(udp)
        self.assertMarked(READER.take(udp, 20), 5, 14)
        fmd.write_pipe(pipe, f"end udp {A6} {udp} {B6} 5001 5 14\n")
        self.wait_fill(0)
        self.send_udp(udp, 5)
        self.assertTrue(all(p[3] == 0 for p in READER.take(udp, 5)))
        self.assertEqual(self.stop_daemon(d), 0, d.describe())
        self.assertNoHookLeft()
        self.assertGreaterEqual(d.counters.get(
            "flowmark_flowlabel_packets_total{backend=marker,outcome=marked}", 0), 20, d.counters)


class TestKernelEvents(BpfServiceTestCase):
    def test_connection_opened_and_closed_gives_start_and_end_fireflies(self):
        A4, B4, A6, B6 = self.A4, self.B4, self.A6, self.B6
        coll = self.collector("B", 10514)
        d = self.start_daemon({
            "source": {"kernel": {"type": "kernel-events", "ports": ["5002"],
                                  "skip_private": False, "experiment": 2, "activity": 9}},
            "backend": {"ff": {"type": "firefly", "to_destination": False,
                               "collectors": [f"[{B6}]:10514"]}}})
        delays = []
        flows = []
        for family, src, dst in ((socket.AF_INET6, A6, B6), (socket.AF_INET, A4, B4)):
            if family == socket.AF_INET:  # the IPv4 listener of B
                srv = in_netns(SITE.ns["B"], lambda: socket.socket(socket.AF_INET,
                                                                   socket.SOCK_STREAM))
                srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                srv.bind((B4, 5002))
                srv.listen(4)
                self.addCleanup(srv.close)
            n = len(coll.fireflies())
            s = in_netns(SITE.ns["A"], lambda f=family: socket.socket(f, socket.SOCK_STREAM))
            t0 = time.monotonic()
            s.connect((dst, 5002))
            # Polled every 0.2 ms: the collector's line arrives through its stdout pipe.
            deadline = t0 + 5
            while len(coll.fireflies()) <= n and time.monotonic() < deadline:
                time.sleep(0.0002)
            delays.append((time.monotonic() - t0) * 1000)
            sport = s.getsockname()[1]
            got = coll.wait_count(n + 1)[n]
            self.assertFirefly(got, state="start", src=src, sport=sport, dst=dst, dport=5002,
                               exp=2, act=9)
            start_time = got["firefly"]["flow-lifecycle"]["start-time"]
            s.sendall(b"k" * 3000)
            time.sleep(0.05)
            s.close()
            got = coll.wait_count(n + 2)[n + 1]
            self.assertFirefly(got, state="end", src=src, sport=sport, dst=dst, dport=5002,
                               exp=2, act=9, start=start_time)
            flows.append(sport)
        print(f"\n  connect() -> start firefly at the collector in B: "
              f"{', '.join(f'{x:.2f} ms' for x in delays)} (IPv6, IPv4)", file=sys.stderr)
        # Only the connections to port 5002 (and one start, one end each): B's accepted side
        # is in another namespace and A's other traffic (the fireflies) is not on the port.
        self.assertEqual(len(coll.fireflies()), 4)
        self.assertEqual(self.stop_daemon(d), 0, d.describe())
        self.assertEqual(d.counters.get("flowmark_kernel_events_total{source=kernel,state=start}"),
                         2, d.counters)
        self.assertEqual(d.counters.get("flowmark_kernel_events_total{source=kernel,state=end}"),
                         2, d.counters)
        for x in delays:
            self.assertLess(x, 200, "the start firefly came late: polling?")

    def test_kernel_events_drive_the_flowlabel_backend(self):
        """No pipe, no firefly: connections are marked from their SYN on (the kernel puts
        them in the map before the SYN leaves); the label does not change when the start
        event reaches the backend."""
        d = self.start_daemon({
            "source": {"kernel": {"type": "kernel-events", "ports": ["5002"],
                                  "skip_private": False, "experiment": 4, "activity": 3}},
            "backend": {"label": {"type": "flowlabel", "interfaces": [IFACE]}}}, nsenter=True)
        self.assertTrue(d.wait_err(r"marked by backend label from their SYN", timeout=5))
        tcp = 41021
        conn = self.tcp_connect(tcp)
        self.wait_fill(1)
        self.tcp_send(conn)
        pk = READER.take(tcp, 12)
        self.assertEqual(pk[0][5] & 0x12, 0x02, f"the first packet is not the SYN: {pk[0]}")
        self.assertNotEqual(pk[0][3], 0, "the SYN left unmarked")
        self.assertMarked(pk, 4, 3)  # SYN, the ACK of the SYN-ACK, the data: one label
        conn.close()
        self.wait_fill(0)  # the end (FIN_WAIT1) removed the flow at once
        self.assertEqual(self.stop_daemon(d), 0, d.describe())
        hs = "flowmark_kernel_events_handshake_total{source=kernel,outcome=%s}"
        self.assertEqual(d.counters.get(hs % "marked"), 1, d.counters)
        # B's listener answered the SYN in another namespace: not this service's handshake.
        self.assertEqual(d.counters.get(hs % "syn_ack", 0), 0, d.counters)
        self.assertEqual(d.counters.get("flowmark_flowlabel_flows_inserted_total{backend=label}",
                                        0), 0, "user space inserted the flow again")
        self.assertNoHookLeft()

    def test_refused_connection_leaves_no_map_entry(self):
        """SYN_SENT → CLOSE: the kernel removes the entry it put before the SYN."""
        d = self.start_daemon({
            "source": {"kernel": {"type": "kernel-events", "ports": ["5003"],
                                  "skip_private": False, "experiment": 4, "activity": 3}},
            "backend": {"label": {"type": "flowlabel", "interfaces": [IFACE]}}}, nsenter=True)
        sport = 41031
        s = in_netns(SITE.ns["A"], lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((self.A6, sport))
            with self.assertRaises(ConnectionRefusedError):
                s.connect((self.B6, 5003))  # nobody listens: B answers with a reset
        pk = READER.take(sport, 1)
        self.assertEqual(pk[0][5] & 0x12, 0x02, f"not the SYN: {pk[0]}")
        self.assertMarked(pk, 4, 3)  # the entry existed when the SYN left...
        self.wait_fill(0)  # ...and is gone: no leak
        self.assertEqual(self.stop_daemon(d), 0, d.describe())
        hs = "flowmark_kernel_events_handshake_total{source=kernel,outcome=%s}"
        self.assertEqual(d.counters.get(hs % "marked"), 1, d.counters)
        self.assertEqual(d.counters.get(hs % "removed"), 1, d.counters)
        self.assertIsNone(d.counters.get("flowmark_kernel_events_total{source=kernel,state=start}"),
                          "a refused connection was announced")
        self.assertNoHookLeft()

    def test_passive_side_marked_from_its_syn_ack(self):
        """A accepts a connection from B: the kernel puts the flow in the handshake map when
        the SYN arrives (sock_ops, request socket), so the SYN-ACK carries the label; the
        flow moves to the flow map at ESTABLISHED with the same label."""
        d = self.start_daemon({
            "source": {"kernel": {"type": "kernel-events", "ports": ["5004"],
                                  "skip_private": False, "experiment": 4, "activity": 3}},
            "backend": {"label": {"type": "flowlabel", "interfaces": [IFACE]}}}, nsenter=True)
        self.assertTrue(d.wait_err(r"SYN-ACK \(passive side;", timeout=5))
        srv = in_netns(SITE.ns["A"], lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        self.addCleanup(srv.close)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.A6, 5004))
        srv.listen(4)
        cli = in_netns(SITE.ns["B"], lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        self.addCleanup(cli.close)
        cli.connect((self.A6, 5004))
        conn, _ = srv.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.tcp_send(conn, 3)  # before B sends anything: A's first packets after the SYN-ACK
            got = 0
            while got < 3000:
                got += len(cli.recv(65536))
            pk = READER.take(5004, 4)
        self.assertEqual(pk[0][5] & 0x12, 0x12, f"the first packet is not the SYN-ACK: {pk[0]}")
        self.assertNotEqual(pk[0][3], 0, "the SYN-ACK left unmarked")
        self.assertMarked(pk, 4, 3)  # SYN-ACK and data: one label
        cli.close()
        self.wait_fill(0)
        # `flowmark bpf status` reads the same counter from the kernel's map.
        self.assertGreaterEqual(self.hook_status().get("marked_handshake", 0), 1,
                                self.hook_status())
        self.assertEqual(self.stop_daemon(d), 0, d.describe())
        hs = "flowmark_kernel_events_handshake_total{source=kernel,outcome=%s}"
        self.assertEqual(d.counters.get(hs % "syn_ack"), 1, d.counters)
        self.assertEqual(d.counters.get(hs % "marked"), 1, d.counters)
        self.assertGreaterEqual(d.counters.get(
            "flowmark_flowlabel_packets_total{backend=label,outcome=marked_handshake}", 0), 1,
            d.counters)
        self.assertNoHookLeft()

    def test_syn_flood_does_not_evict_flows(self):
        """10,000 SYNs from B to a listener of A (raw packets, one source port each): every
        SYN-ACK goes through the handshake map (handshake_capacity = 2048 here, an LRU of its
        own), which the flood overruns; the flow map's entry of an established connection
        stays, its packets keep their label, and a real connection after the flood has its
        SYN-ACK marked."""
        hs_capacity = 2048
        d = self.start_daemon({
            "source": {"kernel": {"type": "kernel-events", "ports": ["5002", "5006"],
                                  "skip_private": False, "experiment": 4, "activity": 3}},
            "backend": {"label": {"type": "flowlabel", "interfaces": [IFACE],
                                  "handshake_capacity": hs_capacity}}}, nsenter=True)
        # The size as the kernel created the map (read back from it by the source).
        self.assertTrue(d.wait_err(r"SYN-ACK \(passive side; handshake map of %d entries\)"
                                   % hs_capacity, timeout=5), d.describe())
        tcp = 41061
        conn = self.tcp_connect(tcp)
        self.addCleanup(conn.close)
        self.wait_fill(1)
        self.tcp_send(conn, 3)
        before = self.assertMarked(READER.take(tcp, 4), 4, 3)
        srv = in_netns(SITE.ns["A"], lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        self.addCleanup(srv.close)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.A6, 5006))
        srv.listen(128)
        raw = in_netns(SITE.ns["B"], lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW,
                                                           socket.IPPROTO_TCP))
        with raw:
            raw.setsockopt(socket.IPPROTO_IPV6, getattr(socket, "IPV6_CHECKSUM", 7), 16)
            floods = 10000
            for i in range(floods):
                syn = struct.pack("!HHIIBBHHH", 20000 + i, 5006, i * 7919, 0, 5 << 4, 0x02,
                                  64240, 0, 0)
                raw.sendto(syn, (self.A6, 0))
        # The SYN-ACKs of the flood (B's kernel answers each with a reset).
        flood = READER.take(5006, 1000)
        marked = sum(1 for p in flood if p[5] & 0x12 == 0x12 and p[3] != 0)
        # The established flow: still in the map (fill 1), same label on the wire.
        self.assertEqual(self.fill(), 1)
        self.tcp_send(conn, 3)
        self.assertEqual(self.assertMarked(READER.take(tcp, 3), 4, 3), before)
        # A real connection after the flood: its SYN-ACK is marked (the LRU keeps the newest).
        cli = in_netns(SITE.ns["B"], lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        self.addCleanup(cli.close)
        cli.connect((self.A6, 5006))
        cport = cli.getsockname()[1]
        acc, _ = srv.accept()
        acc.close()
        mine = [p for p in READER.take(5006, 1) if p[2] == cport]
        self.assertTrue(mine and mine[0][5] & 0x12 == 0x12, f"no SYN-ACK to {cport}: {mine}")
        self.assertNotEqual(mine[0][3], 0, "the SYN-ACK after the flood left unmarked")
        conn.close()
        self.assertEqual(self.stop_daemon(d), 0, d.describe())
        hs = "flowmark_kernel_events_handshake_total{source=kernel,outcome=%s}"
        syn_acks = d.counters.get(hs % "syn_ack", 0)
        print(f"\n  SYN flood: {floods} SYNs sent, {syn_acks} SYN-ACKs put in the handshake "
              f"map, {len(flood)} SYN-ACKs seen in B, {marked} of them labelled",
              file=sys.stderr)
        self.assertGreater(syn_acks, 2 * hs_capacity, "the flood did not overrun the handshake map")
        self.assertEqual(d.counters.get(hs % "full", 0), 0, d.counters)
        self.assertNoHookLeft()

if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
