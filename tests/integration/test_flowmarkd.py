#!/usr/bin/env python3
"""Integration tests of the flowmarkd service, in network namespaces.

    python3 tests/integration/test_flowmarkd.py BUILD_DIR [unittest options]

BUILD_DIR holds `flowmarkd` and `flowmark`. Needs root. One site is built for the whole
module: hosts A, B and C (network namespaces) on one LAN, each joined by a veth pair to a
bridge in a switch namespace (multicast snooping off, so group traffic floods to every
host), with IPv4 and IPv6 addresses and a 224.0.0.0/4 route. flowmarkd runs in A; the
`flowmark firefly listen` collectors run in B (and C). Every process and namespace is
removed at the end, even when a test fails or the interpreter is interrupted.

Reusable pieces (for tests of other sources and backends): Site (the hosts), Proc (a
process whose output lines are read as they come), Collector (`firefly listen`), Flowmarkd
(a config written from dicts, start/ready, SIGHUP, SIGTERM and the exit counters), toml().
Python 3 stdlib only.
"""

import atexit
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_flowmarkd.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")
FLOWMARKD = os.path.join(BUILD_DIR, "flowmarkd")

from netns_helpers import (_default_sigint, _delete_namespace, _live_namespaces, _sh, firefly_doc,
                           wait_signals_handled, write_pipe)

IFACE = "eth0"


# ---- the site ------------------------------------------------------------------------------
class Site:
    """Hosts on one LAN: namespace per host, each with `eth0` (a veth whose peer is a port of
    bridge br0 in the switch namespace). Host i (1-based) has 10.79.0.i/24 and fd79::i/64."""

    _serial = 0

    def __init__(self, names=("A", "B", "C"), v4_prefix="10.79.0.", v6_prefix="fd79::"):
        Site._serial += 1
        tag = f"{os.getpid()}n{Site._serial}"
        self.sw = f"fmdSW{tag}"
        self.ns = {n: f"fmd{n}{tag}" for n in names}
        self.v4 = {n: f"{v4_prefix}{i + 1}" for i, n in enumerate(names)}
        self.v6 = {n: f"{v6_prefix}{i + 1}" for i, n in enumerate(names)}

    def create(self):
        for ns in [self.sw, *self.ns.values()]:
            _sh(["ip", "netns", "add", ns])
            _live_namespaces.add(ns)
        _sh(["ip", "-n", self.sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        _sh(["ip", "-n", self.sw, "link", "set", "br0", "up"])
        for name, ns in self.ns.items():
            port = f"p{name}"
            _sh(["ip", "-n", self.sw, "link", "add", port, "type", "veth", "peer", "name", IFACE,
                 "netns", ns])
            _sh(["ip", "-n", self.sw, "link", "set", port, "master", "br0"])
            _sh(["ip", "-n", self.sw, "link", "set", port, "up"])
            _sh(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{IFACE}.accept_dad=0"])
            _sh(["ip", "-n", ns, "addr", "add", f"{self.v4[name]}/24", "dev", IFACE])
            _sh(["ip", "-n", ns, "-6", "addr", "add", f"{self.v6[name]}/64", "dev", IFACE, "nodad"])
            _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            _sh(["ip", "-n", ns, "link", "set", IFACE, "up"])
            _sh(["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", IFACE])
        # Neighbour discovery and ARP work once the links are up; wait for B to answer A.
        first = next(iter(self.ns))
        for name in self.ns:
            if name != first:
                self.wait_ping(first, self.v4[name])

    def wait_ping(self, host, addr):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _sh(self.argv(host, ["ping", "-c1", "-W1", addr]), check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{addr} does not answer from {host}")

    def argv(self, host, args):
        return ["ip", "netns", "exec", self.ns[host], *args]

    def destroy(self):
        for ns in [*self.ns.values(), self.sw]:
            _delete_namespace(ns)


# ---- processes -----------------------------------------------------------------------------
_live_procs = []


@atexit.register  # registered after netns_helpers: runs before the namespaces are deleted
def _kill_all():
    for p in list(_live_procs):
        p.kill()


class Proc:
    """A process whose stdout and stderr lines are collected by threads as they come."""

    def __init__(self, argv, stdin=subprocess.DEVNULL):
        self.argv = argv
        self.p = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
        self.pid = self.p.pid
        self.out, self.err = [], []
        self._cv = threading.Condition()
        self._threads = [threading.Thread(target=self._read, args=(s, l), daemon=True)
                         for s, l in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self._threads:
            t.start()
        _live_procs.append(self)

    def _read(self, stream, lines):
        for line in stream:
            with self._cv:
                lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def wait_for(self, pred, timeout, what):
        """Waits until pred() (called under the lock) is true; fails with `what`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{what}: not within {timeout} s; {self.describe()}")
                self._cv.wait(min(left, 0.1))

    def wait_err(self, regex, timeout=10, start=0):
        """Waits for a stderr line matching regex (from line `start` on); returns it."""
        r = re.compile(regex)
        found = []

        def pred():
            found[:] = [l for l in self.err[start:] if r.search(l)]
            return bool(found) or (self.p.poll() is not None and not self._alive_readers())
        self.wait_for(pred, timeout, f"stderr line /{regex}/")
        if not found:
            raise AssertionError(f"exited before logging /{regex}/: {self.describe()}")
        return found[0]

    def _alive_readers(self):
        return any(t.is_alive() for t in self._threads)

    def running(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.running():
            self.p.send_signal(sig)

    def wait(self, timeout):
        """Waits for the exit (and the end of its output); returns the exit code."""
        rc = self.p.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=5)
        for stream in (self.p.stdout, self.p.stderr):
            if not any(t.is_alive() for t in self._threads):
                stream.close()
        if self in _live_procs:
            _live_procs.remove(self)
        return rc

    def kill(self):
        if self.running():
            try:
                os.kill(self.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.p.kill()
        try:
            self.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def describe(self):
        tail = lambda l: "\n    ".join(l[-15:])
        return (f"{' '.join(self.argv[-8:])} (pid {self.pid}, rc {self.p.poll()})\n  stdout:\n    "
                f"{tail(self.out)}\n  stderr:\n    {tail(self.err)}")


def wait_udp_bound(site, host, pid, port, sockets, timeout=10):
    pid_re = re.compile(rf":{port}\s.*pid={pid},")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = _sh(site.argv(host, ["ss", "-Hulpn"])).stdout
        if sum(1 for line in out.splitlines() if pid_re.search(line)) >= sockets:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} has not bound {sockets} UDP socket(s) on port {port}")


class Collector(Proc):
    """`flowmark firefly listen` in a host: every datagram it decodes, as JSON."""

    def __init__(self, site, host, port, bind=None, group=None, rcvbuf=8 << 20):
        args = [FLOWMARK, "firefly", "listen", "--port", str(port), "--timeout", "600",
                "--rcvbuf", str(rcvbuf)]
        if bind:
            args += ["--bind", bind]
        if group:
            args += ["--group", group, "--iface", IFACE]
        super().__init__(site.argv(host, args))
        self.site, self.host, self.port = site, host, port
        wait_udp_bound(site, host, self.pid, port, 1 if (bind or group) else 2)
        if group:
            deadline = time.monotonic() + 5
            while group not in _sh(["ip", "-n", site.ns[host], "maddr", "show", "dev",
                                    IFACE]).stdout:
                if time.monotonic() > deadline:
                    raise AssertionError(f"collector in {host} did not join {group}")
                time.sleep(0.05)
        wait_signals_handled(self.pid)  # its event loop is set up: ready

    def fireflies(self):
        with self._cv:
            return [json.loads(l) for l in self.out if l.startswith('{"sender"')]

    def wait_count(self, n, timeout=10):
        self.wait_for(lambda: sum(1 for l in self.out if l.startswith('{"sender"')) >= n,
                      timeout, f"{n} firefly(ies) at {self.host}:{self.port}")
        return self.fireflies()


# ---- flowmarkd -----------------------------------------------------------------------------
def toml(doc):
    """A TOML text from {"service": {...}, "source": {name: {...}}, "backend": {...}}."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(v)

    def table(header, kv):
        return f"[{header}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in kv.items()) + "\n"
    out = ""
    for key, body in doc.items():
        if key in ("source", "backend"):
            for name, kv in body.items():
                out += table(f"{key}.{name}", kv)
        elif key == "rule":
            for kv in body:
                out += "[[rule]]\n" + "".join(f"{k} = {value(v)}\n" for k, v in kv.items()) + "\n"
        else:
            out += table(key, body)
    return out


def parse_counters(err_lines):
    """The exit counters (`stopped: ... counters {json}`) as {name: {labels-text: value}}."""
    for line in reversed(err_lines):
        m = re.search(r"counters (\{.*\})\s*$", line)
        if m:
            return json.loads(m.group(1))
    return None


class Flowmarkd(Proc):
    """flowmarkd in a host with a config written from a dict to `workdir`."""

    def __init__(self, site, host, workdir, doc, name="flowmarkd"):
        self.config_path = os.path.join(workdir, name + ".toml")
        self.write_config(doc)
        super().__init__(site.argv(host, [FLOWMARKD, "-c", self.config_path]))
        self.counters = None
        self.wait_err(r"flowmarkd running", timeout=15)

    def write_config(self, doc):
        text = doc if isinstance(doc, str) else toml(doc)
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)

    def reload(self, doc, expect):
        """Writes a new config, SIGHUP, waits for the stderr line `expect`."""
        start = len(self.err)
        self.write_config(doc)
        self.signal(signal.SIGHUP)
        return self.wait_err(expect, timeout=10, start=start)

    def stop(self, timeout=10):
        """SIGTERM; returns (exit code, seconds to exit); the exit counters in .counters."""
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        try:
            rc = self.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"flowmarkd did not exit within {timeout} s of SIGTERM: "
                                 f"{self.describe()}")
        self.counters = parse_counters(self.err) or {}
        return rc, time.monotonic() - t0

    def c(self, name, **labels):
        """One exit counter, 0 when absent (only non-zero ones are logged)."""
        key = name + ("{" + ",".join(f"{k}={v}" for k, v in labels.items()) + "}" if labels
                      else "")
        return self.counters.get(key, 0)

    def csum(self, name, **labels):
        """The sum over every series of `name` that has these labels."""
        total = 0
        for key, v in self.counters.items():
            n, _, rest = key.partition("{")
            if n != name:
                continue
            have = dict(kv.split("=", 1) for kv in rest.rstrip("}").split(",") if kv)
            if all(have.get(k) == str(v2) for k, v2 in labels.items()):
                total += v
        return total


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def read_records(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


# ---- the tests -----------------------------------------------------------------------------
SITE = None


def setUpModule():
    global SITE
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root (network namespaces)")
    for exe in (FLOWMARK, FLOWMARKD):
        if not os.access(exe, os.X_OK):
            raise RuntimeError(f"{exe} is missing: build first")
    SITE = Site()
    unittest.addModuleCleanup(SITE.destroy)
    SITE.create()


class ServiceTestCase(unittest.TestCase):
    def setUp(self):
        self.t0 = time.monotonic()
        self.site = SITE
        self.A4, self.B4, self.C4 = (SITE.v4[h] for h in "ABC")
        self.A6, self.B6, self.C6 = (SITE.v6[h] for h in "ABC")
        self.dir = tempfile.mkdtemp(prefix="fmd-test-")
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.pipe = os.path.join(self.dir, "flowmark.pipe")

    def tearDown(self):
        print(f"  [{self._testMethodName}: {time.monotonic() - self.t0:.2f} s]", file=sys.stderr)

    def collector(self, host, port, **kw):
        c = Collector(self.site, host, port, **kw)
        self.addCleanup(c.kill)
        return c

    def daemon(self, doc, host="A"):
        d = Flowmarkd(self.site, host, self.dir, doc)
        self.addCleanup(d.kill)
        return d

    def pipe_source(self, **extra):
        return {"type": "named-pipe", "path": self.pipe, **extra}

    def assertAccounted(self, d, backends):
        """Per backend: offered = delivered + dropped (by reason); returns the dropped."""
        dropped = {}
        for b in backends:
            offered = d.c("flowmark_backend_offered_total", backend=b)
            delivered = d.c("flowmark_backend_events_total", backend=b, outcome="delivered")
            drops = {k.split("outcome=")[1].rstrip("}"): v for k, v in d.counters.items()
                     if k.startswith(f"flowmark_backend_events_total{{backend={b},outcome=dropped")}
            self.assertGreater(offered, 0, (b, d.counters))
            self.assertEqual(offered, delivered + sum(drops.values()), (b, d.counters))
            dropped[b] = drops.get("dropped_queue_full", 0)
            self.drop_reasons = getattr(self, "drop_reasons", {})
            self.drop_reasons[b] = drops
        # The pipeline: every event received is forwarded or suppressed with a reason.
        received = d.c("flowmark_pipeline_received_total")
        self.assertEqual(received, d.csum("flowmark_pipeline_events_total"), d.counters)
        return dropped

    def assertFirefly(self, got, *, state, src, sport, dst, dport, exp, act, protocol="tcp",
                      start=None, sender=None):
        if sender:
            self.assertEqual(got["sender"], sender, got)
        f = got["firefly"]
        afi = "ipv6" if ":" in src else "ipv4"
        self.assertEqual(f["flow-id"], {"afi": afi, "src-ip": src, "dst-ip": dst,
                                        "protocol": protocol, "src-port": sport,
                                        "dst-port": dport}, f)
        self.assertEqual(f["context"]["experiment-id"], exp, f)
        self.assertEqual(f["context"]["activity-id"], act, f)
        lc = f["flow-lifecycle"]
        self.assertEqual(lc["state"], state, f)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - parse_time(lc["start-time"])).total_seconds()), 60, f)
        if start is not None:
            self.assertEqual(lc["start-time"], start, f)
        if state == "end":
            self.assertGreaterEqual(parse_time(lc["end-time"]), parse_time(lc["start-time"]), f)
        else:
            self.assertNotIn("end-time", lc, f)


# (a) ---------------------------------------------------------------------------------------
class TestPipeToFireflies(ServiceTestCase):
    def test_line_to_collector_and_destination_ipv4_ipv6(self):
        A4, B4, A6, B6 = self.A4, self.B4, self.A6, self.B6
        dest = self.collector("B", 10514)         # the flows' destination, both families
        coll = self.collector("B", 20514)         # the configured collectors
        records = os.path.join(self.dir, "events.jsonl")
        d = self.daemon({
            "source": {"pipe": self.pipe_source()},
            "backend": {"ff": {"type": "firefly", "to_destination": True,
                               "collectors": [f"{B4}:20514", f"[{B6}]:20514"]},
                        "rec": {"type": "records", "path": records, "flush": "event"}}})
        self.assertEqual(os.stat(self.pipe).st_mode & 0o777, 0o660)
        flows = [("tcp", A4, 40001, B4, 5777, "2 1", 2, 1),
                 ("udp", A6, 40002, B6, 443, "atlas perfSONAR", 2, 2)]
        write_pipe(self.pipe, "".join(f"start {p} {s} {sp} {t} {tp} {ea}\n"
                                      for p, s, sp, t, tp, ea, _, _ in flows))
        # Each firefly to the destination once, and to the collector of its family and the
        # other one (an IPv4 flow's firefly also goes to the IPv6 collector).
        got_dest = dest.wait_count(2)
        got_coll = coll.wait_count(4)
        starts = {}
        for p, s, sp, t, tp, _, exp, act in flows:
            at_dest = [g for g in got_dest if g["firefly"]["flow-id"]["src-port"] == sp]
            self.assertEqual(len(at_dest), 1, got_dest)
            self.assertFirefly(at_dest[0], state="start", src=s, sport=sp, dst=t, dport=tp,
                               exp=exp, act=act, protocol=p, sender=s)
            starts[sp] = at_dest[0]["firefly"]["flow-lifecycle"]["start-time"]
            at_coll = [g for g in got_coll if g["firefly"]["flow-id"]["src-port"] == sp]
            self.assertEqual(sorted(g["sender"] for g in at_coll), sorted([A4, A6]), got_coll)
            for g in at_coll:
                self.assertFirefly(g, state="start", src=s, sport=sp, dst=t, dport=tp, exp=exp,
                                   act=act, protocol=p, start=starts[sp])
        # End lines give no exp/act or start time that matters: the pipeline's state does.
        write_pipe(self.pipe, "".join(f"end {p} {s} {sp} {t} {tp} {ea}\n"
                                      for p, s, sp, t, tp, ea, _, _ in flows))
        got_dest = dest.wait_count(4)
        got_coll = coll.wait_count(8)
        for p, s, sp, t, tp, _, exp, act in flows:
            for got, n in ((got_dest, 1), (got_coll, 2)):
                ends = [g for g in got if g["firefly"]["flow-id"]["src-port"] == sp
                        and g["firefly"]["flow-lifecycle"]["state"] == "end"]
                self.assertEqual(len(ends), n, got)
                for g in ends:
                    self.assertFirefly(g, state="end", src=s, sport=sp, dst=t, dport=tp,
                                       exp=exp, act=act, protocol=p, start=starts[sp])
        rc, secs = d.stop()
        self.assertEqual(rc, 0, d.describe())
        self.assertFalse(os.path.exists(self.pipe), "the FIFO is left behind")
        recs = read_records(records)
        self.assertEqual([(r["flow-lifecycle"]["state"], r["flow-id"]["src-port"]) for r in recs],
                         [("start", 40001), ("start", 40002), ("end", 40001), ("end", 40002)])
        self.assertEqual(d.c("flowmark_source_events_total", source="pipe", state="start"), 2)
        self.assertEqual(d.c("flowmark_source_events_total", source="pipe", state="end"), 2)
        self.assertEqual(self.assertAccounted(d, ["ff", "rec"]), {"ff": 0, "rec": 0})
        self.assertEqual(d.c("flowmark_backend_events_total", backend="ff", outcome="delivered"), 4)
        self.assertEqual(d.c("flowmark_firefly_sends_total", backend="ff", to="destination",
                             outcome="sent"), 4)
        self.assertEqual(d.c("flowmark_firefly_sends_total", backend="ff", to="collector",
                             outcome="sent"), 8)


# (b) ---------------------------------------------------------------------------------------
class TestFireflyRelay(ServiceTestCase):
    def test_relay_valid_and_count_malformed_by_reason(self):
        A4, B4 = self.A4, self.B4
        coll = self.collector("B", 20515, bind=B4)
        d = self.daemon({
            "source": {"ffin": {"type": "firefly", "port": 30514}},
            "backend": {"relay": {"type": "firefly", "to_destination": False,
                                  "collectors": [f"{B4}:20515"]}}})
        send = lambda *a: subprocess.run(self.site.argv("A", [FLOWMARK, "firefly", "send",
                                                              "--to", f"{A4}:30514", *a]),
                                         capture_output=True, text=True, timeout=10)
        flow = ["tcp", "192.0.2.1", "1000", "192.0.2.2", "2000", "cms", "default"]
        t_start = "2025-03-25T10:00:00.000000+00:00"
        for state in ("start", "ongoing", "end"):
            r = send("--start-time", "2025-03-25T10:00:00Z", state, *flow)
            self.assertEqual(r.returncode, 0, r.stderr)
            coll.wait_count({"start": 1, "ongoing": 2, "end": 3}[state])
        # Malformed datagrams, one per reason, from a raw socket in A (IPv4 and IPv6).
        bad = [(b"hello", "bad_header"), (b"{not json", "not_json"),
               (b"<134>1 - h app - other-msg - {}", "bad_header"),
               (firefly_doc(A4, B4, flow_id={"src-port": 70000}), "port_out_of_range"),
               (firefly_doc(A4, B4, flow_lifecycle={"state": "paused"}), "unknown_state"),
               (firefly_doc(A4, B4, flow_id={"protocol": "sctp"}), "unknown_protocol"),
               (firefly_doc(A4, B4, flow_lifecycle={"state": "end"}), "missing_end_time"),
               (firefly_doc(A4, "fd79::2"), "afi_mismatch"), (b"", "empty")]
        script = ("import socket, sys, json\n"
                  "for fam, dst in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):\n"
                  "    s = socket.socket(fam, socket.SOCK_DGRAM)\n"
                  "    for p in json.load(sys.stdin if fam == socket.AF_INET else open(sys.argv[3])):\n"
                  "        s.sendto(p.encode('latin-1'), (dst, 30514))\n")
        payloads = json.dumps([p.decode("latin-1") for p, _ in bad])
        copy = os.path.join(self.dir, "bad.json")
        with open(copy, "w") as f:
            f.write(payloads)
        r = subprocess.run(self.site.argv("A", [sys.executable, "-c", script, A4, self.A6, copy]),
                           input=payloads, capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        # A valid one after the garbage is still relayed.
        r = send("--start-time", "2025-03-25T10:00:00Z", "start", "udp", "192.0.2.1", "1001",
                 "192.0.2.2", "2001", "2", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        coll.wait_count(4)
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        got = coll.wait_count(5)  # and the end of the live UDP flow, at shutdown
        states = [g["firefly"]["flow-lifecycle"]["state"] for g in got]
        self.assertEqual(states, ["start", "ongoing", "end", "start", "end"], got)
        self.assertEqual(got[4]["firefly"]["flow-id"]["src-port"], 1001)
        for g, state in zip(got[:3], states):
            self.assertEqual(g["sender"], A4)
            f = g["firefly"]
            self.assertEqual(f["flow-id"]["src-port"], 1000, f)
            self.assertEqual((f["context"]["experiment-id"], f["context"]["activity-id"]),
                             (3, 1), f)
            self.assertEqual(f["flow-lifecycle"]["start-time"], t_start, f)
        want = {}
        for _, reason in bad:
            want[reason] = want.get(reason, 0) + 2  # once over IPv4, once over IPv6
        for reason, n in want.items():
            self.assertEqual(d.c("flowmark_source_rejected_total", source="ffin", reason=reason),
                             n, (reason, d.counters))
        self.assertEqual(d.csum("flowmark_source_rejected_total", source="ffin"),
                         2 * len(bad), d.counters)
        self.assertEqual(d.c("flowmark_firefly_datagrams_total", source="ffin"), 4 + 2 * len(bad))
        self.assertEqual(d.csum("flowmark_source_events_total", source="ffin"), 4)
        self.assertEqual(self.assertAccounted(d, ["relay"]), {"relay": 0})
        self.assertEqual(d.c("flowmark_backend_offered_total", backend="relay"), 5)
        self.assertEqual(d.c("flowmark_firefly_sends_total", backend="relay", to="collector",
                             outcome="sent"), 5)


    def test_allow_list_of_senders(self):
        coll = self.collector("B", 20516, bind=self.B4)
        d = self.daemon({
            "source": {"ffin": {"type": "firefly", "port": 30515, "allow": [f"{self.C4}/32"]}},
            "backend": {"relay": {"type": "firefly", "to_destination": False,
                                  "collectors": [f"{self.B4}:20516"]}}})
        for host, port in (("A", 1000), ("C", 1001)):
            r = subprocess.run(self.site.argv(host, [
                FLOWMARK, "firefly", "send", "--to", f"{self.A4}:30515", "ongoing", "tcp",
                "192.0.2.1", str(port), "192.0.2.2", "2000", "2", "1"]),
                capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 0, r.stderr)
        # C's firefly, sent after A's, is the marker: had A's been relayed, it would have
        # reached the collector first (one socket in, one out, in order).
        got = coll.wait_count(1)
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        got = coll.fireflies()
        # The ongoing one from C, then its end at shutdown; nothing from A.
        self.assertEqual({g["firefly"]["flow-id"]["src-port"] for g in got}, {1001}, got)
        self.assertEqual(d.c("flowmark_source_rejected_total", source="ffin",
                             reason="sender_not_allowed"), 1, d.counters)
        self.assertEqual(d.c("flowmark_firefly_datagrams_total", source="ffin"), 2)


# (c) ---------------------------------------------------------------------------------------
class TestMulticast(ServiceTestCase):
    def test_one_datagram_reaches_collectors_in_two_hosts(self):
        g4, g6 = "239.79.0.1", "ff05::79:1"
        colls = [self.collector(h, port, group=g) for h in "BC"
                 for port, g in ((20600, g4), (20601, g6))]
        d = self.daemon({
            "source": {"pipe": self.pipe_source()},
            "backend": {"ff": {"type": "firefly", "to_destination": False, "ttl": 2,
                               "interface": IFACE,
                               "collectors": [f"{g4}:20600", f"[{g6}]:20601"]}}})
        write_pipe(self.pipe, f"start tcp {self.A4} 41000 {self.B4} 5777 2 1\n"
                              f"end tcp {self.A4} 41000 {self.B4} 5777 2 1\n")
        for c in colls:
            got = c.wait_count(2)
            self.assertEqual(len(got), 2, got)
            self.assertFirefly(got[0], state="start", src=self.A4, sport=41000, dst=self.B4,
                               dport=5777, exp=2, act=1)
            self.assertFirefly(got[1], state="end", src=self.A4, sport=41000, dst=self.B4,
                               dport=5777, exp=2, act=1,
                               start=got[0]["firefly"]["flow-lifecycle"]["start-time"])
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        # One datagram per event per group, whatever the number of collectors.
        self.assertEqual(d.c("flowmark_firefly_sends_total", backend="ff", to="collector",
                             outcome="sent"), 4)
        self.assertAccounted(d, ["ff"])


# (d) ---------------------------------------------------------------------------------------
class TestFaults(ServiceTestCase):
    def test_collector_unreachable(self):
        records = os.path.join(self.dir, "events.jsonl")
        # Nobody listens in B (ICMP port unreachable), and 10.200.0.1 has no route in A.
        d = self.daemon({
            "source": {"pipe": self.pipe_source()},
            "backend": {"ff": {"type": "firefly", "to_destination": True,
                               "collectors": [f"{self.B4}:20700", "10.200.0.1:20700",
                                              f"[{self.B6}]:20700"]},
                        "rec": {"type": "records", "path": records, "flush": "event"}}})
        n = 20
        for i in range(n):
            write_pipe(self.pipe, f"start tcp {self.A4} {42000 + i} {self.B4} 5777 2 1\n")
            # One event at a time through the backends (ICMP errors come back between sends)
            d.wait_for(lambda: os.path.exists(records) and len(read_records(records)) == i + 1,
                       5, f"record {i + 1}")
        # Still running; a collector that appears now gets the next events.
        self.assertTrue(d.running(), d.describe())
        late = self.collector("B", 20700, bind=self.B4)
        write_pipe(self.pipe, f"end tcp {self.A4} 42000 {self.B4} 5777 2 1\n")
        got = late.wait_count(1)
        self.assertFirefly(got[0], state="end", src=self.A4, sport=42000, dst=self.B4,
                           dport=5777, exp=2, act=1)
        d.wait_for(lambda: len(read_records(records)) == n + 1, 5, "records")
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        # Shutdown ended the n - 1 live flows: every event reached the records backend.
        self.assertEqual(len(read_records(records)), 2 * n)
        self.assertEqual(self.assertAccounted(d, ["ff", "rec"]), {"ff": 0, "rec": 0})
        events = 2 * n
        # Every send is accounted: 3 collectors and the destination per event.
        for to, k in (("collector", 3), ("destination", 1)):
            total = d.csum("flowmark_firefly_sends_total", backend="ff", to=to)
            self.assertEqual(total, k * events, (to, d.counters))
        self.assertEqual(d.c("flowmark_firefly_sends_total", backend="ff", to="collector",
                             outcome="error"), events, d.counters)  # the unroutable one
        self.assertIn("10.200.0.1", "\n".join(d.err))

    def test_writer_dies_mid_line(self):
        records = os.path.join(self.dir, "events.jsonl")
        d = self.daemon({"source": {"pipe": self.pipe_source()},
                         "backend": {"rec": {"type": "records", "path": records,
                                             "flush": "event"}}})
        script = ("import os, sys, time\n"
                  "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
                  "os.write(fd, b'start tcp 10.79.0.1 43000 10.79.')\n"
                  "print('written', flush=True)\n"
                  "time.sleep(60)\n")
        w = Proc([sys.executable, "-c", script, self.pipe])
        self.addCleanup(w.kill)
        w.wait_for(lambda: "written" in w.out, 10, "half a line written")
        # Killed now: the half line stays in the FIFO for the daemon to read, then the EOF.
        w.p.send_signal(signal.SIGKILL)
        w.wait(5)
        d.wait_err(r"rejected \(incomplete_line\)")
        write_pipe(self.pipe, f"start tcp {self.A4} 43001 {self.B4} 5777 2 1\n")
        d.wait_for(lambda: os.path.exists(records) and len(read_records(records)) == 1, 5,
                   "the next writer's line")
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        recs = read_records(records)
        self.assertEqual([r["flow-id"]["src-port"] for r in recs], [43001, 43001])
        self.assertEqual(d.c("flowmark_source_rejected_total", source="pipe",
                             reason="incomplete_line"), 1, d.counters)
        self.assertEqual(d.csum("flowmark_source_rejected_total", source="pipe"), 1, d.counters)
        self.assertEqual(d.c("flowmark_source_events_total", source="pipe", state="start"), 1)

    def test_malformed_lines_by_reason(self):
        records = os.path.join(self.dir, "events.jsonl")
        d = self.daemon({"source": {"pipe": self.pipe_source(max_line=100)},
                         "backend": {"rec": {"type": "records", "path": records,
                                             "flush": "event"}}})
        A, B = self.A4, self.B4
        bad = [(f"start tcp {A} 1 {B} 2 2", "token_count"),
               (f"start tcp {A} 1 {B} 2 2 1 extra", "token_count"),
               (f"begin tcp {A} 1 {B} 2 2 1", "bad_state"),
               (f"start tpc {A} 1 {B} 2 2 1", "bad_protocol"),
               (f"start tcp 10.79.0.300 1 {B} 2 2 1", "bad_address"),
               (f"start tcp fe80::1%eth0 1 fe80::2 2 2 1", "bad_address"),
               (f"start tcp {A} 0 {B} 2 2 1", "bad_port"),
               (f"start tcp {A} 1 {B} 65536 2 1", "bad_port"),
               (f"start tcp {A} 1 {B} x 2 1", "bad_port"),
               (f"start tcp {A} 1 fd79::2 2 2 1", "family_mismatch"),
               (f"start tcp {A} 1 {B} 2 1024 1", "bad_id"),
               (f"start tcp {A} 1 {B} 2 2 64", "bad_id"),
               (f"start tcp {A} 1 {B} 2 nosuchexp default", "unknown_experiment"),
               (f"start tcp {A} 1 {B} 2 atlas nosuchact", "unknown_activity"),
               ("start " + "x" * 200, "line_too_long")]
        good = [f"start tcp {A} 43100 {B} 5777 2 1", f"start\ttcp  {A}\t43101 {B} 5777 2 1\r",
                f"end tcp {A} 43100 {B} 5777 2 1"]
        text = "\n".join([good[0]] + [b for b, _ in bad] + ["", "   "] + good[1:]) + "\n"
        write_pipe(self.pipe, text)
        d.wait_for(lambda: os.path.exists(records) and len(read_records(records)) == 3, 5,
                   "the good lines")
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        want = {}
        for _, reason in bad:
            want[reason] = want.get(reason, 0) + 1
        for reason, n in want.items():
            self.assertEqual(d.c("flowmark_source_rejected_total", source="pipe", reason=reason),
                             n, (reason, d.counters))
        self.assertEqual(d.csum("flowmark_source_rejected_total", source="pipe"), len(bad),
                         d.counters)
        # Lines read (blank ones aside) = accepted + rejected (line_too_long is never a line).
        self.assertEqual(d.c("flowmark_pipe_lines_total", source="pipe"),
                         len(good) + len(bad) - 1, d.counters)
        self.assertEqual(d.csum("flowmark_source_events_total", source="pipe"), 3)
        self.assertEqual(len(read_records(records)), 4)  # + the end of 43101 at shutdown
        self.assertIn("token 2 (protocol)", "\n".join(d.err))

    def test_stalled_backend_drops_only_its_own_events(self):
        fifo = os.path.join(self.dir, "stalled.fifo")
        os.mkfifo(fifo)
        reader = Proc(["cat", fifo])  # opens first: the backend's open() then succeeds
        self.addCleanup(reader.kill)
        coll = self.collector("B", 20800, bind=self.B4, rcvbuf=32 << 20)
        # drain_timeout 1 s: a backend whose full queue takes nothing for that long is given
        # up as stalled; the pipe (a lossless source) then stops waiting for it.
        d = self.daemon({
            "service": {"queue_size": 64, "drain_timeout": 1},
            "source": {"pipe": self.pipe_source()},
            "backend": {"ff": {"type": "firefly", "to_destination": False,
                               "collectors": [f"{self.B4}:20800"]},
                        "slow": {"type": "records", "path": fifo, "flush": "event"}}})
        os.kill(reader.pid, signal.SIGSTOP)
        flows = 500
        # In bursts of 20 events, fewer than the queue holds: the firefly backend keeps up
        # with each burst, the stalled one cannot once the FIFO (64 KiB) is full.
        for chunk in range(0, flows, 10):
            write_pipe(self.pipe, "".join(
                f"start tcp {self.A4} {20000 + i} {self.B4} 5777 2 1\n"
                f"end tcp {self.A4} {20000 + i} {self.B4} 5777 2 1\n"
                for i in range(chunk, chunk + 10)))
            coll.wait_count(2 * (chunk + 10), timeout=20)  # the burst went through
        got = coll.wait_count(2 * flows, timeout=20)
        self.assertTrue(d.running())
        self.assertIn("lossless sources no longer wait for it", "\n".join(d.err))
        os.kill(reader.pid, signal.SIGCONT)
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        self.assertEqual(len(got), 2 * flows)
        dropped = self.assertAccounted(d, ["ff", "slow"])
        self.assertEqual(dropped["ff"], 0)
        self.assertGreater(dropped["slow"], 0, d.counters)
        self.assertEqual(d.c("flowmark_backend_offered_total", backend="slow"), 2 * flows)
        self.assertEqual(d.c("flowmark_backend_events_total", backend="ff", outcome="delivered"),
                         2 * flows)

    def test_sigterm_while_a_backend_is_stalled(self):
        fifo = os.path.join(self.dir, "stalled.fifo")
        os.mkfifo(fifo)
        reader = Proc(["cat", fifo])
        self.addCleanup(reader.kill)
        records = os.path.join(self.dir, "events.jsonl")
        d = self.daemon({
            "service": {"queue_size": 64, "drain_timeout": 5},
            "source": {"pipe": self.pipe_source()},
            "backend": {"slow": {"type": "records", "path": fifo, "flush": "event"},
                        "rec": {"type": "records", "path": records, "flush": "event"}}})
        os.kill(reader.pid, signal.SIGSTOP)
        for chunk in range(0, 400, 20):
            write_pipe(self.pipe, "".join(f"start tcp {self.A4} {21000 + i} {self.B4} 5777 2 1\n"
                                          for i in range(chunk, chunk + 20)))
            # The burst reached the healthy backend before the next one is written.
            d.wait_for(lambda: os.path.exists(records) and
                       len(read_records(records)) == chunk + 20, 30, f"{chunk + 20} records")
        d.wait_for(lambda: os.path.exists(records) and len(read_records(records)) == 400, 30,
                   "the healthy backend's records")
        # The stalled backend cannot drain: the service gives up on it after its drain
        # timeout ([service] drain_timeout = 5 s here; 30 by default) and exits cleanly, the other backend having every end event.
        rc, secs = d.stop(timeout=15)
        self.assertEqual(rc, 0, d.describe())
        self.assertLess(secs, 8, d.describe())
        self.assertFalse(os.path.exists(self.pipe))
        self.assertIn("stalled", "\n".join(d.err))
        self.assertAccounted(d, ["slow", "rec"])
        self.assertGreater(self.drop_reasons["slow"].get("dropped_stalled", 0), 0, d.counters)
        self.assertEqual(self.drop_reasons["rec"], {})
        self.assertEqual(d.c("flowmark_backend_offered_total", backend="slow"), 800)
        self.assertEqual(len(read_records(records)), 800)

    def test_sighup_bad_config_kept_good_config_applied(self):
        c1 = self.collector("B", 20901, bind=self.B4)
        c2 = self.collector("B", 20902, bind=self.B4)
        records = os.path.join(self.dir, "events.jsonl")
        doc = {"source": {"pipe": self.pipe_source()},
               "backend": {"ff": {"type": "firefly", "to_destination": False,
                                  "collectors": [f"{self.B4}:20901"]},
                           "rec": {"type": "records", "path": records, "flush": "event"}}}
        d = self.daemon(doc)
        line = lambda i, s="start": f"{s} tcp {self.A4} {44000 + i} {self.B4} 5777 2 1\n"
        write_pipe(self.pipe, line(0))
        c1.wait_count(1)
        # A bad edit: an unknown key. Logged, rejected, the running config kept.
        bad = toml(doc).replace('type = "records"', 'type = "records"\nbogus_key = 1')
        err = d.reload(bad, r"reload rejected")
        self.assertIn("bogus_key", err)
        write_pipe(self.pipe, line(1))
        c1.wait_count(2)
        d.reload("this is [not toml", r"reload rejected")
        write_pipe(self.pipe, line(2))
        c1.wait_count(3)
        self.assertTrue(os.path.exists(self.pipe))
        # A good edit: the collector moves; the live flows are adopted by the new backend.
        doc["backend"]["ff"]["collectors"] = [f"{self.B4}:20902"]
        d.reload(doc, r"reload: starting backend ff")
        got = c2.wait_count(3)  # the three live flows, as start events
        self.assertEqual(sorted(g["firefly"]["flow-id"]["src-port"] for g in got),
                         [44000, 44001, 44002])
        write_pipe(self.pipe, line(3) + line(0, "end"))
        got = c2.wait_count(5)
        self.assertEqual(got[4]["firefly"]["flow-lifecycle"]["start-time"],
                         [g for g in got[:3] if g["firefly"]["flow-id"]["src-port"] == 44000][0]
                         ["firefly"]["flow-lifecycle"]["start-time"])
        # The old collector gets nothing more: a firefly sent to it now from A (the
        # daemon's host, the same path) arrives after anything the daemon sent it before.
        r = subprocess.run(self.site.argv("A", [
            FLOWMARK, "firefly", "send", "--to", f"{self.B4}:20901", "ongoing", "tcp",
            "192.0.2.1", "4999", "192.0.2.2", "2000", "2", "1"]),
            capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        got1 = c1.wait_count(4)
        self.assertEqual([g["firefly"]["flow-id"]["src-port"] for g in got1],
                         [44000, 44001, 44002, 4999], got1)
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        self.assertEqual(d.c("flowmark_reloads_total", outcome="rejected"), 2)
        self.assertEqual(d.c("flowmark_reloads_total", outcome="applied"), 1)
        # rec saw every event: 5 lines and the 3 ends at shutdown.
        self.assertEqual(len(read_records(records)), 8)
        self.assertAccounted(d, ["rec"])

    def test_sighup_reopens_the_records_file(self):
        records = os.path.join(self.dir, "events.jsonl")
        doc = {"source": {"pipe": self.pipe_source()},
               "backend": {"rec": {"type": "records", "path": records, "flush": "event"}}}
        d = self.daemon(doc)
        line = lambda i: f"start tcp {self.A4} {45000 + i} {self.B4} 5777 2 1\n"
        write_pipe(self.pipe, line(0))
        d.wait_for(lambda: os.path.exists(records) and len(read_records(records)) == 1, 5, "rec")
        os.rename(records, records + ".1")  # logrotate
        d.reload(doc, r"reload")  # the same config: nothing restarts, the file is reopened
        write_pipe(self.pipe, line(1))
        d.wait_for(lambda: os.path.exists(records) and len(read_records(records)) == 1, 5,
                   "the new records file")
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        self.assertEqual([r["flow-id"]["src-port"] for r in read_records(records + ".1")], [45000])
        # The new file: the second start, then both ends at shutdown.
        self.assertEqual([(r["flow-lifecycle"]["state"], r["flow-id"]["src-port"])
                          for r in read_records(records)][0], ("start", 45001))
        self.assertEqual(len(read_records(records)), 3)
        self.assertEqual(d.c("flowmark_reloads_total", outcome="applied"), 1)

    def test_sigterm_under_load(self):
        records = os.path.join(self.dir, "events.jsonl")
        coll = self.collector("B", 21000, bind=self.B4, rcvbuf=64 << 20)
        d = self.daemon({
            "service": {"queue_size": 256},
            "source": {"pipe": self.pipe_source()},
            "backend": {"ff": {"type": "firefly", "to_destination": False,
                               "collectors": [f"{self.B4}:21000"]},
                        "rec": {"type": "records", "path": records}}})
        # A writer streams lines as fast as it can: 20,000 distinct flows started (every
        # third one ended), then their start lines again and again (duplicates, suppressed
        # by the pipeline but read and parsed) until it is killed.
        script = ("import os, sys\n"
                  "first, again = [], []\n"
                  "for j in range(20000):\n"
                  "    flow = f'tcp 10.79.0.1 {j % 60000 + 1} 10.79.{j // 60000}.2 5777 2 1\\n'\n"
                  "    first.append('start ' + flow)\n"
                  "    again.append('start ' + flow)\n"
                  "    if j % 3 == 0: first.append('end ' + flow)\n"
                  "first, again = ''.join(first).encode(), ''.join(again).encode()\n"
                  "fd = os.open(sys.argv[1], os.O_WRONLY)\n"
                  "print('streaming', flush=True)\n"
                  "try:\n"
                  "    os.write(fd, first)\n"
                  "    rounds = 0\n"
                  "    while True:\n"
                  "        for k in range(0, len(again), 65536):\n"
                  "            os.write(fd, again[k:k + 65536])\n"
                  "        rounds += 1\n"
                  "        if rounds == 1: print('again', flush=True)\n"
                  "except BrokenPipeError:\n"
                  "    pass\n")
        w = Proc([sys.executable, "-c", script, self.pipe])
        self.addCleanup(w.kill)
        # Once the writer has written its duplicates once, the daemon has read (and parsed)
        # all but the FIFO's 64 KiB of them: more than 20,000 starts, and still streaming.
        w.wait_for(lambda: "again" in w.out, 30, "the writer's first round of duplicates")
        rc, secs = d.stop(timeout=15)
        self.assertEqual(rc, 0, d.describe())
        print(f"  [SIGTERM under load: exit in {secs:.2f} s, "
              f"{d.c('flowmark_source_events_total', source='pipe', state='start')} starts]",
              file=sys.stderr)
        self.assertLess(secs, 5)
        self.assertFalse(os.path.exists(self.pipe), "the FIFO is left behind")
        w.kill()
        starts = d.c("flowmark_source_events_total", source="pipe", state="start")
        self.assertGreater(starts, 20000)
        self.assertGreater(d.c("flowmark_pipeline_events_total", outcome="duplicate_start"), 0)
        dropped = self.assertAccounted(d, ["ff", "rec"])
        live = int(re.search(r"stopped: (\d+) live flow", "\n".join(d.err)).group(1))
        self.assertGreater(live, 1000)  # far more than the queue holds
        # The end events of the live flows are never dropped: every flow has its end.
        recs = read_records(records)
        if dropped["rec"] == 0:
            by_state = {}
            for r in recs:
                by_state.setdefault(r["flow-lifecycle"]["state"], set()).add(
                    (r["flow-id"]["src-port"], r["flow-id"]["dst-ip"]))
            self.assertEqual(by_state["start"], by_state["end"])
        ends_at_exit = [r for r in recs[-live:] if r["flow-lifecycle"]["state"] == "end"]
        self.assertEqual(len(ends_at_exit), live, "an end record for every live flow at exit")
        coll.wait_count(d.c("flowmark_backend_events_total", backend="ff", outcome="delivered"),
                        timeout=10)


# Back-pressure: the named pipe is a lossless source ----------------------------------------
_WRITER = """
import os, sys
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_WRONLY)
data = "".join(f"start tcp 10.79.{i >> 16}.{(i >> 8) & 255} {1024 + (i & 255)} 10.79.0.2 5777 2 1\\n"
               for i in range(n)).encode()
print("writing", flush=True)
done = 0
while done < len(data):
    done += os.write(fd, data[done:done + 65536])
print("written", flush=True)
"""


def pipe_bytes(path):
    """Bytes waiting in the FIFO (FIONREAD through a reader of our own, which reads nothing)."""
    import fcntl
    import termios
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, sys.byteorder)
    finally:
        os.close(fd)


def blocked_in_write(pid):
    """True when the process sleeps in write(2) (syscall 1 on x86-64)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split()[0] == "1"
    except (OSError, IndexError):
        return False


class TestBackPressure(ServiceTestCase):
    def test_burst_every_event_delivered(self):
        """200,000 lines written as fast as a writer can into a pipe whose backend queue holds
        4,096 events: every one is a firefly at the collector, none dropped."""
        flows = 100_000
        out = os.path.join(self.dir, "collector.out")
        # The collector keeps up: a receive buffer for the whole burst, its output to a file.
        with open(out, "w") as f:
            coll = subprocess.Popen(self.site.argv("B", [
                FLOWMARK, "firefly", "listen", "--bind", self.B4, "--port", "21100",
                "--rcvbuf", str(512 << 20), "--count", str(2 * flows), "--stats",
                "--format", "text", "--timeout", "60"]), stdout=f, stderr=subprocess.PIPE,
                text=True, preexec_fn=_default_sigint)
        self.addCleanup(coll.kill)
        wait_udp_bound(self.site, "B", coll.pid, 21100, 1)
        d = self.daemon({
            "service": {"queue_size": 4096},
            "source": {"pipe": self.pipe_source()},
            "backend": {"ff": {"type": "firefly", "to_destination": False,
                               "collectors": [f"{self.B4}:21100"]}}})
        lines = "".join(f"start tcp 10.80.{i >> 8 & 255}.{i & 255} {1024 + i % 60000} "
                        f"{self.B4} 5777 2 1\n" for i in range(flows))
        lines += "".join(f"end tcp 10.80.{i >> 8 & 255}.{i & 255} {1024 + i % 60000} "
                         f"{self.B4} 5777 2 1\n" for i in range(flows))
        t0 = time.monotonic()
        write_pipe(self.pipe, lines, timeout=5)
        t_write = time.monotonic() - t0
        try:
            coll.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the collector did not get every firefly within 60 s")
        t_all = time.monotonic() - t0
        with open(out) as f:
            stats = json.loads(f.read().splitlines()[-1])
        rc, _ = d.stop()
        self.assertEqual(rc, 0, d.describe())
        print(f"  [burst: {2 * flows} lines written in {t_write:.2f} s, all fireflies in "
              f"{t_all:.2f} s; paused {d.c('flowmark_source_paused_total', source='pipe')} "
              f"times]", file=sys.stderr)
        self.assertEqual(stats["accepted"], 2 * flows, stats)
        dropped = self.assertAccounted(d, ["ff"])
        self.assertEqual(dropped["ff"], 0, d.counters)
        self.assertEqual(d.c("flowmark_backend_events_total", backend="ff", outcome="delivered"),
                         2 * flows, d.counters)
        self.assertEqual(d.c("flowmark_firefly_sends_total", backend="ff", to="collector",
                             outcome="sent"), 2 * flows, d.counters)
        # The queue (4,096) is far smaller than the burst: the source had to wait for room.
        self.assertGreater(d.c("flowmark_source_paused_total", source="pipe"), 0, d.counters)

    def blocked_writer(self, n):
        """flowmarkd with a healthy records backend and one whose FIFO nobody reads (its
        reader stopped), queue_size 64; a writer of `n` start lines, returned once it is
        blocked in write() on a full pipe."""
        fifo = os.path.join(self.dir, "stalled.fifo")
        os.mkfifo(fifo)
        self.reader = Proc(["cat", fifo])
        self.addCleanup(self.reader.kill)
        self.records = os.path.join(self.dir, "events.jsonl")
        d = self.daemon({
            "service": {"queue_size": 64, "drain_timeout": 60},
            "source": {"pipe": self.pipe_source()},
            "backend": {"slow": {"type": "records", "path": fifo, "flush": "event"},
                        "rec": {"type": "records", "path": self.records}}})
        os.kill(self.reader.pid, signal.SIGSTOP)
        w = Proc([sys.executable, "-c", _WRITER, self.pipe, str(n)])
        self.addCleanup(w.kill)
        w.wait_for(lambda: "writing" in w.out, 10, "the writer's start")
        # The backend's FIFO fills, its queue fills, the source stops reading: the writer
        # waits in write() on a full pipe (64 KiB), and nothing is dropped.
        deadline = time.monotonic() + 20
        while not (blocked_in_write(w.pid) and pipe_bytes(self.pipe) >= 60000):
            if time.monotonic() > deadline:
                raise AssertionError(f"the writer is not blocked on a full pipe: "
                                     f"{pipe_bytes(self.pipe)} bytes in it; {w.out}")
            self.assertNotIn("written", w.out)
            time.sleep(0.02)
        self.assertTrue(d.running())
        return d, w

    def test_slow_backend_blocks_the_writer_nothing_dropped(self):
        n = 20000  # ~1 MB of lines: far more than the pipe, the queue and the FIFO hold
        d, w = self.blocked_writer(n)
        self.assertNotIn("written", w.out)
        # The backend takes again: the writer goes on, every line reaches both backends.
        os.kill(self.reader.pid, signal.SIGCONT)
        w.wait_for(lambda: "written" in w.out, 60, "the writer's end")
        d.wait_for(lambda: os.path.exists(self.records) and
                   len(read_records(self.records)) >= n, 30, f"{n} records")
        rc, secs = d.stop()
        self.assertEqual(rc, 0, d.describe())
        self.assertLess(secs, 5, d.describe())
        dropped = self.assertAccounted(d, ["slow", "rec"])
        self.assertEqual(self.drop_reasons, {"slow": {}, "rec": {}}, d.counters)
        self.assertEqual(d.c("flowmark_source_events_total", source="pipe", state="start"), n)
        # Each start, and each flow's end at shutdown.
        self.assertEqual(d.c("flowmark_backend_events_total", backend="slow",
                             outcome="delivered"), 2 * n, d.counters)
        self.assertEqual(len(read_records(self.records)), 2 * n)
        self.assertGreater(d.c("flowmark_source_paused_total", source="pipe"), 0, d.counters)
        self.assertEqual(dropped, {"slow": 0, "rec": 0})

    def test_sigterm_while_the_writer_is_blocked(self):
        d, w = self.blocked_writer(20000)
        start = len(d.err)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        # The loop thread never waits for a queue: the signal is taken at once.
        d.wait_err(r"SIGTERM: stopping", timeout=2, start=start)
        self.assertLess(time.monotonic() - t0, 2)
        # The stopped backend drains once its reader reads again; the service then exits.
        os.kill(self.reader.pid, signal.SIGCONT)
        rc = d.wait(10)
        self.assertEqual(rc, 0, d.describe())
        self.assertLess(time.monotonic() - t0, 10)
        d.counters = parse_counters(d.err) or {}
        self.assertEqual(self.assertAccounted(d, ["slow", "rec"]), {"slow": 0, "rec": 0})
        self.assertFalse(os.path.exists(self.pipe))
        w.wait_for(lambda: w.p.poll() is not None, 10, "the writer's exit (its reader is gone)")


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
