#!/usr/bin/env python3
"""Passive tagging end to end: a flow marked in one namespace is announced from another.

    python3 tests/integration/test_passive_tagging.py BUILD_DIR [unittest options]

Hosts A and B: network namespaces joined by a veth pair (netns_helpers.VethHosts), MTU 9000.
- In A, flowmarkd with the named-pipe source and the flowlabel (eBPF) backend on A's end of
  the pair: a start line for a TCP flow A → B (experiment 2 "atlas", activity 9 "Debug")
  makes the kernel write the Scitags flow label into the flow's packets: before the flow's
  first packet (every packet marked), or once it is connected (the handshake unmarked, and
  B's SYN-ACK carrying B's automatic flow label, a hash).
- In B, flowmarkd with the observer source on B's end, classify = "scitags", and the
  firefly backend sending to a collector (`flowmark firefly listen`) on B's loopback, and a
  registry that knows atlas/Debug alone. B's kernel keeps its automatic flow labels: its
  own packets carry hashes, not marks.
- A Python client in A sends a few MB to a server in B and closes. The collector gets a
  start firefly with experiment 2 and activity 9, then an end firefly whose usage.sent is
  within 1 % of the bytes the client sent (usage counts IP octets, headers included); no
  firefly for anything else (an unmarked UDP flow sent meanwhile is not announced).

Timers of the observer run on the packet clock: after the connection closes, the flow's
record is emitted at the next packet seen once its expiry delay has passed, so the test
keeps sending small unmarked UDP datagrams until the end firefly arrives (with a deadline).

Needs root (namespaces, BPF); skips with the reason when the kernel refuses BPF.
"""

import json
import os
import socket
import struct
import sys
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# test_flowmarkd takes BUILD_DIR from sys.argv when imported.
import test_flowmarkd as fmd  # noqa: E402
from netns_helpers import VethHosts, _sh, in_netns, wait_until, write_pipe  # noqa: E402

FLOWMARK, FLOWMARKD = fmd.FLOWMARK, fmd.FLOWMARKD
DEV_A, DEV_B = "ptagA", "ptagB"
A4, B4, A6, B6 = "10.84.0.1", "10.84.0.2", "fd84::1", "fd84::2"
EXP, ACT = 2, 9  # atlas, Debug
PROBE_PORT = 5003
PAYLOAD = 4 << 20  # bytes the client sends


class Hosts:
    """VethHosts seen as the Site of test_flowmarkd (argv, ns), for its Proc and Collector."""

    def __init__(self):
        # Jumbo frames, as on research networks: even segment by segment (no segmentation
        # offload on the pair), the IPv6 and TCP headers are < 1 % of the octets.
        self.veth = VethHosts("ptag", (DEV_A, A4, A6), (DEV_B, B4, B6), mtu=9000)
        self.ns = {"A": self.veth.a, "B": self.veth.b}

    def argv(self, host, args):
        return ["ip", "netns", "exec", self.ns[host], *args]


def bytes_retransmitted(sock):
    """tcpi_bytes_retrans of a TCP socket (struct tcp_info, Linux 4.19+: offset 208)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < 216:
        return 0
    return struct.unpack_from("=Q", info, 208)[0]


class Server:
    """In B: accepts one TCP connection on `port` and counts what it reads until EOF."""

    def __init__(self, ns, port):
        self.sock = in_netns(ns, lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((B6, port))
        self.sock.listen(4)
        self.received, self.eof = 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            while True:
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                self.received += len(chunk)
        self.eof.set()

    def close(self):
        self.sock.close()


HOSTS = None


def setUpModule():
    global HOSTS
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root (network namespaces, BPF)")
    for exe in (FLOWMARK, FLOWMARKD):
        if not os.access(exe, os.X_OK):
            raise RuntimeError(f"{exe} is missing: build flowmark and flowmarkd first")
    HOSTS = Hosts()
    unittest.addModuleCleanup(HOSTS.veth.destroy)
    HOSTS.veth.create()
    # A's unmarked packets carry label 0 rather than the kernel's flow hash; B keeps its
    # automatic labels (a host that knows nothing of Scitags).
    _sh(["ip", "netns", "exec", HOSTS.ns["A"], "sysctl", "-qw", "net.ipv6.auto_flowlabels=0"])


class TestPassiveTagging(unittest.TestCase):
    def setUp(self):
        import shutil
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="fmd-ptag-")
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, True)

    def flowmarkd(self, host, doc):
        """flowmarkd in `host`, running; skips the test when the kernel refuses BPF here."""
        path = os.path.join(self.dir, f"flowmarkd-{host}.toml")
        with open(path, "w") as f:
            f.write(fmd.toml(doc))
        d = fmd.Proc(HOSTS.argv(host, [FLOWMARKD, "-c", path]))
        self.addCleanup(d.kill)
        try:
            d.wait_err(r"flowmarkd running", timeout=15)
        except AssertionError:
            if any("CAP_BPF" in line for line in d.err):
                self.skipTest("the kernel refuses BPF here: " + d.err[-1])
            raise
        return d

    def map_fill(self):
        out = _sh(HOSTS.argv("A", [FLOWMARK, "bpf", "status", "--json"])).stdout
        hooks = json.loads(out)["hooks"]
        return hooks[0].get("flows") if hooks else None

    def test_marked_flow_is_announced_by_the_observer_with_its_ids_and_usage(self):
        """The marker knows the flow before its first packet: the SYN is marked."""
        self.announce(client_port=41701, server_port=5002, mark_before_connect=True)

    def test_flow_marked_after_its_handshake_is_announced_at_its_first_marked_packet(self):
        """The marker learns of the flow once connected (as with the kernel-events source):
        the handshake is unmarked and B's SYN-ACK carries B's automatic flow label, a hash
        that must not hide the marks that follow."""
        self.announce(client_port=41702, server_port=5004, mark_before_connect=False)

    def announce(self, client_port, server_port, mark_before_connect):
        collector = fmd.Collector(HOSTS, "B", 10514, bind="127.0.0.1")
        self.addCleanup(collector.kill)
        # B's registry knows atlas/Debug alone: a hash in B's own labels names a known pair
        # once in 2^15 (with the public registry's 112 pairs, about 1 run in 290 would fail).
        registry = os.path.join(self.dir, "registry.json")
        with open(registry, "w") as f:
            json.dump({"experiments": [{"expName": "atlas", "expId": EXP, "activities": [
                {"activityName": "Debug", "activityId": ACT}]}]}, f)
        observer = self.flowmarkd("B", {
            "service": {"registry": registry},
            "source": {"span": {"type": "observer", "interface": DEV_B,
                                "classify": "scitags"}},
            "backend": {"ff": {"type": "firefly", "to_destination": False,
                               "collectors": ["127.0.0.1:10514"]}}})
        pipe = os.path.join(self.dir, "flowmark.pipe")
        marker = self.flowmarkd("A", {
            "source": {"pipe": {"type": "named-pipe", "path": pipe}},
            "backend": {"label": {"type": "flowlabel", "interfaces": [DEV_A]}}})
        server = Server(HOSTS.ns["B"], server_port)
        self.addCleanup(server.close)
        line = f"tcp {A6} {client_port} {B6} {server_port} {EXP} {ACT}\n"

        def mark():
            write_pipe(pipe, "start " + line)
            wait_until(lambda: self.map_fill() == 1, 10, "the flow in the flowlabel map")

        client = in_netns(HOSTS.ns["A"], lambda: socket.socket(socket.AF_INET6,
                                                               socket.SOCK_STREAM))
        self.addCleanup(client.close)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        client.bind((A6, client_port))
        if mark_before_connect:
            mark()
        client.connect((B6, server_port))
        if not mark_before_connect:
            mark()
        data = os.urandom(1 << 16)
        sent = 0
        while sent < PAYLOAD:
            sent += client.send(data[:min(len(data), PAYLOAD - sent)])
        client.shutdown(socket.SHUT_WR)
        self.assertTrue(server.eof.wait(30), f"the server read {server.received} bytes")
        self.assertEqual(server.received, sent)
        retrans = bytes_retransmitted(client)
        client.close()

        got = collector.wait_count(1, timeout=10)
        start = got[0]["firefly"]
        self.assertEqual(start["flow-lifecycle"]["state"], "start", start)
        self.assertEqual(start["flow-id"], {"afi": "ipv6", "src-ip": A6, "dst-ip": B6,
                                            "protocol": "tcp", "src-port": client_port,
                                            "dst-port": server_port}, start)
        self.assertEqual(start["context"]["experiment-id"], EXP, start)
        self.assertEqual(start["context"]["activity-id"], ACT, start)

        # The record is emitted at the first packet after the expiry delay (packet clock):
        # unmarked UDP datagrams until the end firefly comes, each one a packet on B's link.
        probe = in_netns(HOSTS.ns["A"], lambda: socket.socket(socket.AF_INET6,
                                                              socket.SOCK_DGRAM))
        self.addCleanup(probe.close)
        probe.bind((A6, 0))

        def ended():
            probe.sendto(b"tick", (B6, PROBE_PORT))
            return len(collector.fireflies()) >= 2
        wait_until(ended, 30, "the end firefly")
        end = collector.fireflies()[1]["firefly"]
        self.assertEqual(end["flow-lifecycle"]["state"], "end", end)
        self.assertEqual(end["flow-id"], start["flow-id"], end)
        self.assertEqual(end["context"], start["context"], end)
        self.assertEqual(end["flow-lifecycle"]["start-time"],
                         start["flow-lifecycle"]["start-time"], end)
        usage = end["usage"]
        # What B's link carried: the bytes sent, and again those the client's TCP sent twice
        # (a segment lost between the namespaces on a loaded machine is on the wire twice,
        # and seen twice by the observer).
        on_wire = sent + retrans
        print(f"\n  bytes sent by the client: {sent} (retransmitted {retrans}); end firefly "
              f"usage: sent {usage['sent']} ({(usage['sent'] - on_wire) / on_wire:+.3%}), "
              f"received {usage['received']}", file=sys.stderr)
        self.assertLessEqual(abs(usage["sent"] - on_wire), on_wire / 100, usage)
        self.assertLess(usage["received"], sent / 100, usage)  # B's ACKs only

        # Nothing else was announced (the UDP probes are unmarked, there is no rule).
        write_pipe(pipe, "end " + line)
        for d in (observer, marker):
            d.signal(15)
            self.assertEqual(d.wait(10), 0, d.describe())
        counters = fmd.parse_counters(observer.err) or {}
        print(f"  observer counters: {json.dumps(counters, sort_keys=True)}", file=sys.stderr)
        self.assertEqual(len(collector.fireflies()), 2, collector.fireflies())
        self.assertEqual(counters.get(
            "flowmark_observer_marks_total{source=span,outcome=announced}"), 1, counters)
        self.assertGreaterEqual(counters.get(
            "flowmark_pipeline_events_total{outcome=unclassified}", 0), 1, counters)
        if not mark_before_connect:  # B's SYN-ACK carried a hash: a mark of no experiment
            self.assertEqual(counters.get(
                "flowmark_observer_marks_total{source=span,outcome=unknown}"), 1, counters)


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
