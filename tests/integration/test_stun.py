#!/usr/bin/env python3
"""Integration tests of `flowmark stun`: public-address discovery against a real STUN
server (Debian's coturn, `turnserver --stun-only`) through a real NAT.

    python3 tests/integration/test_stun.py BUILD_DIR [unittest options]

Three namespaces, built for the test class and deleted afterwards even when a test fails:

    client  vethC 10.77.0.2/24, 2001:db8:77:1::2/64
      |
    router  vethRC 10.77.0.1 / 2001:db8:77:1::1, vethRS 198.51.100.1 / 2001:db8:77:2::1
            forwarding on; nftables SNATs 10.77.0.0/24 leaving by vethRS to 198.51.100.1
      |
    server  vethS 198.51.100.3/24, 2001:db8:77:2::3/64; turnserver on port 3478

The server has no route back to 10.77.0.0/24: an answer can only reach the client through
the NAT, so the address it reports must be the router's. IPv6 is routed without NAT: the
server sees (and reports) the client's own address. Needs root, nft and turnserver.
"""

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_stun.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")

from netns_helpers import _default_sigint, _delete_namespace, _live_namespaces, _sh

CLIENT4, ROUTER_IN4, ROUTER_OUT4, SERVER4 = "10.77.0.2", "10.77.0.1", "198.51.100.1", "198.51.100.3"
CLIENT6, ROUTER_IN6 = "2001:db8:77:1::2", "2001:db8:77:1::1"
ROUTER_OUT6, SERVER6 = "2001:db8:77:2::1", "2001:db8:77:2::3"
UNUSED4 = "198.51.100.99"  # on the server's link, but nobody has it

NAT_RULES = f"""
table ip flowmark_stun_nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "vethRS" ip saddr 10.77.0.0/24 snat to {ROUTER_OUT4}
  }}
}}
"""


class Network:
    """client -- router (NAT) -- server, and coturn in the server."""

    def __init__(self):
        tag = f"{os.getpid()}"
        self.client, self.router, self.server = f"stunC{tag}", f"stunR{tag}", f"stunS{tag}"
        self.turn = None
        self.tmp = tempfile.mkdtemp(prefix="flowmark-stun-")

    def create(self):
        for ns in (self.client, self.router, self.server):
            _sh(["ip", "netns", "add", ns])
            _live_namespaces.add(ns)
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        _sh(["ip", "-n", self.client, "link", "add", "vethC", "type", "veth", "peer", "name",
             "vethRC", "netns", self.router])
        _sh(["ip", "-n", self.server, "link", "add", "vethS", "type", "veth", "peer", "name",
             "vethRS", "netns", self.router])
        for ns, dev, v4, v6 in ((self.client, "vethC", CLIENT4, CLIENT6),
                                (self.router, "vethRC", ROUTER_IN4, ROUTER_IN6),
                                (self.router, "vethRS", ROUTER_OUT4, ROUTER_OUT6),
                                (self.server, "vethS", SERVER4, SERVER6)):
            _sh(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0"])
            _sh(["ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev])
            _sh(["ip", "-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", dev, "nodad"])
            _sh(["ip", "-n", ns, "link", "set", dev, "up"])
        _sh(["ip", "-n", self.client, "route", "add", "default", "via", ROUTER_IN4])
        _sh(["ip", "-n", self.client, "-6", "route", "add", "default", "via", ROUTER_IN6])
        # IPv6 comes back routed; IPv4 has no way back but the NAT.
        _sh(["ip", "-n", self.server, "-6", "route", "add", "2001:db8:77:1::/64", "via",
             ROUTER_OUT6])
        _sh(["ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        _sh(["ip", "netns", "exec", self.router, "sysctl", "-qw",
             "net.ipv6.conf.all.forwarding=1"])
        _sh(["ip", "netns", "exec", self.router, "nft", "-f", "-"], input=NAT_RULES)
        self.start_turnserver()

    def start_turnserver(self):
        log = open(os.path.join(self.tmp, "turnserver.log"), "w")
        self.turn = subprocess.Popen(
            ["ip", "netns", "exec", self.server, "turnserver", "-n", "--stun-only", "--no-cli",
             "--no-tls", "--no-dtls", "-L", SERVER4, "-L", SERVER6, "-p", "3478",
             "--log-file", "stdout", "--simple-log",
             "--pidfile", os.path.join(self.tmp, "turnserver.pid")],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_default_sigint)
        log.close()
        atexit.register(self.stop_turnserver)  # also if the interpreter stops half-way
        deadline = time.monotonic() + 10
        want = {f"{SERVER4}:3478", f"[{SERVER6}]:3478"}
        while True:
            if self.turn.poll() is not None:
                raise RuntimeError(f"turnserver exited ({self.turn.returncode}):\n"
                                   + self.turnserver_log())
            listening = set(re.findall(r"\s(\S+:3478)\s",
                                       _sh(["ip", "netns", "exec", self.server, "ss", "-Hulpn"])
                                       .stdout))
            if want <= listening:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"turnserver not listening on {want} within 10 s "
                                   f"(ss: {listening}):\n" + self.turnserver_log())
            time.sleep(0.05)

    def turnserver_log(self):
        try:
            with open(os.path.join(self.tmp, "turnserver.log")) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop_turnserver(self):
        if self.turn is not None and self.turn.poll() is None:
            self.turn.kill()
            self.turn.wait(timeout=5)

    def destroy(self):
        self.stop_turnserver()
        for ns in (self.client, self.router, self.server):
            _delete_namespace(ns)
        shutil.rmtree(self.tmp, ignore_errors=True)


class StunTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(FLOWMARK, os.X_OK):
            raise RuntimeError(f"{FLOWMARK} is missing: build first")
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (network namespaces)")
        for tool in ("turnserver", "nft"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest(f"needs {tool} (scripts/install-deps.sh installs it)")
        cls.net = Network()
        cls.addClassCleanup(cls.net.destroy)  # runs even if create() fails half-way
        cls.net.create()

    def stun(self, *args, ns=None, timeout=15):
        """Runs `flowmark stun` in the client; returns (exit code, stdout, stderr, seconds)."""
        argv = ["ip", "netns", "exec", ns or self.net.client, FLOWMARK, "stun", *args]
        t0 = time.monotonic()
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, preexec_fn=_default_sigint)
        return r.returncode, r.stdout, r.stderr, time.monotonic() - t0

    def stun_json(self, *args):
        rc, out, err, _ = self.stun(*args, "--json")
        self.assertEqual(rc, 0, f"stdout={out!r} stderr={err!r}\n{self.net.turnserver_log()}")
        return json.loads(out)

    def test_ipv4_behind_nat_reports_the_routers_public_address(self):
        rc, out, err, _ = self.stun(SERVER4)  # port 3478 by default
        self.assertEqual(rc, 0, err)
        m = re.fullmatch(r"(\S+):(\d+)\n", out)
        self.assertIsNotNone(m, out)
        self.assertEqual(m.group(1), ROUTER_OUT4)  # not the client's own 10.77.0.2
        self.assertGreater(int(m.group(2)), 0)

    def test_ipv4_json_says_nat(self):
        doc = self.stun_json(f"{SERVER4}:3478", "--bind", CLIENT4)
        self.assertEqual(doc["public"]["address"], ROUTER_OUT4, doc)
        self.assertEqual(doc["local"]["address"], CLIENT4, doc)
        self.assertEqual(doc["server"], {"address": SERVER4, "port": 3478}, doc)
        self.assertIs(doc["nat"], True, doc)
        self.assertEqual(doc["requests"], 1, doc)
        self.assertGreater(doc["public"]["port"], 0, doc)

    def test_the_nat_keeps_the_mapping_it_reported(self):
        # The router's conntrack entry for the client's port maps to the reported port.
        doc = self.stun_json(SERVER4)
        entries = _sh(["ip", "netns", "exec", self.net.router, "cat",
                       "/proc/net/nf_conntrack"], check=False).stdout
        if not entries:
            self.skipTest("no /proc/net/nf_conntrack in this kernel")
        pattern = (rf"src={re.escape(CLIENT4)} dst={re.escape(SERVER4)} sport="
                   rf"{doc['local']['port']} dport=3478 .*src={re.escape(SERVER4)} "
                   rf"dst={re.escape(ROUTER_OUT4)} sport=3478 dport={doc['public']['port']}\b")
        self.assertRegex(entries, pattern)

    def test_ipv6_without_nat_reports_the_clients_own_address(self):
        rc, out, err, _ = self.stun(f"[{SERVER6}]:3478")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, rf"^\[{re.escape(CLIENT6)}\]:\d+\n$")
        doc = self.stun_json(SERVER6)
        self.assertEqual(doc["public"]["address"], CLIENT6, doc)
        self.assertEqual(doc["public"], doc["local"], doc)
        self.assertIs(doc["nat"], False, doc)

    def test_unreachable_server_fails_within_the_timeout(self):
        rc, out, err, took = self.stun(UNUSED4, "--timeout", "1")
        self.assertEqual(rc, 1, f"stdout={out!r} stderr={err!r}")
        self.assertEqual(out, "")
        self.assertIn(f"no answer from STUN server {UNUSED4}:3478 within 1 s", err)
        self.assertIn("binding requests sent", err)
        self.assertGreaterEqual(took, 1.0)
        self.assertLess(took, 3.0)

    def test_server_without_stun_on_that_port_times_out(self):
        # Not 3479: coturn answers there too (RFC 5780 alternate port).
        rc, _, err, took = self.stun(f"{SERVER4}:3490", "--timeout", "0.7")
        self.assertEqual(rc, 1, err)
        self.assertIn(f"no answer from STUN server {SERVER4}:3490 within 0.7 s", err)
        self.assertLess(took, 3.0)

    def test_usage_errors(self):
        cases = [(["--bind", "not-an-address", SERVER4], 2, "--bind"),
                 (["--bind", CLIENT6, SERVER4], 1, "bind address"),
                 ([f"{SERVER4}:99999"], 1, "STUN server"),
                 ([SERVER4, "--timeout", "0"], 2, "timeout"),
                 ([], 2, "server")]
        for args, code, mention in cases:
            with self.subTest(args=args):
                rc, out, err, _ = self.stun(*args)
                self.assertEqual(rc, code, f"stdout={out!r} stderr={err!r}")
                self.assertIn(mention, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
