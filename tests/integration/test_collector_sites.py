#!/usr/bin/env python3
"""Integration test of flowmarkd as a collector: three sites send fireflies to it.

    python3 tests/integration/test_collector_sites.py BUILD_DIR [unittest options]

Hosts are network namespaces: a collector namespace C, and three site namespaces, each
joined to C by a veth pair ("toN" in C, "uplink" in the site) with an IPv4 /24 and an IPv6 /64
taken from the site's networks (10.9N.0.0/16 and fd9N::/48, N = 1, 2, 3). flowmarkd runs in
C with a firefly source on port 10514 (both families), a prometheus backend on
127.0.0.1:9000, a store backend (SQLite), [[site]] tables mapping each site's networks to its name, and a registry file
of its own. A real Prometheus server (Debian's `prometheus`) runs in C and scrapes it every
second.

Each site sends the start, ongoing and end fireflies of several flows — to other sites, and
one to an address no site contains — in the forms that reach a collector: `flowmark firefly
send` (RFC 5424 header, no usage), flowmark's JSON with the header and usage, flowd (Python:
header, spaced JSON), flowd-go (bare JSON, and with a header whose timestamp is empty),
XRootD (header, usage, a netlink object; IPv6 flows over IPv6) and dCache (bare JSON with a
storage-stats object). Some datagrams are sent twice (one of them relayed by the flow's
destination site); some are malformed; some flows are left open.

From what it sent, the test computes the flows a collector must record (expected_records:
identity, times, duration, bytes, sites, names) and the totals per (experiment, activity,
src_site, dst_site) (expected_totals), and checks:
- Prometheus scrapes flowmark_collector_{bytes,flows}_total and flowmark_collector_open_flows
  equal to those totals, group by group, no more groups (so each duplicate counted once);
- the store holds exactly the expected flows, field by field (state, end time, duration,
  throughput, bytes, ids, names, sites), no more;
- `flowmark report --by experiment,activity,src_site,dst_site` gives flows and bytes equal to
  those totals;
- each malformed datagram is counted in flowmark_source_rejected_total by its reason, each
  copy of a firefly in flowmark_pipeline_events_total{outcome="duplicate_*"}.
Each is waited for (until equal, or fail at a deadline naming the difference).

Needs root (namespaces) and /usr/bin/prometheus; skips saying why otherwise. Namespaces and
processes are removed on every exit (test failure, exception, interpreter exit).
"""

import atexit
import datetime
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_collector_sites.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")
FLOWMARKD = os.path.join(BUILD_DIR, "flowmarkd")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

from netns_helpers import in_netns  # noqa: E402

FIREFLY_PORT = 10514
METRICS_PORT = 9000
PROMETHEUS_PORT = 9090
DEADLINE = 30  # seconds to wait for any one condition

# The registry flowmarkd and `flowmark firefly send` read (a file: the test knows every name).
REGISTRY = {"experiments": [
    {"expName": "atlas", "expId": 2, "activities": [
        {"activityName": "default", "activityId": 1},
        {"activityName": "perfSONAR", "activityId": 2},
        {"activityName": "datachallenge", "activityId": 3}]},
    {"expName": "cms", "expId": 3, "activities": [
        {"activityName": "default", "activityId": 1},
        {"activityName": "cache", "activityId": 4}]}],
    "version": 1, "modified": "2026-12-01T00:00:00Z"}


def experiment_name(exp):
    for e in REGISTRY["experiments"]:
        if e["expId"] == exp:
            return e["expName"]
    return None


def activity_name(exp, act):
    for e in REGISTRY["experiments"]:
        if e["expId"] == exp:
            for a in e["activities"]:
                if a["activityId"] == act:
                    return a["activityName"]
    return None


# ---- the sites -------------------------------------------------------------------------
class Site:
    """Site number n: its name, networks, and the addresses of its link to the collector."""

    def __init__(self, n, name):
        self.n, self.name = n, name
        self.net4, self.net6 = f"10.9{n}.0.0/16", f"fd9{n}::/48"
        self.collector4, self.local4 = f"10.9{n}.0.1", f"10.9{n}.0.2"  # the veth link
        self.collector6, self.local6 = f"fd9{n}::1", f"fd9{n}::2"
        self.ns = None  # namespace name, once created

    def host4(self, i):
        return f"10.9{self.n}.{10 + i // 200}.{1 + i % 200}"

    def host6(self, i):
        return f"fd9{self.n}:0:0:10::{i + 1:x}"

    def site_of(self, address):
        return self.name if address.startswith((f"10.9{self.n}.", f"fd9{self.n}:")) else ""


SITES = [Site(1, "CERN-PROD"), Site(2, "BNL-ATLAS"), Site(3, "DESY-HH")]
OUTSIDE4 = "192.0.2.77"  # in no site's networks: its site label is ""


def site_of(address):
    for s in SITES:
        if s.site_of(address):
            return s.name
    return ""


class Topology:
    """Namespace C and one namespace per site, each site joined to C by a veth pair.
    destroy() first stops the processes started in them (processes), then deletes them."""

    live = set()
    processes = []

    def __init__(self):
        tag = f"{os.getpid()}"
        self.collector = f"colC{tag}"
        for s in SITES:
            s.ns = f"colS{s.n}x{tag}"

    @staticmethod
    def sh(*args):
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=10)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")

    def create(self):
        for ns in [self.collector] + [s.ns for s in SITES]:
            self.sh("ip", "netns", "add", ns)
            Topology.live.add(ns)
            self.sh("ip", "-n", ns, "link", "set", "lo", "up")
        for s in SITES:
            dev = f"to{s.n}"
            self.sh("ip", "-n", self.collector, "link", "add", dev, "type", "veth", "peer",
                    "name", "uplink", "netns", s.ns)
            for ns, d, v4, v6 in ((self.collector, dev, s.collector4, s.collector6),
                                  (s.ns, "uplink", s.local4, s.local6)):
                self.sh("ip", "netns", "exec", ns, "sysctl", "-qw",
                        f"net.ipv6.conf.{d}.accept_dad=0")
                self.sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", d)
                self.sh("ip", "-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", d, "nodad")
                self.sh("ip", "-n", ns, "link", "set", "dev", d, "up")

    @staticmethod
    def destroy():
        for p in Topology.processes:
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in list(Topology.live):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
            Topology.live.discard(ns)


atexit.register(Topology.destroy)


def _die_on_signal(signum, _frame):  # SIGTERM from ctest's timeout: clean up, then exit
    Topology.destroy()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _die_on_signal)


# ---- the flows, and what each producer puts on the wire -----------------------------------
def rfc3339(micros):
    t = datetime.datetime.fromtimestamp(micros / 1e6, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


class Flow:
    """One flow a site announces. `events` are (state, sent, received) with None for no
    usage; `form` is the producer; `duplicate` names the states whose datagram is sent twice
    ("relay" in it: the end firefly also comes from the destination site, as a relay would
    send it); `family` is the transport to the collector (4 or 6)."""

    def __init__(self, site, form, src, sport, dst, dport, exp, act, events, start,
                 duration, family=4, duplicate=(), protocol="tcp"):
        self.site, self.form = site, form
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport
        self.exp, self.act, self.events = exp, act, events
        self.start, self.duration = start, duration  # micros, seconds (None: open)
        self.family, self.duplicate, self.protocol = family, set(duplicate), protocol
        # `flowmark firefly send` stamps end-time with its clock: the window of the sends.
        self.sent_window = None

    @property
    def ended(self):
        return self.events[-1][0] == "end"

    def doc(self, state, sent, received, application):
        afi = "ipv6" if ":" in self.src else "ipv4"
        lc = {"state": state, "current-time": rfc3339(now_micros()),
              "start-time": rfc3339(self.start)}
        if state == "end":
            lc["end-time"] = rfc3339(self.start + int(self.duration * 1e6))
        d = {"version": 1, "flow-lifecycle": lc,
             "flow-id": {"afi": afi, "src-ip": self.src, "dst-ip": self.dst,
                         "protocol": self.protocol, "src-port": self.sport,
                         "dst-port": self.dport},
             "context": {"experiment-id": self.exp, "activity-id": self.act,
                         "application": application}}
        if sent is not None:
            d["usage"] = {"received": received, "sent": sent}
        return d

    def datagram(self, state, sent, received):
        """The bytes this flow's producer sends for one event (not for form "flowmark")."""
        now = rfc3339(now_micros())
        host = f"host{self.sport}.{self.site.name.lower()}.example.org"
        if self.form == "flowmark-json":
            d = self.doc(state, sent, received, "flowmark 0.1.0")
            return (f"<134>1 {now} {host} flowmark - firefly-json - "
                    + json.dumps(d, separators=(",", ":"))).encode()
        if self.form == "flowd":  # Python flowd: spaced JSON, never usage
            d = self.doc(state, None, None, "flowd v1.1.0")
            return f"<134>1 {now} {host} flowd - firefly-json - {json.dumps(d)}".encode()
        if self.form == "flowd-go-bare":
            return json.dumps(self.doc(state, None, None, "flowd-go"),
                              separators=(",", ":")).encode()
        if self.form == "flowd-go-header":  # flowd-go leaves the timestamp empty
            d = self.doc(state, None, None, "flowd-go")
            return (f"<134>1  {host} flowd-go - firefly-json - "
                    + json.dumps(d, separators=(",", ":"))).encode()
        if self.form == "xrootd":
            d = self.doc(state, sent, received, "xrootd")
            d["netlink"] = {"rtt": 12.5}
            return (f"<134>1 {now} {host} xrootd - firefly-json - "
                    + json.dumps(d, separators=(",", ":"))).encode()
        if self.form == "dcache":
            d = self.doc(state, sent, received, "dCache")
            if state == "end":
                d["storage-stats"] = {"read": {"bandwidth": 117000000, "active": 4.2,
                                               "idle": 0.3}}
            return json.dumps(d, separators=(",", ":")).encode()
        raise ValueError(self.form)


def now_micros():
    return int(time.time() * 1e6)


def make_flows():
    """The flows of the test: every form, both address families, names and bare ids, flows
    between each pair of sites and to no site, some left open, some datagrams twice."""
    s1, s2, s3 = SITES
    base = now_micros() - 900 * 1_000_000  # started a quarter of an hour ago
    G = 1 << 30
    flows = []

    def add(site, form, src, dst, exp, act, events, duration, **kw):
        i = len(flows)
        flows.append(Flow(site, form, src, 40000 + i, dst, 1094 if form == "xrootd" else 443,
                          exp, act, events, base + i * 1_000_000, duration, **kw))

    # Site 1 (CERN-PROD)
    add(s1, "flowmark-json", s1.host4(1), s2.host4(1), 2, 1,
        [("start", 0, 0), ("ongoing", 3 * G, 20_000), ("ongoing", 7 * G, 40_000),
         ("end", 10 * G, 55_000)], 120.5, duplicate={"ongoing"})
    add(s1, "flowmark-json", s1.host4(2), s3.host4(1), 2, 3,
        [("start", 0, 0), ("ongoing", 0, 2 * G), ("end", 1000, 5 * G)], 64.25)
    add(s1, "xrootd", s1.host6(1), s2.host6(2), 2, 1,
        [("start", 0, 0), ("end", 40 * G, 1_234_567)], 300.0, family=6,
        duplicate={"start"})
    add(s1, "flowmark", s1.host4(3), s3.host4(2), 3, 1,
        [("start", None, None), ("ongoing", None, None), ("end", None, None)], None)
    add(s1, "dcache", s1.host4(4), OUTSIDE4, 3, 4,
        [("start", 0, 0), ("end", 777_777, 12)], 9.0)
    add(s1, "flowmark-json", s1.host4(5), s2.host4(5), 2, 2,   # left open
        [("start", 0, 0), ("ongoing", 5000, 5000)], None)
    # Site 2 (BNL-ATLAS)
    add(s2, "flowd", s2.host4(10), s1.host4(10), 2, 1,
        [("start", None, None), ("end", None, None)], 33.0)
    add(s2, "flowd-go-bare", s2.host4(11), s3.host4(11), 2, 40,  # activity unnamed
        [("start", None, None), ("ongoing", None, None), ("end", None, None)], 18.0,
        duplicate={"end"})
    add(s2, "flowd-go-header", s2.host4(12), s1.host4(12), 77, 5,  # experiment unnamed
        [("start", None, None), ("end", None, None)], 2.5)
    add(s2, "xrootd", s2.host6(13), s3.host6(13), 2, 3,
        [("start", 0, 0), ("end", 3 * G, 8 * G)], 45.0, family=6)
    add(s2, "dcache", s2.host6(14), s1.host6(14), 3, 1,
        [("start", 0, 0), ("end", 2 * G, 4096)], 20.0, family=6)
    add(s2, "flowmark", s2.host6(15), s3.host6(15), 2, 2,   # over IPv6, left open
        [("start", None, None)], None, family=6)
    # Site 3 (DESY-HH)
    add(s3, "flowmark", s3.host4(20), s1.host4(20), 2, 1,
        [("start", None, None), ("end", None, None)], None)
    add(s3, "xrootd", s3.host4(21), s2.host4(21), 3, 4,
        [("start", 0, 0), ("end", 6 * G, 100)], 75.0, duplicate={"end", "relay"})
    add(s3, "flowmark-json", s3.host6(22), s1.host6(22), 77, 5,
        [("start", 0, 0), ("ongoing", 100, 900), ("ongoing", 100, 1900),
         ("end", 100, 2900)], 7.75, family=6, duplicate={"start", "end"})
    add(s3, "flowd-go-bare", s3.host4(23), OUTSIDE4, 2, 1,
        [("start", None, None), ("end", None, None)], 1.0)
    add(s3, "dcache", s3.host4(24), s2.host4(24), 2, 2,   # left open
        [("start", 0, 0)], None)
    return flows


# Malformed datagrams: (payload, the reject reason flowmarkd counts).
def malformed():
    good = json.loads(Flow(SITES[0], "flowd-go-bare", "10.91.99.1", 1, "10.92.99.1", 2, 2, 1,
                           [], now_micros(), 1.0).datagram("start", None, None))

    def variant(change):
        d = json.loads(json.dumps(good))
        change(d)
        return json.dumps(d).encode()

    return [
        (b"{\"version\": 1, \"flow-lifecycle\": ", "not_json"),
        (b"<134>1 2026-12-07T00:00:00Z host flowd - other-msgid - {}", "bad_header"),
        (b"", "empty"),
        (b"[1, 2, 3]", "bad_header"),  # neither a header nor a JSON object
        (variant(lambda d: d.update({"flow-id": [1, 2]})), "not_object"),
        (variant(lambda d: d.pop("flow-id")), "missing_field"),
        (variant(lambda d: d["flow-id"].update({"src-port": 70000})), "port_out_of_range"),
        (variant(lambda d: d["flow-lifecycle"].update({"state": "paused"})), "unknown_state"),
        (variant(lambda d: d["flow-id"].update({"src-ip": "fd91::1"})), "afi_mismatch"),
        (variant(lambda d: d["flow-id"].update({"dst-ip": "10.92.300.1"})), "bad_address"),
    ]


# ---- what a collector must make of them -------------------------------------------------------
def expected_records(flows):
    """One dict per flow, in the shape of collector::append_json's records: identity
    (protocol, src_ip, src_port, dst_ip, dst_port, start_time in µs), end_time (µs; None while
    open), state ("complete" or "open"), duration (s; None while open), bytes_sent,
    bytes_received, volume (the last usage; 0 without), experiment_id, activity_id,
    experiment, activity (None where the registry has no name), src_site, dst_site (None
    where no site). `flowmark firefly send` stamps the end with its clock: for those flows
    end_time and duration are None and "end_window" gives (earliest, latest) µs of the
    sends; "form" says the producer."""
    out = []
    for f in flows:
        usage = [(s, r) for _, s, r in f.events if s is not None]
        sent, received = usage[-1] if usage else (0, 0)
        rec = {"protocol": f.protocol, "src_ip": f.src, "src_port": f.sport,
               "dst_ip": f.dst, "dst_port": f.dport,
               "start_time": f.start, "end_time": None,
               "state": "complete" if f.ended else "open", "duration": None,
               "bytes_sent": sent, "bytes_received": received, "volume": max(sent, received),
               "experiment_id": f.exp, "activity_id": f.act,
               "experiment": experiment_name(f.exp),
               "activity": activity_name(f.exp, f.act) if experiment_name(f.exp) else None,
               "src_site": site_of(f.src) or None, "dst_site": site_of(f.dst) or None,
               "form": f.form}
        if f.ended and f.duration is not None:
            rec["end_time"] = f.start + int(f.duration * 1e6)
            rec["duration"] = f.duration
        if f.form == "flowmark" and f.ended:
            rec["end_window"] = f.sent_window
        out.append(rec)
    return out


def group_labels(rec):
    """The aggregate metrics' labels of a record: names, or ids where unnamed; sites or ""."""
    return (rec["experiment"] or str(rec["experiment_id"]),
            rec["activity"] or str(rec["activity_id"]),
            rec["src_site"] or "", rec["dst_site"] or "")


def expected_totals(flows):
    """{(experiment, activity, src_site, dst_site): {"bytes", "flows", "open"}}: bytes is the
    sum of the flows' volumes, flows their number, open those not ended."""
    totals = {}
    for rec in expected_records(flows):
        t = totals.setdefault(group_labels(rec), {"bytes": 0, "flows": 0, "open": 0})
        t["bytes"] += rec["volume"]
        t["flows"] += 1
        t["open"] += rec["state"] == "open"
    return totals


# ---- HTTP inside the collector namespace ------------------------------------------------------
def http_get(ns, port, path, timeout=5):
    """GET http://127.0.0.1:port/path from inside namespace `ns` (the socket is made there)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.sock = in_netns(ns, lambda: socket.create_connection(("127.0.0.1", port), timeout))
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read().decode()
        if r.status != 200:
            raise OSError(f"GET {path}: HTTP {r.status}: {body[:200]}")
        return body
    finally:
        conn.close()


def wait_for(what, check, timeout=DEADLINE, every=0.2):
    """Polls check() until it returns (True, value); fails with the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            ok, last = check()
            if ok:
                return last
        except OSError as e:  # not listening yet
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen:\n{last}")


def stop_process(p, timeout=10):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@unittest.skipUnless(os.geteuid() == 0, "needs root (network namespaces)")
@unittest.skipUnless(os.access(PROMETHEUS, os.X_OK),
                     f"{PROMETHEUS} not installed (apt-get install prometheus)")
class CollectorOfThreeSites(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        for binary in (FLOWMARK, FLOWMARKD):
            if not os.access(binary, os.X_OK):
                raise RuntimeError(f"{binary} is missing: build first")
        cls.dir = tempfile.mkdtemp(prefix="flowmark-collector-")
        cls.addClassCleanup(shutil.rmtree, cls.dir, True)
        cls.topology = Topology()
        cls.addClassCleanup(Topology.destroy)  # after the processes (cleanups run LIFO)
        cls.topology.create()
        cls.C = cls.topology.collector
        cls.registry = os.path.join(cls.dir, "registry.json")
        cls.store = os.path.join(cls.dir, "flows.db")
        with open(cls.registry, "w") as f:
            json.dump(REGISTRY, f)
        cls.flowmarkd = cls.start_flowmarkd()
        cls.prometheus = cls.start_prometheus()
        cls.flows = make_flows()
        cls.malformed = malformed()
        cls.send_everything()

    # ---- processes ---------------------------------------------------------------------
    @classmethod
    def spawn(cls, ns, args, log):
        out = open(os.path.join(cls.dir, log), "w")
        cls.addClassCleanup(out.close)
        p = subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=out,
                             stderr=subprocess.STDOUT)
        p.log = out.name
        Topology.processes.append(p)  # killed by Topology.destroy() if still running
        cls.addClassCleanup(stop_process, p)
        return p

    @staticmethod
    def log_of(p):
        with open(p.log) as f:
            return f.read()

    @classmethod
    def start_flowmarkd(cls):
        config = os.path.join(cls.dir, "flowmark.toml")
        sites = "".join(f'[[site]]\nname = "{s.name}"\nnetworks = ["{s.net4}", "{s.net6}"]\n\n'
                        for s in SITES)
        with open(config, "w") as f:
            f.write("[service]\n"
                    f'registry = "{cls.registry}"\n\n'
                    f"{sites}"
                    "[source.ff]\n"
                    'type = "firefly"\n'
                    f"port = {FIREFLY_PORT}\n\n"
                    "[backend.metrics]\n"
                    'type = "prometheus"\n'
                    f'listen = "127.0.0.1:{METRICS_PORT}"\n'
                    "flow_metrics = false\n\n"
                    "[backend.store]\n"
                    'type = "store"\n'
                    f'path = "{cls.store}"\n'
                    "flush_interval = 100\n")
        p = cls.spawn(cls.C, [FLOWMARKD, "-c", config], "flowmarkd.log")
        wait_for("flowmarkd running", lambda: (
            p.poll() is None and "flowmarkd running" in cls.log_of(p), cls.log_of(p)),
            timeout=15, every=0.05)
        if p.poll() is not None:
            raise AssertionError(f"flowmarkd exited: {cls.log_of(p)}")
        return p

    @classmethod
    def start_prometheus(cls):
        config = os.path.join(cls.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: flowmark\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{METRICS_PORT}']\n")
        p = cls.spawn(cls.C, [PROMETHEUS, f"--config.file={config}",
                              f"--storage.tsdb.path={os.path.join(cls.dir, 'tsdb')}",
                              f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
                      "prometheus.log")
        return p

    # ---- sending -----------------------------------------------------------------------
    @classmethod
    def send_everything(cls):
        """Every site sends its flows' fireflies (sites in parallel, each in order)."""
        errors = []

        def run(site):
            try:
                cls.send_site(site)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"{site.name}: {e!r}")

        threads = [threading.Thread(target=run, args=(s,)) for s in SITES]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise AssertionError("sending failed: " + "; ".join(errors))

    @classmethod
    def socket_in(cls, site, family):
        fam = socket.AF_INET6 if family == 6 else socket.AF_INET
        s = in_netns(site.ns, lambda: socket.socket(fam, socket.SOCK_DGRAM))
        return s, ((site.collector6 if family == 6 else site.collector4), FIREFLY_PORT)

    @classmethod
    def send_site(cls, site):
        socks = {f: cls.socket_in(site, f) for f in (4, 6)}
        try:
            for f in (x for x in cls.flows if x.site is site):
                if f.form == "flowmark":
                    cls.send_with_flowmark(f)
                    continue
                sock, to = socks[f.family]
                for state, sent, received in f.events:
                    wire = f.datagram(state, sent, received)
                    sock.sendto(wire, to)
                    if state in f.duplicate:
                        sock.sendto(wire, to)  # the same datagram again
                    if state == "end" and "relay" in f.duplicate:
                        dst_site = next(s for s in SITES if s.site_of(f.dst))
                        rs, rto = cls.socket_in(dst_site, 4)
                        with rs:
                            rs.sendto(wire, rto)
            if site is SITES[0]:
                sock, to = socks[4]
                for payload, _ in cls.malformed:
                    sock.sendto(payload, to)
        finally:
            for s, _ in socks.values():
                s.close()

    @classmethod
    def send_with_flowmark(cls, f):
        to = (f"[{f.site.collector6}]" if f.family == 6 else f.site.collector4)
        lines = "".join(f"{state} {f.protocol} {f.src} {f.sport} {f.dst} {f.dport} "
                        f"{f.exp} {f.act}\n" for state, _, _ in f.events)
        t0 = now_micros()
        r = subprocess.run(["ip", "netns", "exec", f.site.ns, FLOWMARK, "firefly", "send",
                            "--to", f"{to}:{FIREFLY_PORT}", "--registry", cls.registry,
                            "--start-time", rfc3339(f.start),
                            "--hostname", f"{f.site.name.lower()}.example.org"],
                           input=lines, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=10)
        f.sent_window = (t0, now_micros())
        if r.returncode != 0:
            raise AssertionError(f"flowmark firefly send: exit {r.returncode}: {r.stderr}")

    # ---- Prometheus --------------------------------------------------------------------
    def query(self, expr):
        from urllib.parse import urlencode
        doc = json.loads(http_get(self.C, PROMETHEUS_PORT,
                                  "/api/v1/query?" + urlencode({"query": expr})))
        self.assertEqual(doc["status"], "success", doc)
        return doc["data"]["result"]

    def series(self, name):
        """{(experiment, activity, src_site, dst_site): value} of one aggregate metric."""
        out = {}
        for r in self.query(name):
            m = r["metric"]
            out[(m.get("experiment", ""), m.get("activity", ""), m.get("src_site", ""),
                 m.get("dst_site", ""))] = float(r["value"][1])
        return out

    def wait_target_up(self):
        def up():
            targets = json.loads(http_get(self.C, PROMETHEUS_PORT, "/api/v1/targets"))
            active = targets["data"]["activeTargets"]
            return any(t["health"] == "up" for t in active), active
        wait_for("Prometheus to scrape flowmarkd", up)

    # ---- checks ------------------------------------------------------------------------
    def test_the_expectations_cover_every_case(self):
        """The scenario itself: every form, both families, open flows, duplicates, unnamed
        ids, a destination in no site — so that the other checks mean something."""
        records = expected_records(self.flows)
        self.assertEqual({r["form"] for r in records},
                         {"flowmark", "flowmark-json", "flowd", "flowd-go-bare",
                          "flowd-go-header", "xrootd", "dcache"})
        self.assertEqual({f.family for f in self.flows}, {4, 6})
        self.assertTrue(any(r["state"] == "open" for r in records))
        self.assertTrue(any(r["dst_site"] is None for r in records))
        self.assertTrue(any(r["experiment"] is None for r in records))
        self.assertTrue(any(r["experiment"] and r["activity"] is None for r in records))
        self.assertTrue(all(f.sent_window for f in self.flows if f.form == "flowmark"))
        self.assertGreaterEqual(sum(len(f.duplicate) for f in self.flows), 5)
        self.assertEqual(len({(r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"])
                              for r in records}), len(records))
        self.assertEqual(len({group_labels(r)[2:] for r in records}), 8)  # site pairs

    def test_prometheus_scrapes_the_expected_totals(self):
        self.wait_target_up()
        totals = expected_totals(self.flows)
        for metric, field in (("flowmark_collector_bytes_total", "bytes"),
                              ("flowmark_collector_flows_total", "flows"),
                              ("flowmark_collector_open_flows", "open")):
            want = {k: float(v[field]) for k, v in totals.items()}

            def same():
                got = self.series(metric)
                return got == want, self.diff(want, got)
            wait_for(f"{metric} in Prometheus to equal the totals sent", same)
            print(f"{metric}: {len(want)} groups, sum {sum(want.values()):.0f}")
        self.assertEqual(self.query("flowmark_collector_series_overflow_total")[0]["value"][1],
                         "0")
        meta = json.loads(http_get(self.C, PROMETHEUS_PORT, "/api/v1/metadata"))["data"]
        self.assertEqual(meta["flowmark_collector_bytes_total"][0]["type"], "counter")
        self.assertEqual(meta["flowmark_collector_open_flows"][0]["type"], "gauge")

    def test_malformed_datagrams_are_counted_as_rejects(self):
        self.wait_target_up()
        want = {}
        for _, reason in self.malformed:
            want[reason] = want.get(reason, 0) + 1

        def counted():
            got = {r["metric"]["reason"]: int(float(r["value"][1])) for r in
                   self.query('flowmark_source_rejected_total{source="ff"} > 0')}
            return got == want, f"want {want}\ngot  {got}"
        wait_for("the malformed datagrams counted by reason", counted)
        print(f"rejected by reason: {want}")

    def test_each_copy_of_a_firefly_is_counted_once(self):
        """The copies sent (a start twice, an end twice or relayed) are what the pipeline
        suppressed; that the aggregates count each flow once is checked with the totals."""
        self.wait_target_up()
        want = {"duplicate_start": sum("start" in f.duplicate for f in self.flows),
                "duplicate_after_end": sum(("end" in f.duplicate) + ("relay" in f.duplicate)
                                           for f in self.flows)}

        def counted():
            got = {o: int(float(r[0]["value"][1])) if r else None for o, r in (
                (o, self.query(f'flowmark_pipeline_events_total{{outcome="{o}"}}'))
                for o in want)}
            return got == want, f"want {want}\ngot  {got}"
        wait_for("the copies counted as duplicates", counted)
        print(f"copies suppressed: {want}")

    # ---- the store and the report ------------------------------------------------------------
    COMPARED = ("state", "bytes_sent", "bytes_received", "volume", "experiment_id",
                "activity_id", "experiment", "activity", "src_site", "dst_site")

    def stored(self):
        """{identity: row} of the store (read-only, while flowmarkd writes: WAL)."""
        try:
            con = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=5)
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM flows").fetchall()
            con.close()
        except sqlite3.Error:
            return {}
        return {(r["protocol"], r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"],
                 r["start_time"]): dict(r) for r in rows}

    @staticmethod
    def identity(rec):
        return (rec["protocol"], rec["src_ip"], rec["src_port"], rec["dst_ip"], rec["dst_port"],
                rec["start_time"])

    def test_the_store_holds_exactly_the_expected_flows(self):
        want = {self.identity(r): r for r in expected_records(self.flows)}

        def same():
            got = self.stored()
            lines = [f"  missing {k}" for k in want if k not in got]
            lines += [f"  unexpected {k}" for k in got if k not in want]
            for k, w in want.items():
                g = got.get(k)
                if g is None:
                    continue
                g = dict(g, bytes_sent=g["bytes_sent"] or 0,
                         bytes_received=g["bytes_received"] or 0)
                for field in self.COMPARED:
                    if g[field] != w[field]:
                        lines.append(f"  {k} {field}: want {w[field]!r}, got {g[field]!r}")
                if w["state"] == "open":
                    if g["end_time"] is not None:
                        lines.append(f"  {k} end_time: want null, got {g['end_time']}")
                elif "end_window" in w:  # `flowmark firefly send` stamps its own clock
                    lo, hi = w["end_window"]
                    if not lo <= g["end_time"] <= hi:
                        lines.append(f"  {k} end_time {g['end_time']} not in [{lo}, {hi}]")
                elif w["end_time"] is not None:
                    if g["end_time"] != w["end_time"]:
                        lines.append(f"  {k} end_time: want {w['end_time']}, got {g['end_time']}")
                    if abs(g["duration"] - w["duration"]) > 1e-6:
                        lines.append(f"  {k} duration: want {w['duration']}, got {g['duration']}")
                    want_tp = w["volume"] / w["duration"] if w["duration"] > 0 else 0
                    if abs(g["throughput"] - want_tp) > 1e-6 * max(want_tp, 1):
                        lines.append(f"  {k} throughput: want {want_tp}, got {g['throughput']}")
            return not lines, "\n".join(lines)
        wait_for("the store to hold exactly the flows sent", same)
        print(f"store: {len(want)} flows as sent")

    def test_the_report_totals_equal_the_sums_sent(self):
        totals = expected_totals(self.flows)
        want = {k: (v["flows"], v["bytes"]) for k, v in totals.items()}

        def same():
            r = subprocess.run([FLOWMARK, "report", "--store", self.store, "--by",
                                "experiment,activity,src_site,dst_site", "--format", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=30)
            if r.returncode != 0:
                return False, r.stderr
            got = {}
            for row in json.loads(r.stdout):
                key = (row["experiment"] or str(row["experiment_id"]),
                       row["activity"] or str(row["activity_id"]),
                       row["src_site"] or "", row["dst_site"] or "")
                got[key] = (row["flows"], row["bytes"])
            return got == want, self.diff(want, got)
        wait_for("flowmark report's totals to equal the sums sent", same)
        print(f"report: {len(want)} groups, {sum(f for f, _ in want.values())} flows, "
              f"{sum(b for _, b in want.values())} bytes")

    @staticmethod
    def diff(want, got):
        lines = []
        for k in sorted(set(want) | set(got)):
            if want.get(k) != got.get(k):
                lines.append(f"  {k}: want {want.get(k)}, got {got.get(k)}")
        return "\n".join(lines) or "  (equal)"


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
