#!/usr/bin/env python3
"""Integration tests of `flowmark mcast` and its `multicast` compatibility grammar.

    python3 tests/integration/test_mcast.py BUILD_DIR [unittest options]

BUILD_DIR holds the `flowmark` binary and the `multicast` symlink. Needs root: every
test class builds its own two "hosts" — two network namespaces joined by a veth pair
(vethA in host A, vethB in host B) with IPv4 and IPv6 addresses and a 224.0.0.0/4
route — and deletes them afterwards, even when a test fails. Python 3 stdlib only.
"""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_mcast.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")
MULTICAST = os.path.join(BUILD_DIR, "multicast")

A4, B4, A4_SECOND = "10.77.0.1", "10.77.0.2", "10.77.0.11"
A6, B6, A6_SECOND = "fd77::1", "fd77::2", "fd77::11"
IF_A, IF_B = "vethA", "vethB"

# The environment every command runs in: no MULTICAST_* leaking in from the caller.
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MULTICAST_")}

from netns_helpers import NetnsProcesses, VethHosts, _sh, wait_stdout, wait_udp_ready


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class McastTestCase(NetnsProcesses, unittest.TestCase):
    """Helpers shared by every test class; classes with NEEDS_HOSTS build their own."""

    NEEDS_HOSTS = True
    MTU = None
    ENV = BASE_ENV

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (network namespaces)")
        for exe in (FLOWMARK, MULTICAST):
            if not os.access(exe, os.X_OK):
                raise RuntimeError(f"{exe} is missing: build first")
        if cls.NEEDS_HOSTS:
            cls.hosts = VethHosts("fm", (IF_A, A4, A6), (IF_B, B4, B6), mtu=cls.MTU)
            cls.addClassCleanup(cls.hosts.destroy)  # runs even if create() fails half-way
            cls.hosts.create()
            cls.A, cls.B = cls.hosts.a, cls.hosts.b

    # ---- processes (run_cmd, spawn, finish: NetnsProcesses) ---------------------------

    def flowmark(self, ns, *args, **kw):
        return self.run_cmd(ns, [FLOWMARK, "mcast", *args], **kw)

    # ---- readiness -------------------------------------------------------------------
    def wait_ready(self, ns, p, port, dev=None, groups=(), users=1):
        """Waits until process p is bound to UDP `port` in `ns` and every group in
        `groups` has at least `users` memberships on `dev`."""
        wait_udp_ready(self, ns, p, port, dev=dev, groups=groups, users=users)

    def assertDatagram(self, d, *, payload, group, source, interface, size=None):
        self.assertEqual(d.get("type"), "datagram", d)
        self.assertEqual(d.get("payload"), payload, d)
        self.assertEqual(d.get("group"), group, d)
        self.assertEqual(d.get("source"), source, d)
        self.assertEqual(d.get("interface"), interface, d)
        self.assertEqual(d.get("size"), len(payload.encode()) if size is None else size, d)
        self.assertIsInstance(d.get("sport"), int, d)
        self.assertGreater(d.get("time_ns", 0), 0, d)
        self.assertNotIn("truncated", d)


# ---- 1 and 2: SAY in A -> RECV in B ----------------------------------------------------
class TestSayRecv(McastTestCase):
    def say_recv(self, group, port, payload, recv_extra=(), say_extra=()):
        r = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", group, "--port", str(port),
                                "--json", "--timeout", "3", *recv_extra])
        self.wait_ready(self.B, r, port, IF_B, [group])
        rc, out, err = self.flowmark(self.A, "say", "--group", group, "--port", str(port),
                                     "-m", payload, *say_extra)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "")
        rc, out, err = self.finish(r)
        self.assertEqual(rc, 0, err)
        # Without --daemon RECV stops at the first datagram, long before its timeout.
        self.assertLess(r.elapsed, 2.5)
        lines = json_lines(out)
        self.assertEqual(len(lines), 1, out)
        return lines[0]

    def test_ipv4_239(self):
        d = self.say_recv("239.77.1.1", 41001, "hello", say_extra=["--iface", IF_A])
        self.assertDatagram(d, payload="hello", group="239.77.1.1", source=A4, interface=IF_B)

    def test_ipv6_link_local_ff02(self):
        d = self.say_recv("ff02::1:77", 41002, "hello six", recv_extra=["--iface", IF_B],
                          say_extra=["--iface", IF_A])
        # A link-scoped send goes out from A's link-local address.
        self.assertDatagram(d, payload="hello six", group="ff02::1:77",
                            source=self.hosts.link_local[self.A], interface=IF_B)

    def test_ipv6_site_local_ff05_with_iface(self):
        d = self.say_recv("ff05::77", 41003, "site", recv_extra=["--iface", IF_B],
                          say_extra=["--iface", IF_A])
        self.assertDatagram(d, payload="site", group="ff05::77", source=A6, interface=IF_B)

    def test_ipv6_site_local_ff05_by_route(self):
        # No --iface on either side: the join and the send follow ff05::/16 dev veth.
        for ns, dev in ((self.A, IF_A), (self.B, IF_B)):
            _sh(["ip", "-n", ns, "-6", "route", "replace", "ff05::/16", "dev", dev])
        d = self.say_recv("ff05::78", 41004, "routed")
        self.assertDatagram(d, payload="routed", group="ff05::78", source=A6, interface=IF_B)

    def test_loopback_and_no_loop(self):
        # A receiver on the sending host gets the datagram unless --no-loop; the other
        # host gets it either way.
        group = "239.77.1.5"
        for port, loop_args, local_rc in ((41005, [], 0), (41006, ["--no-loop"], 1)):
            with self.subTest(args=loop_args):
                local = self.spawn(self.A, [FLOWMARK, "mcast", "recv", "--group", group, "--port",
                                            str(port), "--json", "--timeout", "1"])
                remote = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", group,
                                             "--port", str(port), "--json", "--timeout", "1"])
                self.wait_ready(self.A, local, port, IF_A, [group])
                self.wait_ready(self.B, remote, port, IF_B, [group])
                rc, _, err = self.flowmark(self.A, "say", "--group", group, "--port", str(port),
                                           "-m", "loop?", *loop_args)
                self.assertEqual(rc, 0, err)
                rc, out, err = self.finish(remote)
                self.assertEqual(rc, 0, err)
                self.assertDatagram(json_lines(out)[0], payload="loop?", group=group, source=A4,
                                    interface=IF_B)
                rc, out, err = self.finish(local)
                self.assertEqual(rc, local_rc, err)
                if local_rc == 0:
                    self.assertEqual([d["payload"] for d in json_lines(out)], ["loop?"])
                else:
                    self.assertEqual(out, "")


# ---- TTL / hop limit on the wire -----------------------------------------------------------
class TestTtl(McastTestCase):
    def test_ttl_on_the_wire(self):
        # (port, group, say args, environment, the TTL / hop limit B must see)
        cases = [
            (48001, "239.7.1.1", [], None, 1),                                   # RFC 1112 default
            (48002, "239.7.1.1", ["--ttl", "5"], None, 5),
            (48003, "239.7.1.1", [], {"MULTICAST_TTL": "7"}, 7),
            (48004, "239.7.1.1", ["--ttl", "5"], {"MULTICAST_TTL": "7"}, 5),     # flag beats env
            (48005, "ff05::7:1", ["--iface", IF_A], None, 1),
            (48006, "ff05::7:1", ["--iface", IF_A, "--ttl", "9"], None, 9),
        ]
        rules = []
        for port, group, _, _, ttl in cases:
            field = "ip ttl" if ":" not in group else "ip6 hoplimit"
            rules.append(f"udp dport {port} {field} {ttl} counter comment \"ttl{port}\"")
            rules.append(f"udp dport {port} counter comment \"all{port}\"")
        script = ("table inet fmttl {\n chain pre {\n  type filter hook prerouting priority 0;\n"
                  + "".join(f"  {r}\n" for r in rules) + " }\n}\n")
        r = subprocess.run(["ip", "netns", "exec", self.B, "nft", "-f", "-"], input=script,
                           text=True, capture_output=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        for port, group, args, env, _ in cases:
            rc, _, err = self.flowmark(self.A, "say", "--group", group, "--port", str(port),
                                       "-m", "ttl", *args, env=env)
            self.assertEqual(rc, 0, err)
        listing = _sh(["ip", "netns", "exec", self.B, "nft", "list", "table", "inet", "fmttl"]).stdout
        counts = {m.group(2): int(m.group(1)) for m in
                  re.finditer(r'counter packets (\d+) bytes \d+ comment "(\w+)"', listing)}
        for port, group, args, env, ttl in cases:
            with self.subTest(port=port, args=args, env=env):
                self.assertEqual(counts.get(f"all{port}"), 1, listing)
                self.assertEqual(counts.get(f"ttl{port}"), 1, f"expected TTL {ttl}:\n{listing}")


# ---- 3: source-specific multicast ------------------------------------------------------
class TestSsm(McastTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        _sh(["ip", "-n", cls.A, "addr", "add", f"{A4_SECOND}/24", "dev", IF_A])
        _sh(["ip", "-n", cls.A, "-6", "addr", "add", f"{A6_SECOND}/64", "dev", IF_A, "nodad"])

    def check_ssm(self, group, port, primary, second, dev_iface_args, primary_args=()):
        # Two receivers on the same group and port, each joined to one source only.
        r1 = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", group, "--source", primary,
                                 "--port", str(port), "--daemon", "--json", "--timeout", "2",
                                 *dev_iface_args])
        r2 = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", group, "--source", second,
                                 "--port", str(port), "--daemon", "--json", "--timeout", "2",
                                 *dev_iface_args])
        self.wait_ready(self.B, r1, port, IF_B, [group], users=1)
        self.wait_ready(self.B, r2, port, IF_B, [group], users=2)
        # From A's second address first, then from its primary address, then from the
        # second again.
        for args in (["--bind", second, "-m", "from-second", "--count", "3"],
                     [*primary_args, "-m", "from-primary", "--count", "5"],
                     ["--bind", second, "-m", "from-second", "--count", "2"]):
            rc, _, err = self.flowmark(self.A, "say", "--group", group, "--port", str(port),
                                       "--iface", IF_A, *args)
            self.assertEqual(rc, 0, err)
        rc1, out1, err1 = self.finish(r1)
        rc2, out2, err2 = self.finish(r2)
        self.assertEqual(rc1, 0, err1)
        self.assertEqual(rc2, 0, err2)
        d1, d2 = json_lines(out1), json_lines(out2)
        by_source1 = {s: sum(1 for d in d1 if d["source"] == s) for s in {d["source"] for d in d1}}
        by_source2 = {s: sum(1 for d in d2 if d["source"] == s) for s in {d["source"] for d in d2}}
        self.assertEqual(by_source1, {primary: 5}, out1)
        self.assertEqual(by_source2, {second: 5}, out2)
        self.assertTrue(all(d["payload"] == "from-primary" and d["group"] == group for d in d1))
        self.assertTrue(all(d["payload"] == "from-second" and d["group"] == group for d in d2))
        self.assertEqual(sorted(d["seq"] for d in d1), [0, 1, 2, 3, 4])

    def test_ssm_ipv4_232(self):
        # No --bind for the primary: IPv4 picks the interface's primary address.
        self.check_ssm("232.1.1.1", 42001, A4, A4_SECOND, [])

    def test_ssm_ipv6_ff3e(self):
        # IPv6 source selection between fd77::1 and fd77::11 is the kernel's choice: bind.
        self.check_ssm("ff3e::1:77", 42002, A6, A6_SECOND, ["--iface", IF_B], ["--bind", A6])


# ---- 4: group isolation (IP_MULTICAST_ALL / IPV6_MULTICAST_ALL off) ---------------------
class TestGroupIsolation(McastTestCase):
    def test_same_port_other_group_never_seen(self):
        cases = [("239.1.1.1", "239.1.1.2", 43001, []),
                 ("ff05::1:1", "ff05::1:2", 43002, ["--iface", IF_B])]
        procs = []
        for g1, g2, port, extra in cases:
            r1 = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", g1, "--port", str(port),
                                     "--daemon", "--json", "--timeout", "2", *extra])
            r2 = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", g2, "--port", str(port),
                                     "--daemon", "--json", "--timeout", "2", *extra])
            self.wait_ready(self.B, r1, port, IF_B, [g1])
            self.wait_ready(self.B, r2, port, IF_B, [g2])
            procs.append((g1, g2, r1, r2))
        for g1, g2, port, _ in cases:
            rc, _, err = self.flowmark(self.A, "say", "--group", g2, "--port", str(port),
                                       "--iface", IF_A, "-m", "for-two", "--count", "3")
            self.assertEqual(rc, 0, err)
            rc, _, err = self.flowmark(self.A, "say", "--group", g1, "--port", str(port),
                                       "--iface", IF_A, "-m", "for-one")
            self.assertEqual(rc, 0, err)
        for g1, g2, r1, r2 in procs:
            with self.subTest(groups=(g1, g2)):
                rc1, out1, err1 = self.finish(r1)
                rc2, out2, err2 = self.finish(r2)
                self.assertEqual((rc1, rc2), (0, 0), err1 + err2)
                d1, d2 = json_lines(out1), json_lines(out2)
                self.assertEqual([(d["group"], d["payload"]) for d in d1], [(g1, "for-one")], out1)
                self.assertEqual([(d["group"], d["payload"]) for d in d2], [(g2, "for-two")] * 3,
                                 out2)


# ---- 5 and 6: HEAR ----------------------------------------------------------------------
REPLY_RE = r"^HEAR \[ {text} SAID \('{ip}', (\d+)\) \] from {group}$"


class TestHear(McastTestCase):
    def test_replies_reach_the_sender(self):
        group, port = "239.5.5.5", 44001
        h = self.spawn(self.B, [FLOWMARK, "mcast", "hear", "--group", group, "--port", str(port),
                                "--iface", IF_B, "--daemon", "--timeout", "3", "--json",
                                "--allow-stop"])
        self.wait_ready(self.B, h, port, IF_B, [group])
        say = [FLOWMARK, "mcast", "say", "--group", group, "--iface", IF_A, "--wait-reply"]
        # Three senders at once: text output, JSON output, and one to a port nobody
        # answers on (default --timeout of 1 s).
        s_text = self.spawn(self.A, say + ["--port", str(port), "--timeout", "2", "-m", "hello"])
        s_json = self.spawn(self.A, say + ["--port", str(port), "--timeout", "2", "--json",
                                           "-m", "Mixed Case 1"])
        s_none = self.spawn(self.A, say + ["--port", str(port + 1), "-m", "anyone?"])

        rc, out, err = self.finish(s_text)
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 1, out)
        self.assertTrue(lines[0].startswith("HEAR [ HELLO SAID"), out)
        self.assertRegex(lines[0], REPLY_RE.format(text="HELLO", ip=re.escape(A4),
                                                   group=re.escape(group)))

        rc, out, err = self.finish(s_json)
        self.assertEqual(rc, 0, err)
        replies = json_lines(out)
        self.assertEqual(len(replies), 1, out)
        rep = replies[0]
        self.assertEqual(rep["source"], B4)          # the reply is unicast from B ...
        self.assertEqual(rep["sport"], port)         # ... from HEAR's group port
        self.assertEqual(rep["group"], A4)           # ... to A's address
        self.assertRegex(rep["payload"], REPLY_RE.format(text="MIXED CASE 1", ip=re.escape(A4),
                                                         group=re.escape(group)))

        rc, out, err = self.finish(s_none)
        self.assertEqual(rc, 1, err)
        self.assertEqual(out, "")
        self.assertIn("no reply", err)
        self.assertGreaterEqual(s_none.elapsed, 0.9)

        # STOP ends the HEAR daemon (exit 0); it saw exactly our three datagrams.
        rc, _, err = self.flowmark(self.A, "say", "--group", group, "--port", str(port),
                                   "--iface", IF_A, "-m", "STOP")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(h)
        self.assertEqual(rc, 0, err)
        self.assertLess(h.elapsed, 6)
        heard = json_lines(out)
        self.assertEqual(sorted(d["payload"] for d in heard), ["Mixed Case 1", "STOP", "hello"])
        for d in heard:
            self.assertEqual((d["source"], d["group"], d["interface"]), (A4, group, IF_B), d)

    def test_ipv6_link_local_reply(self):
        # The reply goes back to A's link-local address: the scope must be kept.
        group, port = "ff02::1:55", 44003
        h = self.spawn(self.B, [FLOWMARK, "mcast", "hear", "--group", group, "--port", str(port),
                                "--iface", IF_B, "--timeout", "3"])
        self.wait_ready(self.B, h, port, IF_B, [group])
        rc, out, err = self.flowmark(self.A, "say", "--group", group, "--port", str(port),
                                     "--iface", IF_A, "--wait-reply", "--timeout", "0.5",
                                     "--json", "-m", "six")
        self.assertEqual(rc, 0, err)
        replies = json_lines(out)
        self.assertEqual(len(replies), 1, out)
        self.assertEqual(replies[0]["source"], self.hosts.link_local[self.B])
        self.assertEqual(replies[0]["interface"], IF_A)
        self.assertRegex(replies[0]["payload"], REPLY_RE.format(
            text="SIX", ip=re.escape(self.hosts.link_local[self.A]), group=re.escape(group)))
        rc, _, err = self.finish(h)
        self.assertEqual(rc, 0, err)

    def test_hear_timeout_without_datagrams_exits_1(self):
        rc, out, err = self.flowmark(self.B, "hear", "--group", "239.5.5.9", "--port", "44009",
                                     "--iface", IF_B, "--daemon", "--timeout", "0.3")
        self.assertEqual(rc, 1, err)
        self.assertEqual(out, "")

    def test_hear_proxies_other_groups_to_the_bind_group(self):
        self.check_proxy("239.6.6.1", "239.6.6.2", 44002, A4, B4)

    def test_hear_proxies_ipv6_link_local(self):
        self.check_proxy("ff02::1:61", "ff02::1:62", 44004, self.hosts.link_local[self.A],
                         self.hosts.link_local[self.B])

    def check_proxy(self, g1, g2, port, a_addr, b_addr):
        h = self.spawn(self.B, [FLOWMARK, "mcast", "hear", "--groups", g1, g2, "--group", g1,
                                "--port", str(port), "--iface", IF_B, "--daemon", "--timeout", "2",
                                "--json"])
        self.wait_ready(self.B, h, port, IF_B, [g1, g2])
        # Receivers of the bind group: one in A, one in B next to HEAR.
        ra = self.spawn(self.A, [FLOWMARK, "mcast", "recv", "--group", g1, "--port", str(port),
                                 "--iface", IF_A, "--daemon", "--json", "--timeout", "1.5"])
        rb = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", g1, "--port", str(port),
                                 "--iface", IF_B, "--daemon", "--json", "--timeout", "1.5"])
        self.wait_ready(self.A, ra, port, IF_A, [g1])
        self.wait_ready(self.B, rb, port, IF_B, [g1], users=2)

        rc, out, err = self.flowmark(self.A, "say", "--group", g2, "--port", str(port),
                                     "--iface", IF_A, "-m", "proxied payload", "--wait-reply",
                                     "--timeout", "0.5")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out.strip(), REPLY_RE.format(text="PROXIED PAYLOAD",
                                                      ip=re.escape(a_addr), group=re.escape(g2)))
        for name, r, iface in (("A", ra, IF_A), ("B", rb, IF_B)):
            with self.subTest(receiver=name):
                rc, out, err = self.finish(r)
                self.assertEqual(rc, 0, err)
                got = json_lines(out)
                # Exactly one copy: forwarded once, no forwarding loop.
                self.assertEqual(len(got), 1, out)
                self.assertDatagram(got[0], payload="proxied payload", group=g1, source=b_addr,
                                    interface=iface)
                self.assertEqual(got[0]["sport"], port)
        rc, out, err = self.finish(h)
        self.assertEqual(rc, 0, err)
        heard = json_lines(out)
        # HEAR saw the datagram on g2 once and skipped its own forwarded copy on g1.
        self.assertEqual([(d["group"], d["source"], d["payload"]) for d in heard],
                         [(g2, a_addr, "proxied payload")], out)


# ---- 7: loss statistics ------------------------------------------------------------------
class TestLossStats(McastTestCase):
    def drop_every_tenth(self, ns, hook, table, port):
        """An nftables rule in `ns` on `hook` dropping the 6th, 16th, 26th ... UDP datagram
        to `port`; returns the nft command prefix for that namespace."""
        nft = ["ip", "netns", "exec", ns, "nft"]
        _sh(nft + ["add", "table", "inet", table])
        self.addCleanup(_sh, nft + ["delete", "table", "inet", table], check=False)
        _sh(nft + ["add", "chain", "inet", table, "c",
                   f"{{ type filter hook {hook} priority 0; }}"])
        _sh(nft + ["add", "rule", "inet", table, "c", "udp", "dport", str(port),
                   "numgen", "inc", "mod", "10", "==", "5", "counter", "drop"])
        return nft

    def test_every_tenth_dropped(self):
        group, port = "239.7.7.7", 45001
        # In B's input path (a drop on A's output hook would fail the sender's sendmmsg with
        # EPERM): the 6th, 16th, 26th ... datagram, i.e. sequences 5, 15, ..., 995 are
        # dropped; sequences 0 and 999 arrive, so expected = 1000 and lost = 100 exactly.
        nft = self.drop_every_tenth(self.B, "input", "fmloss", port)
        r = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", group, "--port", str(port),
                                "--daemon", "--stats", "--timeout", "2"])
        self.wait_ready(self.B, r, port, IF_B, [group])
        t0 = time.monotonic()
        rc, out, err = self.flowmark(self.A, "say", "--group", group, "--port", str(port),
                                     "--iface", IF_A, "-m", "seq", "--count", "1000",
                                     "--interval", "0.0005", timeout=20)
        self.assertEqual(rc, 0, err)
        self.assertGreaterEqual(time.monotonic() - t0, 0.45)  # 999 intervals of 0.5 ms
        rc, out, err = self.finish(r, timeout=20)
        self.assertEqual(rc, 0, err)
        lines = json_lines(out)
        self.assertEqual(len(lines), 1, out)  # no --json/--use-std: just the statistics
        stats = lines[-1]
        self.assertEqual(stats["type"], "stats")
        self.assertEqual((stats["plain"], stats["truncated"]), (0, 0))
        self.assertEqual(len(stats["streams"]), 1, stats)
        s = stats["streams"][0]
        self.assertEqual((s["source"], s["group"]), (A4, group))
        self.assertEqual(s["first_seq"], 0)
        self.assertEqual(s["last_seq"], 999)
        self.assertEqual(s["expected"], 1000)
        self.assertEqual(s["received"], 900)
        self.assertEqual(s["unique"], 900)
        self.assertEqual(s["lost"], 100)
        self.assertAlmostEqual(s["loss_pct"], 10.0, places=3)
        self.assertEqual(s["duplicates"], 0)
        self.assertEqual(s["reordered"], 0)
        d = s["delay_us"]
        self.assertLessEqual(d["min"], d["avg"])
        self.assertLessEqual(d["avg"], d["max"])
        # The rule really dropped 100 packets (the tool's count agrees with the kernel's).
        ruleset = _sh(nft + ["list", "table", "inet", "fmloss"]).stdout
        self.assertRegex(ruleset, r"counter packets 100 ")

    def test_sender_side_refusals_are_counted_not_fatal(self):
        group, port = "239.7.7.8", 45002
        # A firewall rule on A's own output path refuses every 10th datagram (EPERM from
        # sendmmsg). SAY goes on with the rest, warns with the count and exits 1.
        self.drop_every_tenth(self.A, "output", "fmrefuse", port)
        r = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", group, "--port", str(port),
                                "--daemon", "--stats", "--timeout", "1"])
        self.wait_ready(self.B, r, port, IF_B, [group])
        rc, out, err = self.flowmark(self.A, "say", "--group", group, "--port", str(port),
                                     "--iface", IF_A, "-m", "seq", "--count", "1000", timeout=20)
        self.assertEqual(rc, 1, err)
        # sendmmsg reports a refusal part-way through a batch only as a short count; SAY
        # retries that datagram (numgen lets the retry through). A refusal of the first
        # datagram of a call is an error: that datagram is counted and skipped. So the
        # count SAY reports is exactly what the receiver misses.
        m = re.search(r"(\d+) of 1000 datagram\(s\) to 239.7.7.8:45002 refused by the local "
                      r"kernel .*Operation not permitted", err)
        self.assertIsNotNone(m, err)
        refused = int(m.group(1))
        self.assertGreater(refused, 0)
        rc, out, err = self.finish(r, timeout=20)
        self.assertEqual(rc, 0, err)
        s = json_lines(out)[-1]["streams"][0]
        self.assertEqual(s["lost"], refused, s)
        self.assertEqual(s["unique"], 1000 - refused, s)
        self.assertEqual(s["duplicates"], 0, s)


# ---- UDP GSO (say --gso) over a 1500-byte-MTU veth -------------------------------------------
class TestGso(McastTestCase):
    def stream(self, group, port, count, size, family_args=()):
        r = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", group, "--port", str(port),
                                "--iface", IF_B, "--daemon", "--stats", "--timeout", "1"])
        self.wait_ready(self.B, r, port, IF_B, [group])
        rc, _, err = self.flowmark(self.A, "say", "--group", group, "--port", str(port),
                                   "--iface", IF_A, "--count", str(count), "--size", str(size),
                                   "--gso", timeout=20)
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(r, timeout=20)
        self.assertEqual(rc, 0, err)
        streams = json_lines(out)[-1]["streams"]
        self.assertEqual(len(streams), 1, out)
        return streams[0]

    def test_equal_datagrams_arrive_one_by_one(self):
        # 1000 datagrams of 64 bytes leave in 16 GSO sends; B must see 1000 datagrams, in
        # order, none lost (a receiver that got super-packets would see far fewer).
        s = self.stream("239.8.8.1", 46001, 1000, 64)
        self.assertEqual((s["received"], s["unique"], s["lost"], s["reordered"]),
                         (1000, 1000, 0, 0), s)

    def test_ipv6(self):
        s = self.stream("ff05::8:1", 46002, 500, 200)
        self.assertEqual((s["received"], s["lost"]), (500, 0), s)

    def test_segments_larger_than_the_mtu_fall_back(self):
        # 3000-byte segments do not fit the 1500-byte path: the kernel refuses GSO for them
        # (EINVAL) and the sender falls back to sendmmsg (fragmented datagrams).
        s = self.stream("239.8.8.2", 46003, 20, 3000)
        self.assertEqual((s["received"], s["lost"]), (20, 0), s)


# ---- 8: jumbo datagrams and truncation ------------------------------------------------------
class TestJumbo(McastTestCase):
    MTU = 9000

    def recv_one(self, group, port, say_args, recv_extra=(), input=None, env=None):
        r = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", group, "--port", str(port),
                                "--json", "--timeout", "3", *recv_extra], env=env)
        self.wait_ready(self.B, r, port, IF_B, [group])
        rc, _, err = self.run_cmd(self.A, [FLOWMARK, "mcast", "say", "--group", group, "--port",
                                           str(port), "--iface", IF_A, *say_args],
                                  input=input, text=input is None)
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(r)
        self.assertEqual(rc, 0, err)
        lines = json_lines(out)
        self.assertEqual(len(lines), 1, out[:300])
        return lines[0], err

    def test_mtu_is_9000(self):
        out = _sh(["ip", "-n", self.B, "link", "show", IF_B]).stdout
        self.assertIn("mtu 9000", out)

    def test_9000_byte_message(self):
        d, _ = self.recv_one("239.8.8.1", 46001, ["-m", "J" * 9000])
        self.assertDatagram(d, payload="J" * 9000, group="239.8.8.1", source=A4, interface=IF_B)

    def test_size_pads_to_9000(self):
        d, _ = self.recv_one("239.8.8.2", 46002, ["--size", "9000", "-m", "abc"])
        self.assertEqual(d["size"], 9000)
        self.assertNotIn("truncated", d)
        self.assertEqual(len(d["payload"]), 9000)
        self.assertEqual(d["payload"], "abc" + "." * 8997)

    def test_binary_pipe_9000(self):
        data = bytes((i * 7 + 3) % 256 for i in range(9000))  # not valid UTF-8
        d, _ = self.recv_one("239.8.8.3", 46003,
                             ["--pipe", "--binary", "--buffer-size", "9000"], input=data)
        self.assertEqual(d["size"], 9000)
        self.assertNotIn("truncated", d)
        self.assertNotIn("payload", d)
        self.assertEqual(base64.b64decode(d["payload_base64"]), data)

    def test_small_buffer_reports_truncation(self):
        d, err = self.recv_one("239.8.8.4", 46004, ["-m", "T" * 9000],
                               recv_extra=["--buffer-size", "1000"])
        self.assertIs(d.get("truncated"), True, {k: v for k, v in d.items() if k != "payload"})
        self.assertEqual(d["size"], 9000)             # the real size, not the buffer's
        self.assertEqual(d["payload"], "T" * 1000)   # what fitted
        self.assertIn("truncated", err)

    def test_buffer_size_from_environment(self):
        d, _ = self.recv_one("239.8.8.5", 46005, ["-m", "E" * 9000],
                             env={"MULTICAST_BUFFER_SIZE": "4000"})
        self.assertIs(d.get("truncated"), True, {k: v for k, v in d.items() if k != "payload"})
        self.assertEqual((d["size"], len(d["payload"])), (9000, 4000))


# ---- 9: exit codes, errors, signals, environment ------------------------------------------
class TestErrorsNoNetwork(McastTestCase):
    """Validation failures: nothing is sent, so the default namespace is fine."""

    NEEDS_HOSTS = False

    def expect(self, code, args, env=None, mention=None):
        rc, out, err = self.run_cmd(None, [FLOWMARK, "mcast", *args], env=env, timeout=5)
        self.assertEqual(rc, code, f"{args}: stdout={out!r} stderr={err!r}")
        if mention:
            self.assertIn(mention, err)
        return err

    def test_unicast_group(self):
        for verb in (["say", "-m", "x"], ["recv", "--timeout", "0.2"], ["hear", "--timeout", "0.2"]):
            with self.subTest(verb=verb[0]):
                self.expect(2, [verb[0], "--group", "10.1.2.3", *verb[1:]],
                            mention="not a multicast group")
        self.expect(2, ["recv", "--groups", "239.1.1.1", "192.0.2.9", "--timeout", "0.2"],
                    mention="not a multicast group")
        self.expect(2, ["say", "-m", "x"], env={"MULTICAST_GROUP": "10.9.9.9"},
                    mention="MULTICAST_GROUP")

    def test_bad_port(self):
        self.expect(2, ["say", "--group", "239.1.1.1", "--port", "70000", "-m", "x"],
                    mention="70000")
        self.expect(2, ["recv", "--group", "239.1.1.1", "--port", "70000", "--timeout", "0.2"])
        self.expect(2, ["say", "--group", "239.1.1.1", "--port", "http", "-m", "x"])
        self.expect(2, ["say", "--group", "239.1.1.1", "-m", "x"], env={"MULTICAST_PORT": "0"})

    def test_unknown_interface(self):
        self.expect(68, ["say", "--group", "239.1.1.1", "--iface", "nosuch0", "-m", "x"],
                    mention="nosuch0")
        self.expect(68, ["recv", "--group", "239.1.1.1", "--iface", "nosuch0", "--timeout", "0.2"])
        self.expect(68, ["say", "--group", "239.1.1.1", "-m", "x"],
                    env={"MULTICAST_IFACE": "nosuch0"})

    def test_link_local_group_needs_interface(self):
        self.expect(2, ["say", "--group", "ff02::1", "-m", "x"], mention="--iface")
        self.expect(2, ["recv", "--group", "ff02::1:77", "--timeout", "0.2"], mention="--iface")

    def test_bad_ttl(self):
        self.expect(2, ["say", "--group", "239.1.1.1", "--ttl", "300", "-m", "x"], mention="300")
        self.expect(2, ["say", "--group", "239.1.1.1", "-m", "x"], env={"MULTICAST_TTL": "300"},
                    mention="MULTICAST_TTL")

    def test_usage_errors(self):
        self.expect(2, ["say", "--group", "239.1.1.1"])                       # no message
        self.expect(2, ["say", "--group", "239.1.1.1", "-m", "x", "--nosuchflag"])
        self.expect(2, ["say", "--group", "239.1.1.1", "-m", "x", "--binary"])
        self.expect(2, ["say", "--group", "239.1.1.1", "-m", "x" * 65508])    # > UDP maximum
        self.expect(2, ["recv", "--group", "239.1.1.1", "--timeout", "-1"])
        self.expect(2, ["recv", "--group", "239.1.1.1", "--source", "239.2.2.2"])

    def test_help_documents_exit_codes(self):
        rc, out, _ = self.run_cmd(None, [FLOWMARK, "mcast", "recv", "--help"])
        self.assertEqual(rc, 0)
        for code in ("68", "130", "MULTICAST_PORT"):
            self.assertIn(code, out)


class TestExitCodesAndEnvironment(McastTestCase):
    def test_timeout_with_nothing_received_exits_1(self):
        t0 = time.monotonic()
        rc, out, err = self.flowmark(self.B, "recv", "--group", "239.9.0.1", "--port", "47001",
                                     "--timeout", "0.3", "--json")
        self.assertEqual(rc, 1, err)
        self.assertEqual(out, "")
        self.assertIn("nothing received", err)
        self.assertLess(time.monotonic() - t0, 2.5)

    def test_sigint_exits_130_and_sigterm_143(self):
        for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            with self.subTest(signal=sig.name):
                r = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--group", "239.9.0.2",
                                        "--port", "47002", "--daemon", "--json"])
                self.wait_ready(self.B, r, 47002, IF_B, ["239.9.0.2"])  # signals blocked
                r.send_signal(sig)
                rc, out, err = self.finish(r, timeout=5)
                self.assertEqual(rc, code, err)
                self.assertEqual(out, "")

    def test_kernel_refusals_exit_69(self):
        # A fresh namespace's lo has multicast off; 192.0.2.99 is not a local address.
        for args in (["say", "--group", "239.9.0.9", "--iface", "lo", "-m", "x"],
                     ["recv", "--group", "239.9.0.9", "--iface", "lo", "--timeout", "0.2"],
                     ["say", "--group", "239.9.0.9", "--bind", "192.0.2.99", "-m", "x"],
                     ["recv", "--group", "239.9.0.9", "--bind", "192.0.2.99", "--timeout", "0.2"]):
            with self.subTest(args=args):
                rc, out, err = self.flowmark(self.B, *args)
                self.assertEqual(rc, 69, err)
                self.assertEqual(out, "")

    def test_mixed_families_exit_2(self):
        rc, _, err = self.flowmark(self.B, "recv", "--groups", "239.9.0.9", "ff05::9",
                                   "--iface", IF_B, "--timeout", "0.2")
        self.assertEqual(rc, 2, err)
        rc, _, err = self.flowmark(self.B, "say", "--group", "239.9.0.9", "--bind", B6, "-m", "x")
        self.assertEqual(rc, 2, err)

    def recv_one(self, port_to_wait, recv_args, env, sends):
        r = self.spawn(self.B, [FLOWMARK, "mcast", "recv", "--json", "--timeout", "3",
                                *recv_args], env=env)
        self.wait_ready(self.B, r, port_to_wait, IF_B, ["239.9.0.3"])
        for args, say_env in sends:
            rc, _, err = self.flowmark(self.A, "say", "--group", "239.9.0.3", "--iface", IF_A,
                                       *args, env=say_env)
            self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(r)
        self.assertEqual(rc, 0, err)
        lines = json_lines(out)
        self.assertEqual(len(lines), 1, out)
        return lines[0]

    def test_multicast_port_from_environment(self):
        env = {"MULTICAST_PORT": "47003"}
        # A decoy to the default port first: a receiver on 59559 would print it.
        d = self.recv_one(47003, ["--group", "239.9.0.3"], env,
                          [(["--port", "59559", "-m", "decoy"], None),
                           (["-m", "via-env"], env)])  # SAY takes its port from the env too
        self.assertEqual(d["payload"], "via-env")
        self.assertEqual(d["group"], "239.9.0.3")

    def test_port_flag_beats_environment(self):
        env = {"MULTICAST_PORT": "47004"}
        d = self.recv_one(47005, ["--group", "239.9.0.3", "--port", "47005"], env,
                          [(["--port", "47004", "-m", "decoy"], None),
                           (["-m", "via-flag", "--port", "47005"], env)])
        self.assertEqual(d["payload"], "via-flag")

    def test_group_from_environment(self):
        env = {"MULTICAST_GROUP": "239.9.0.3", "MULTICAST_PORT": "47006"}
        d = self.recv_one(47006, [], env, [(["-m", "group-env"], env)])
        self.assertEqual((d["payload"], d["group"]), ("group-env", "239.9.0.3"))


# ---- 10: the `multicast` compatibility grammar ------------------------------------------------
class TestMulticastGrammar(McastTestCase):
    GROUP, PORT = "239.1.1.2", 5353

    def seed_recv(self, verb="RECV", extra=()):
        r = self.spawn(self.B, [MULTICAST, verb, "--use-std", "--port", str(self.PORT),
                                "--join-mcast-groups", self.GROUP, "--bind-group", self.GROUP,
                                *extra])
        self.wait_ready(self.B, r, self.PORT, IF_B, [self.GROUP])
        return r

    def test_say_recv_readme_example(self):
        r = self.seed_recv()
        rc, out, err = self.run_cmd(self.A, [MULTICAST, "SAY", "--mcast-group", self.GROUP,
                                             "--port", str(self.PORT), "--message", "Hello World!"],
                                    env={"MULTICAST_IFACE": IF_A})
        self.assertEqual((rc, out), (0, ""), err)
        rc, out, err = self.finish(r, timeout=5)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "Hello World!\n")

    def test_message_words_are_joined(self):
        r = self.seed_recv()
        rc, _, err = self.run_cmd(self.A, [MULTICAST, "SAY", "--mcast-group", self.GROUP,
                                           "--port", str(self.PORT), "--message", "Hello",
                                           "World!"])  # by the namespace's 224.0.0.0/4 route
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(r, timeout=5)
        self.assertEqual((rc, out), (0, "Hello World!\n"), err)

    def test_pipe_sends_one_datagram_per_line(self):
        r = self.seed_recv(extra=["--daemon"])
        rc, _, err = self.run_cmd(self.A, [MULTICAST, "SAY", "--mcast-group", self.GROUP,
                                           "--port", str(self.PORT), "--pipe"],
                                  input="first line\nsecond line\n")
        self.assertEqual(rc, 0, err)
        wait_stdout(r, lambda out: out.count("\n") >= 2, what="both lines received")
        r.send_signal(signal.SIGINT)
        rc, out, err = self.finish(r, timeout=5)
        self.assertEqual(rc, 130, err)
        self.assertEqual(out, "first line\nsecond line\n")

    def test_hear_answers(self):
        h = self.seed_recv("HEAR")
        rc, out, err = self.run_cmd(self.A, [MULTICAST, "SAY", "--mcast-group", self.GROUP,
                                             "--port", str(self.PORT), "--message", "Hello World!",
                                             "--wait-reply", "--timeout", "1"])
        self.assertEqual(rc, 0, err)
        self.assertRegex(out.strip(), REPLY_RE.format(text=re.escape("HELLO WORLD!"),
                                                      ip=re.escape(A4),
                                                      group=re.escape(self.GROUP)))
        rc, hout, herr = self.finish(h, timeout=5)
        self.assertEqual(rc, 0, herr)
        self.assertEqual(hout, "Hello World!\n")

    def say_and_reply(self, text, port=None):
        """SAY `text` from A with --wait-reply; returns the reply lines."""
        rc, out, err = self.run_cmd(self.A, [MULTICAST, "SAY", "--mcast-group", self.GROUP,
                                             "--port", str(port or self.PORT), "--message", text,
                                             "--wait-reply", "--timeout", "1"])
        self.assertEqual(rc, 0, err)
        return out.splitlines()

    def test_hear_daemon_stops_on_a_datagram_containing_stop(self):
        # The Python tool's HEAR answers, then shuts down with exit 0 on any datagram
        # containing STOP; `multicast HEAR --daemon` does the same.
        h = self.seed_recv("HEAR", extra=["--daemon"])
        self.assertEqual(len(self.say_and_reply("first")), 1)
        self.assertEqual(h.poll(), None)  # answered, still running
        replies = self.say_and_reply("please STOP now")
        self.assertEqual(len(replies), 1, replies)
        self.assertRegex(replies[0], REPLY_RE.format(text="PLEASE STOP NOW", ip=re.escape(A4),
                                                     group=re.escape(self.GROUP)))
        rc, out, err = self.finish(h, timeout=5)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "first\nplease STOP now\n")

    def test_hear_stop_word_replaces_stop(self):
        h = self.seed_recv("HEAR", extra=["--daemon", "--stop-word", "QUIT"])
        self.say_and_reply("STOP")
        self.assertEqual(len(self.say_and_reply("still there?")), 1)  # STOP did not end it
        self.assertEqual(h.poll(), None)
        self.say_and_reply("QUIT")
        rc, out, err = self.finish(h, timeout=5)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "STOP\nstill there?\nQUIT\n")

    def test_flowmark_mcast_hear_stops_only_with_stop_word(self):
        # Without --stop-word anyone on the group could end the daemon: it runs on.
        port = self.PORT + 1
        h = self.spawn(self.B, [FLOWMARK, "mcast", "hear", "--group", self.GROUP, "--port",
                                str(port), "--daemon", "--use-std"])
        self.wait_ready(self.B, h, port, IF_B, [self.GROUP])
        self.say_and_reply("STOP", port)
        self.assertEqual(len(self.say_and_reply("after STOP", port)), 1)
        self.assertEqual(h.poll(), None)
        h.send_signal(signal.SIGINT)
        rc, out, err = self.finish(h, timeout=5)
        self.assertEqual(rc, 130, err)
        self.assertEqual(out, "STOP\nafter STOP\n")
        # With --stop-word the word ends it, after its reply, with exit 0.
        h = self.spawn(self.B, [FLOWMARK, "mcast", "hear", "--group", self.GROUP, "--port",
                                str(port), "--daemon", "--use-std", "--stop-word", "END"])
        self.wait_ready(self.B, h, port, IF_B, [self.GROUP])
        self.assertEqual(len(self.say_and_reply("THE END", port)), 1)
        rc, out, err = self.finish(h, timeout=5)
        self.assertEqual((rc, out), (0, "THE END\n"), err)
        rc, _, err = self.run_cmd(self.B, [FLOWMARK, "mcast", "hear", "--stop-word", ""])
        self.assertEqual(rc, 2, err)
        self.assertIn("--stop-word", err)

    def test_lower_case_verbs_and_flowmark_multicast(self):
        r = self.spawn(self.B, [FLOWMARK, "multicast", "recv", "--use-std", "--port",
                                str(self.PORT), "--bind-group", self.GROUP])
        self.wait_ready(self.B, r, self.PORT, IF_B, [self.GROUP])
        rc, _, err = self.run_cmd(self.A, [MULTICAST, "say", "--mcast-group", self.GROUP,
                                           "--port", str(self.PORT), "-m", "lower"])
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(r, timeout=5)
        self.assertEqual((rc, out), (0, "lower\n"), err)

    def test_noop_version_and_bad_verb(self):
        self.assertEqual(self.run_cmd(None, [MULTICAST, "NOOP"])[0], 0)
        rc, out, _ = self.run_cmd(None, [MULTICAST, "--version"])
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"multicast .*\d+\.\d+")
        self.assertEqual(self.run_cmd(None, [MULTICAST, "-v"])[0], 0)
        rc, _, err = self.run_cmd(None, [MULTICAST, "SHOUT"])
        self.assertEqual(rc, 2, err)
        rc, _, err = self.run_cmd(None, [MULTICAST])
        self.assertEqual(rc, 2, err)


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
