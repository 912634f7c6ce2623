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

The service too: flowmarkd in the client with [public_address] discover = true asks coturn at
start, and the fireflies it sends for the client's private address (to a collector in the
server namespace, beyond the router) carry the router's public address; a manual
[public_address.map] entry wins over the discovered one.
"""

import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_stun.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")
FLOWMARKD = os.path.join(BUILD_DIR, "flowmarkd")

from netns_helpers import _default_sigint, _delete_namespace, _live_namespaces, _sh, write_pipe

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


class NatTopology(unittest.TestCase):
    """Builds the Network for the tests of a class (and deletes it afterwards)."""

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


class StunTest(NatTopology):
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
                 (["--bind", CLIENT6, SERVER4], 2, "bind address"),
                 ([f"{SERVER4}:99999"], 2, "STUN server"),
                 ([SERVER4, "--timeout", "0"], 2, "timeout"),
                 ([], 2, "server")]
        for args, code, mention in cases:
            with self.subTest(args=args):
                rc, out, err, _ = self.stun(*args)
                self.assertEqual(rc, code, f"stdout={out!r} stderr={err!r}")
                self.assertIn(mention, err)


class Logged:
    """A process in a namespace with stdout and stderr in files of `tmp`, polled by the test."""

    def __init__(self, ns, argv, tmp, name):
        self.out_path = os.path.join(tmp, name + ".out")
        self.err_path = os.path.join(tmp, name + ".err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out,
                                         stderr=err, preexec_fn=_default_sigint)

    def text(self, which="err"):
        with open(self.err_path if which == "err" else self.out_path) as f:
            return f.read()

    def wait_text(self, pattern, timeout=10, which="err"):
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text(which))
            if m:
                return m
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no /{pattern}/ (rc {self.proc.poll()}):\n"
                                     f"{self.text('out')[-2000:]}\n{self.text('err')[-2000:]}")
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class FlowmarkdPublicAddressTest(NatTopology):
    """flowmarkd's [public_address] discovery against the same coturn behind the same NAT."""

    COLLECTOR_PORT = 20555

    def setUp(self):
        if not os.access(FLOWMARKD, os.X_OK):
            raise RuntimeError(f"{FLOWMARKD} is missing: build first")
        self.dir = tempfile.mkdtemp(prefix="flowmarkd-stun-", dir=self.net.tmp)
        self.pipe = os.path.join(self.dir, "flowmark.pipe")
        self.collector = Logged(self.net.server, [
            FLOWMARK, "firefly", "listen", "--bind", SERVER4, "--port", str(self.COLLECTOR_PORT),
            "--timeout", "600"], self.dir, "collector")
        self.addCleanup(self.collector.stop, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while f"{SERVER4}:{self.COLLECTOR_PORT}" not in _sh(
                ["ip", "netns", "exec", self.net.server, "ss", "-Hulpn"]).stdout:
            self.assertLess(time.monotonic(), deadline, "the collector does not listen")
            time.sleep(0.05)

    def run_daemon(self, extra_public=""):
        config = os.path.join(self.dir, "flowmark.toml")
        with open(config, "w") as f:
            f.write("[public_address]\n"
                    "discover = true\n"
                    f'stun_servers = ["{SERVER4}", "[{SERVER6}]:3478"]\n'
                    f"{extra_public}\n"
                    "[source.pipe]\n"
                    'type = "named-pipe"\n'
                    f'path = "{self.pipe}"\n\n'
                    "[backend.ff]\n"
                    'type = "firefly"\n'
                    "to_destination = false\n"
                    f'collectors = ["{SERVER4}:{self.COLLECTOR_PORT}"]\n')
        d = Logged(self.net.client, [FLOWMARKD, "-c", config], self.dir, "flowmarkd")
        self.addCleanup(d.stop, signal.SIGKILL)
        d.wait_text(r"flowmarkd running", timeout=15)
        return d

    def fireflies(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            got = [json.loads(l) for l in self.collector.text("out").splitlines()
                   if l.startswith('{"sender"')]
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} of {n} fireflies: {got}")
            time.sleep(0.05)

    def test_service_puts_the_discovered_public_address_in_fireflies(self):
        d = self.run_daemon()
        m4 = d.wait_text(rf"STUN {re.escape(SERVER4)}: public address (\S+)")
        m6 = d.wait_text(rf"STUN \[{re.escape(SERVER6)}\]:3478: public address (\S+)")
        self.assertEqual((m4.group(1), m6.group(1)), (ROUTER_OUT4, CLIENT6))
        write_pipe(self.pipe, f"start tcp {CLIENT4} 40000 {SERVER4} 5777 2 1\n"
                              f"start tcp {CLIENT6} 40001 {SERVER6} 5777 2 1\n")
        got = self.fireflies(2)
        by_port = {g["firefly"]["flow-id"]["src-port"]: g for g in got}
        self.assertEqual(by_port[40000]["firefly"]["flow-id"]["src-ip"], ROUTER_OUT4, got)
        self.assertEqual(by_port[40000]["firefly"]["flow-id"]["dst-ip"], SERVER4, got)
        self.assertEqual(by_port[40000]["sender"], ROUTER_OUT4)  # the NAT rewrote the datagram
        self.assertEqual(by_port[40001]["firefly"]["flow-id"]["src-ip"], CLIENT6, got)
        print(f"\n  [flowmarkd: STUN says {m4.group(1)} / {m6.group(1)}; the firefly of "
              f"{CLIENT4}:40000 carries src-ip "
              f"{by_port[40000]['firefly']['flow-id']['src-ip']}]", file=sys.stderr)
        self.assertEqual(d.stop(), 0, d.text())

    def test_manual_map_wins_over_the_discovered_address(self):
        override = "192.0.2.77"
        d = self.run_daemon(f'[public_address.map]\n"{CLIENT4}" = "{override}"\n')
        d.wait_text(rf"STUN {re.escape(SERVER4)}: public address {re.escape(ROUTER_OUT4)}")
        write_pipe(self.pipe, f"start tcp {CLIENT4} 40002 {SERVER4} 5777 2 1\n"
                              f"start tcp 10.77.0.9 40003 {SERVER4} 5777 2 1\n")
        got = self.fireflies(2)
        by_port = {g["firefly"]["flow-id"]["src-port"]: g for g in got}
        self.assertEqual(by_port[40002]["firefly"]["flow-id"]["src-ip"], override, got)
        # Another private address, not in the map: the discovered one.
        self.assertEqual(by_port[40003]["firefly"]["flow-id"]["src-ip"], ROUTER_OUT4, got)
        print(f"\n  [flowmarkd: map {CLIENT4} → {override} wins over STUN's {ROUTER_OUT4}; "
              f"10.77.0.9 → {by_port[40003]['firefly']['flow-id']['src-ip']}]", file=sys.stderr)
        self.assertEqual(d.stop(), 0, d.text())


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
