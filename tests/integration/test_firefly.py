#!/usr/bin/env python3
"""Integration tests of `flowmark firefly send|listen|decode`.

    python3 tests/integration/test_firefly.py BUILD_DIR [unittest options]

BUILD_DIR holds the `flowmark` binary. Needs root for the network tests: every test class
that sends builds its own two "hosts" — network namespaces A and B joined by a veth pair
(vethA in A, vethB in B) with IPv4 and IPv6 addresses (no duplicate address detection) and
a 224.0.0.0/4 route — and deletes them afterwards, even when a test fails. The decode and
usage tests need no network. Python 3 stdlib only.
"""

import base64
import datetime
import json
import os
import re
import signal
import sys
import tempfile
import time
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_firefly.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")
SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIREFLY_DATA = os.path.join(SOURCE_DIR, "tests", "data", "fireflies")

A4, B4 = "10.78.0.1", "10.78.0.2"
A6, B6 = "fd78::1", "fd78::2"
IF_A, IF_B = "vethA", "vethB"
REASONS = ["empty", "bad_header", "not_json", "not_object", "missing_field", "wrong_type",
           "unknown_key", "bad_version", "unknown_state", "unknown_protocol", "unknown_afi",
           "bad_address", "afi_mismatch", "port_out_of_range", "bad_time", "missing_end_time",
           "bad_number", "too_large"]

import netns_helpers
from netns_helpers import NetnsProcesses, VethHosts, wait_stdout, wait_udp_ready


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class FireflyTestCase(NetnsProcesses, unittest.TestCase):
    NEEDS_HOSTS = True

    @classmethod
    def setUpClass(cls):
        if not os.access(FLOWMARK, os.X_OK):
            raise RuntimeError(f"{FLOWMARK} is missing: build first")
        if cls.NEEDS_HOSTS:
            if os.geteuid() != 0:
                raise unittest.SkipTest("needs root (network namespaces)")
            cls.hosts = VethHosts("ff", (IF_A, A4, A6), (IF_B, B4, B6))
            cls.addClassCleanup(cls.hosts.destroy)  # runs even if create() fails half-way
            cls.hosts.create()
            cls.A, cls.B = cls.hosts.a, cls.hosts.b

    # ---- processes (run_cmd, spawn, finish: NetnsProcesses) ---------------------------
    def firefly(self, ns, *args, **kw):
        return self.run_cmd(ns, [FLOWMARK, "firefly", *args], **kw)


    def listen(self, port, *extra, sockets=None, dev=None, groups=()):
        """Starts `firefly listen` in B on `port`; waits until it is ready."""
        p = self.spawn(self.B, [FLOWMARK, "firefly", "listen", "--port", str(port), *extra])
        if sockets is None:
            sockets = 1 if ("--bind" in extra or "--group" in extra) else 2
        wait_udp_ready(self, self.B, p, port, sockets, dev or IF_B, groups)
        return p

    def udp_from_a(self, family, dst, port, payloads):
        """Sends raw datagrams from namespace A (python sockets, in a child process)."""
        script = ("import socket, sys, base64\n"
                  f"s = socket.socket(socket.{family}, socket.SOCK_DGRAM)\n"
                  "for line in sys.stdin.read().split():\n"
                  f"    s.sendto(base64.b64decode(line), ({dst!r}, {port}))\n")
        data = "\n".join(base64.b64encode(p).decode() for p in payloads)
        rc, _, err = self.run_cmd(self.A, [sys.executable, "-c", script], input=data)
        self.assertEqual(rc, 0, err)

    # ---- checks ----------------------------------------------------------------------
    def assertFirefly(self, line, *, sender, state, afi, src, sport, dst, dport, exp, act,
                      protocol="tcp", start=None):
        self.assertEqual(line.get("sender"), sender, line)
        self.assertIsInstance(line.get("sport"), int, line)
        self.assertGreater(line["sport"], 0, line)
        f = line["firefly"]
        self.assertEqual(f["version"], 1, f)
        lc = f["flow-lifecycle"]
        self.assertEqual(lc["state"], state, f)
        now = datetime.datetime.now(datetime.timezone.utc)
        current = parse_time(lc["current-time"])
        self.assertLess(abs((now - current).total_seconds()), 60, f)
        self.assertIn("start-time", lc, f)
        if start is None:
            self.assertLess(abs((now - parse_time(lc["start-time"])).total_seconds()), 60, f)
        else:
            self.assertEqual(lc["start-time"], start, f)
        if state == "end":
            self.assertLess(abs((now - parse_time(lc["end-time"])).total_seconds()), 60, f)
        else:
            self.assertNotIn("end-time", lc, f)
        self.assertEqual(f["flow-id"], {"afi": afi, "src-ip": src, "dst-ip": dst,
                                        "protocol": protocol, "src-port": sport,
                                        "dst-port": dport}, f)
        self.assertEqual(f["context"], {"experiment-id": exp, "activity-id": act,
                                        "application": "flowmark"}, f)
        self.assertNotIn("usage", f)


# ---- send in A -> listen in B --------------------------------------------------------------
class TestSendListen(FireflyTestCase):
    def test_ipv4_to_the_flows_destination(self):
        p = self.listen(10514, "--count", "1", "--timeout", "5")
        rc, out, err = self.firefly(self.A, "send", "start", "tcp", A4, "2345", B4, "5777", "2",
                                    "1")
        self.assertEqual((rc, out), (0, ""), err)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        lines = json_lines(out)
        self.assertEqual(len(lines), 1, out)
        self.assertFirefly(lines[0], sender=A4, state="start", afi="ipv4", src=A4, sport=2345,
                           dst=B4, dport=5777, exp=2, act=1)

    def test_ipv6_end_with_start_time(self):
        p = self.listen(10514, "--count", "1", "--timeout", "5")
        rc, out, err = self.firefly(self.A, "send", "--start-time", "2025-03-25T10:00:00Z",
                                    "end", "udp", A6, "40000", B6, "443", "3", "1")
        self.assertEqual((rc, out), (0, ""), err)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        lines = json_lines(out)
        self.assertEqual(len(lines), 1, out)
        self.assertFirefly(lines[0], sender=A6, state="end", afi="ipv6", src=A6, sport=40000,
                           dst=B6, dport=443, exp=3, act=1, protocol="udp",
                           start="2025-03-25T10:00:00.000000+00:00")

    def test_names_from_the_builtin_registry(self):
        p = self.listen(10514, "--bind", B4, "--count", "1", "--timeout", "5")
        rc, _, err = self.firefly(self.A, "send", "ongoing", "tcp", A4, "2345", B4, "5777",
                                  "atlas", "perfSONAR")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        self.assertFirefly(json_lines(out)[0], sender=A4, state="ongoing", afi="ipv4", src=A4,
                           sport=2345, dst=B4, dport=5777, exp=2, act=2)

    def test_to_and_collector_copies(self):
        # --to replaces the destination; --collector adds a copy (IPv6 for an IPv4 flow).
        p1 = self.listen(20001, "--bind", B4, "--count", "1", "--timeout", "5")
        p2 = self.listen(20002, "--bind", B6, "--count", "1", "--timeout", "5")
        rc, _, err = self.firefly(self.A, "send", "--to", f"{B4}:20001", "--collector",
                                  f"[{B6}]:20002", "start", "tcp", "192.0.2.1", "1",
                                  "192.0.2.2", "2", "cms", "default")
        self.assertEqual(rc, 0, err)
        for p, sender in ((p1, A4), (p2, A6)):
            rc, out, err = self.finish(p)
            self.assertEqual(rc, 0, err)
            self.assertFirefly(json_lines(out)[0], sender=sender, state="start", afi="ipv4",
                               src="192.0.2.1", sport=1, dst="192.0.2.2", dport=2, exp=3, act=1)

    def test_ipv4_multicast_group(self):
        group = "239.78.1.1"
        p = self.listen(20003, "--group", group, "--count", "1", "--timeout", "5",
                        groups=[group])
        rc, _, err = self.firefly(self.A, "send", "--collectors-only", "--collector",
                                  f"{group}:20003", "--iface", IF_A, "--ttl", "2", "start",
                                  "tcp", A4, "1000", B4, "2000", "5", "2")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        self.assertFirefly(json_lines(out)[0], sender=A4, state="start", afi="ipv4", src=A4,
                           sport=1000, dst=B4, dport=2000, exp=5, act=2)

    def test_ipv6_link_local_group_with_scope(self):
        group = "ff02::78:1"
        p = self.listen(20004, "--group", group, "--iface", IF_B, "--count", "1", "--timeout",
                        "5", groups=[group])
        rc, _, err = self.firefly(self.A, "send", "--collectors-only", "--collector",
                                  f"[{group}%{IF_A}]:20004", "start", "tcp", A6, "1000", B6,
                                  "2000", "2", "1")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        self.assertFirefly(json_lines(out)[0], sender=self.hosts.link_local[self.A],
                           state="start", afi="ipv6", src=A6, sport=1000, dst=B6, dport=2000,
                           exp=2, act=1)

    def test_ipv6_site_local_group(self):
        group = "ff05::78:2"
        p = self.listen(20005, "--group", group, "--iface", IF_B, "--count", "1", "--timeout",
                        "5", groups=[group])
        rc, _, err = self.firefly(self.A, "send", "--collectors-only", "--collector",
                                  f"[{group}]:20005", "--iface", IF_A, "start", "tcp", A6, "1000",
                                  B6, "2000", "2", "1")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        self.assertFirefly(json_lines(out)[0], sender=A6, state="start", afi="ipv6", src=A6,
                           sport=1000, dst=B6, dport=2000, exp=2, act=1)

    def test_stdin_pipe_lines_one_bad(self):
        p = self.listen(10514, "--count", "2", "--timeout", "5")
        lines = (f"start tcp {A4} 1001 {B4} 5777 atlas perfSONAR\n"
                 f"start tpc {A4} 1002 {B4} 5777 1 2\n"
                 f"\n"
                 f"end\tudp  {A6} 1003 {B6}   5777 2 1\r\n")
        rc, out, err = self.firefly(self.A, "send", input=lines)
        self.assertEqual(rc, 1, err)
        self.assertEqual(out, "")
        self.assertIn("line 2", err)
        self.assertIn("token 2 (protocol)", err)
        self.assertNotIn("line 1", err)
        self.assertNotIn("line 4", err)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        got = json_lines(out)
        self.assertEqual(len(got), 2, out)
        by_port = {g["firefly"]["flow-id"]["src-port"]: g for g in got}
        self.assertEqual(sorted(by_port), [1001, 1003])
        self.assertFirefly(by_port[1001], sender=A4, state="start", afi="ipv4", src=A4,
                           sport=1001, dst=B4, dport=5777, exp=2, act=2)
        self.assertFirefly(by_port[1003], sender=A6, state="end", afi="ipv6", src=A6,
                           sport=1003, dst=B6, dport=5777, exp=2, act=1, protocol="udp")

    def test_stdin_all_good_exits_0(self):
        p = self.listen(10514, "--count", "3", "--timeout", "5", "--format", "text")
        lines = "".join(f"start tcp {A4} {1100 + i} {B4} 5777 2 1\n" for i in range(3))
        rc, _, err = self.firefly(self.A, "send", input=lines)
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        text = out.splitlines()
        self.assertEqual(len(text), 3, out)
        for line in text:
            self.assertRegex(line, rf"^{re.escape(A4)}:\d+ start tcp {re.escape(A4)}:11\d\d -> "
                                   rf"{re.escape(B4)}:5777 exp 2/atlas act 1/default start "
                                   r"\d{4}-\d\d-\d\dT")


# ---- rejects, statistics, signals, timeouts ------------------------------------------------
def firefly_doc(**over):
    """A firefly from A4:1 to B4:2 (netns_helpers.firefly_doc)."""
    return netns_helpers.firefly_doc(A4, B4, **over)


class TestRejects(FireflyTestCase):
    def test_stats_count_rejects_by_reason(self):
        p = self.listen(20010, "--stats", "--count", "6", "--timeout", "5")
        payloads = [b"hello", b"{not json", firefly_doc(flow_id={"src-port": 70000}),
                    b"<134>1 - h app - other-msg - {}", firefly_doc(),
                    firefly_doc(flow_lifecycle={"state": "paused"})]
        self.udp_from_a("AF_INET", B4, 20010, payloads)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        lines = json_lines(out)
        self.assertEqual(len(lines), 2, out)  # one firefly, then the stats
        self.assertEqual(lines[0]["sender"], A4)
        stats = lines[1]
        self.assertEqual(stats["type"], "stats")
        self.assertEqual((stats["received"], stats["accepted"]), (6, 1), stats)
        self.assertEqual(sorted(stats["rejected"]), sorted(REASONS))
        want = {"bad_header": 2, "not_json": 1, "port_out_of_range": 1, "unknown_state": 1}
        for reason in REASONS:
            self.assertEqual(stats["rejected"][reason], want.get(reason, 0), reason)
        # Each reject is logged with the sender and the detail.
        self.assertIn(f"from {A4}:", err)
        self.assertIn("port_out_of_range: flow-id.src-port: 70000", err)
        self.assertIn("unknown_state", err)

    def test_reject_log_is_rate_limited(self):
        p = self.listen(20011, "--stats", "--count", "60", "--timeout", "5")
        self.udp_from_a("AF_INET6", B6, 20011, [b"garbage %d" % i for i in range(60)])
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        stats = json_lines(out)[-1]
        self.assertEqual(stats["rejected"]["bad_header"], 60, stats)
        shown = [line for line in err.splitlines() if "rejected datagram from" in line]
        self.assertLessEqual(len(shown), 20, err)  # 10 a second; the run may span two seconds
        self.assertRegex(err, r"\d+ more rejected datagram\(s\) not shown")

    def test_garbage_from_mcast_say_to_a_group(self):
        group = "239.78.1.5"
        p = self.listen(20012, "--group", group, "--stats", "--count", "1", "--timeout", "5",
                        groups=[group])
        rc, _, err = self.run_cmd(self.A, [FLOWMARK, "mcast", "say", "--group", group, "--port",
                                           "20012", "-m", "not a firefly"])
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        stats = json_lines(out)[-1]
        self.assertEqual((stats["received"], stats["accepted"]), (1, 0), stats)
        self.assertEqual(stats["rejected"]["bad_header"], 1, stats)

    def test_sigint_130_and_sigterm_143_with_stats(self):
        for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
            with self.subTest(signal=sig.name):
                p = self.listen(20013, "--stats")
                rc, _, err = self.firefly(self.A, "send", "--to", f"{B4}:20013", "start", "tcp",
                                          A4, "1", B4, "2", "2", "1")
                self.assertEqual(rc, 0, err)
                wait_stdout(p, lambda out: '"sender"' in out, what="the firefly printed")
                p.send_signal(sig)
                rc, out, err = self.finish(p, timeout=5)
                self.assertEqual(rc, code, err)
                lines = json_lines(out)
                self.assertEqual(len(lines), 2, out)
                self.assertEqual(lines[0]["sender"], A4)
                self.assertEqual(lines[1]["type"], "stats")
                self.assertEqual((lines[1]["received"], lines[1]["accepted"]), (1, 1))

    def test_timeout(self):
        t0 = time.monotonic()
        rc, out, err = self.firefly(self.B, "listen", "--port", "20014", "--timeout", "0.3",
                                    "--stats")
        self.assertEqual(rc, 1, err)
        self.assertIn("no datagram received", err)
        self.assertEqual(json_lines(out)[-1]["received"], 0)
        self.assertLess(time.monotonic() - t0, 3)
        # Something received, then silence: 0.
        p = self.listen(20015, "--timeout", "0.5")
        rc, _, err = self.firefly(self.A, "send", "--to", f"{B4}:20015", "start", "tcp", A4, "1",
                                  B4, "2", "2", "1")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.finish(p)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(json_lines(out)), 1)

    def test_port_in_use_exits_69(self):
        p = self.listen(20016, "--bind", B4)
        rc, _, err = self.firefly(self.B, "listen", "--bind", B4, "--port", "20016",
                                  "--timeout", "0.2")
        self.assertEqual(rc, 69, err)
        self.assertIn("20016", err)
        p.kill()


# ---- decode and usage (no network) ---------------------------------------------------------
class TestDecodeAndUsage(FireflyTestCase):
    NEEDS_HOSTS = False

    def test_decode_the_sample_fireflies(self):
        files = sorted(os.path.join(FIREFLY_DATA, f) for f in os.listdir(FIREFLY_DATA))
        self.assertGreaterEqual(len(files), 4)
        rc, out, err = self.firefly(None, "decode", *files)
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "")
        docs = json_lines(out)
        self.assertEqual(len(docs), len(files))
        for d in docs:
            self.assertEqual(d["version"], 1)
            self.assertIn("start-time", d["flow-lifecycle"])
        # And from standard input.
        with open(files[0]) as f:
            rc, out2, err = self.firefly(None, "decode", input=f.read())
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(json_lines(out2)), 1)

    def test_decode_reports_invalid_lines(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(firefly_doc().decode() + "\n\n")
            f.write(firefly_doc(flow_id={"dst-port": 0}).decode() + "\n")
            f.write(firefly_doc(context={"activity-id": 7}).decode() + "\n")
            path = f.name
        self.addCleanup(os.unlink, path)
        rc, out, err = self.firefly(None, "decode", path)
        self.assertEqual(rc, 1, err)
        self.assertEqual([d["context"]["activity-id"] for d in json_lines(out)], [1, 7])
        self.assertEqual(err.strip(),
                         f"{path}:3: port_out_of_range: flow-id.dst-port: 0 is out of range "
                         "1..65535")

    def test_decode_missing_file_66(self):
        rc, out, err = self.firefly(None, "decode", os.path.join(FIREFLY_DATA, "bare_start.json"),
                                    "/nonexistent/fireflies.txt")
        self.assertEqual(rc, 66, err)
        self.assertEqual(len(json_lines(out)), 1)  # the readable file is still decoded
        self.assertIn("/nonexistent/fireflies.txt", err)

    def test_send_usage_errors_exit_2(self):
        cases = [
            (["start", "tcp", "10.0.0.1", "1", "10.0.0.2", "2", "1"], "expected 8 arguments"),
            (["start", "tpc", "10.0.0.1", "1", "10.0.0.2", "2", "1", "1"], "token 2 (protocol)"),
            (["start", "tcp", "10.0.0.1", "0", "10.0.0.2", "2", "1", "1"], "token 4 (src_port)"),
            (["start", "tcp", "10.0.0.1", "1", "fd00::2", "2", "1", "1"], "token 5 (dst_ip)"),
            (["start", "tcp", "10.0.0.1", "1", "10.0.0.2", "2", "nope", "1"],
             "token 7 (experiment)"),
            (["--collector", "10.0.0.300", "start", "tcp", "10.0.0.1", "1", "10.0.0.2", "2",
              "1", "1"], "10.0.0.300"),
            (["--collector", "ff02::1", "start", "tcp", "10.0.0.1", "1", "10.0.0.2", "2", "1",
              "1"], "interface"),
            (["--start-time", "yesterday", "start", "tcp", "10.0.0.1", "1", "10.0.0.2", "2", "1",
              "1"], "--start-time"),
            (["--collectors-only", "start", "tcp", "10.0.0.1", "1", "10.0.0.2", "2", "1", "1"],
             "--collector"),
            (["--bogus"], "bogus"),
        ]
        for args, mention in cases:
            with self.subTest(args=args):
                rc, _, err = self.firefly(None, "send", *args)
                self.assertEqual(rc, 2, err)
                self.assertIn(mention, err)

    def test_help_documents_exit_codes(self):
        for verb, codes in (("send", ["0", "1", "2", "66"]), ("listen", ["130", "143", "69"]),
                            ("decode", ["66", "FILE:LINE"])):
            with self.subTest(verb=verb):
                rc, out, _ = self.firefly(None, verb, "--help")
                self.assertEqual(rc, 0)
                self.assertIn("Exit codes", out)
                for c in codes:
                    self.assertIn(c, out)


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
