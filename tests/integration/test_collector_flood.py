#!/usr/bin/env python3
"""The collector under a flood, tried as an attacker would (issue 15): distinct start
fireflies, far more than [service] max_live_flows, into flowmarkd's firefly source with the
SQLite store behind it.

    /usr/bin/python3 tests/integration/test_collector_flood.py BUILD_DIR [unittest options]

In a network namespace of its own (its loopback only): flowmarkd with max_live_flows =
100000; bench/firefly_flood sends 2,000,000 start fireflies of distinct flows (paced, as
fast as a loaded CI machine takes them; what the kernel drops is read from the namespace's
UDP RcvbufErrors, not guessed), then a slow tail of 2,000 more, then a second flood during
which flowmarkd gets SIGTERM. Checks: resident memory stays bounded (VmHWM); every start the
source took beyond the bound evicted the flow idle longest (counted); the flows sent last
are in the store; at SIGTERM the live flows are flushed to the store as open; every event
the store backend was offered is accounted for. Python 3 stdlib only (sqlite3).
"""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_collector_flood.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARKD = os.path.join(BUILD_DIR, "flowmarkd")
FLOOD = os.path.join(BUILD_DIR, "bench", "firefly_flood")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from netns_helpers import (NetnsProcesses, _delete_namespace, _live_namespaces, _sh,  # noqa: E402
                           wait_until, wait_udp_ready)

MAX_LIVE = 100_000
FLOOD_COUNT = 2_000_000
TAIL = 2_000
PORT = 10514
METRICS_PORT = 19090
# Anonymous memory: 100,000 live flows at ~180 bytes in the pipeline and ~110 in the metrics
# backend, two backend queues (65,536 events of ~240 bytes, in two vectors each), the store's
# buffer (20,000 records here; it fills while the database is slower than the flood) and
# SQLite's page cache (64 MiB): ~120 MB once a burst is absorbed (while the queues are full,
# ~100 MB more), whatever the flood's length; without the bound
# 1,900,000 flows took ~280 MB and grew with every flow (issue 15's measurement).
RSS_BOUND_KB = 192 * 1024
# From the first million to the second: unbounded state would add ~170 MB (the pipeline's
# ~170 bytes a flow, for a million more distinct flows) and more; what moves otherwise is
# allocator slack and whether the queues' vectors were given back yet (up to ~20 MB).
RSS_GROWTH_KB = 48 * 1024


def write_conf(path, db, before="", after=""):
    """flowmarkd's configuration: `before`, a firefly source on 127.0.0.1:PORT, a store
    backend into `db` (its table continued by `after`)."""
    with open(path, "w") as f:
        f.write(f"""{before}[source.fireflies]
type = "firefly"
bind = "127.0.0.1"
port = {PORT}
[backend.store]
type = "store"
path = "{db}"
{after}""")


def flow_ip(i):
    """The source address of firefly_flood's flow i: 10.0.0.0 + i."""
    a = 0x0A000000 + i
    return ".".join(str(a >> s & 0xFF) for s in (24, 16, 8, 0))


def udp_rcvbuf_errors(ns):
    out = _sh(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]).stdout.splitlines()
    rows = [line.split() for line in out if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def final_counters(stderr):
    m = re.search(r"counters (\{.*\})", stderr)
    return json.loads(m.group(1)) if m else {}


class CollectorFlood(NetnsProcesses, unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root for a network namespace")
        for path in (FLOWMARKD, FLOOD):
            if not os.access(path, os.X_OK):
                self.fail(f"{path} is missing: build first")
        self.ns = f"fmflood{os.getpid()}"
        _sh(["ip", "netns", "add", self.ns])
        _live_namespaces.add(self.ns)
        _sh(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        self.addCleanup(_delete_namespace, self.ns)
        self.dir = tempfile.mkdtemp(prefix="fmflood")
        self.db = os.path.join(self.dir, "flows.db")
        self.conf = os.path.join(self.dir, "flowmark.toml")
        write_conf(self.conf, self.db, f"""[service]
max_live_flows = {MAX_LIVE}
""", f"""buffer = 20000
[backend.metrics]
type = "prometheus"
listen = "127.0.0.1:{METRICS_PORT}"
flow_metrics = false
""")

    def metric(self, name, **labels):
        """A sample of flowmarkd's exposition (scraped inside the namespace), 0 if absent."""
        rc, out, _ = self.run_cmd(self.ns, ["curl", "-s", "--max-time", "5",
                                            f"http://127.0.0.1:{METRICS_PORT}/metrics"])
        if rc != 0:
            return None
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in out.splitlines():
            head, _, value = line.rpartition(" ")
            if head == (f"{name}{{{want}}}" if labels else name):
                return float(value)
        return 0.0

    @staticmethod
    def anon_kb(pid):
        """Anonymous resident memory (what a flood could exhaust). The store's file pages
        (SQLite's WAL index and page reads) are page cache the kernel can take back, and
        grow with the database, not with the live flows: not counted."""
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"RssAnon:\s+(\d+)", f.read()).group(1))

    def store_drained(self):
        """The store backend's queue is empty and it was given every event offered so far."""
        offered = self.metric("flowmark_backend_offered_total", backend="store")
        delivered = self.metric("flowmark_backend_events_total", backend="store",
                                outcome="delivered")
        dropped = self.metric("flowmark_backend_events_total", backend="store",
                              outcome="dropped_queue_full")
        return None not in (offered, delivered, dropped) and offered == delivered + dropped

    def flood(self, first, count, rate):
        rc, out, err = self.run_cmd(self.ns, [FLOOD, "--to", f"127.0.0.1:{PORT}", "--first",
                                              str(first), "--count", str(count), "--rate",
                                              str(rate)], timeout=120)
        self.assertEqual(rc, 0, err)
        return json.loads(out)

    def rows(self, sql, *args):
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def test_flood_is_bounded_and_the_last_flows_are_stored(self):
        d = self.spawn(self.ns, [FLOWMARKD, "-c", self.conf])
        wait_udp_ready(self, self.ns, d, PORT)
        drops_before = udp_rcvbuf_errors(self.ns)
        # In two halves: the anonymous resident memory after the second must be that after the
        # first (bounded: the live flows stop at max_live_flows early in the first half).
        # The store cannot write as fast as a flood arrives (UDP cannot wait: what does not fit
        # its queue is dropped, counted); once a half has been taken in, the flows sent last
        # must reach it.
        half = FLOOD_COUNT // 2
        peaks = []
        sent = {"sent": 0, "seconds": 0.0}
        for first in (0, half):
            s = self.flood(first, half, 250_000)
            sent["sent"] += s["sent"]
            sent["seconds"] += s["seconds"]
            wait_until(self.store_drained, 120, "the store backend's queue drained")
            # The queues' vectors, full during the burst, are given back a second after it:
            # the figure is read once the memory has settled (within 2 MB for 1.5 s), not at
            # the first moment under the bound, which came before or after that give-back by
            # chance (±40 MB from run to run, more than the growth allowed).
            wait_until(lambda: self.anon_kb(d.pid) < RSS_BOUND_KB, 15,
                       f"anonymous memory back under {RSS_BOUND_KB // 1024} MB after the burst")
            samples = []

            def settled():
                now = time.monotonic()
                samples.append((now, self.anon_kb(d.pid)))
                recent = [kb for t, kb in samples if t >= now - 1.5]
                return (now - samples[0][0] >= 1.5 and max(recent) - min(recent) < 2048
                        and min(recent))
            peaks.append(wait_until(settled, 20, "anonymous memory settled after the burst"))
        self.assertEqual(sent["sent"], FLOOD_COUNT)
        # The tail: slow enough that none is dropped, and the last thing sent.
        self.flood(FLOOD_COUNT, TAIL, 20_000)
        tail = {flow_ip(i) for i in range(FLOOD_COUNT, FLOOD_COUNT + TAIL)}

        def tail_in_store():
            try:
                got = self.rows("SELECT src_ip FROM flows WHERE src_ip LIKE '10.30.%'")
            except sqlite3.Error:
                return 0
            return len(tail & {r[0] for r in got})

        def tail_stored():
            return tail_in_store() == TAIL
        wait_until(tail_stored, 90, f"the last {TAIL} flows sent in the store")
        anon_kb = self.anon_kb(d.pid)
        with open(f"/proc/{d.pid}/status") as f:
            hwm_kb = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
        print(f"flood: {FLOOD_COUNT} sent in {sent['seconds']:.1f} s; anonymous resident after "
              f"1,000,000 {peaks[0] / 1024:.1f} MB, after 2,000,000 {peaks[1] / 1024:.1f} MB, "
              f"with the tail {anon_kb / 1024:.1f} MB; peak resident with file pages "
              f"{hwm_kb / 1024:.1f} MB", file=sys.stderr)
        self.assertLess(peaks[1] - peaks[0], RSS_GROWTH_KB, "resident memory grows with the flood")

        # SIGTERM under load: a second flood is being sent when the service is told to stop.
        load = subprocess.Popen(["ip", "netns", "exec", self.ns, FLOOD, "--to",
                                 f"127.0.0.1:{PORT}", "--first", "5000000", "--count",
                                 "400000", "--rate", "100000"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: load.poll() is None and load.kill())

        def load_arriving():
            try:
                return self.rows("SELECT count(*) FROM flows WHERE src_ip LIKE '10.76.%'")[0][0] > 0
            except sqlite3.Error:
                return False
        # SIGTERM once the second flood's flows reach the store: in the middle of the load.
        wait_until(load_arriving, 30, "the second flood's first flows in the store")
        d.send_signal(signal.SIGTERM)
        out, err = d.communicate(timeout=120)
        load.communicate(timeout=60)
        self.assertEqual(d.returncode, 0, err[-2000:])
        drops = udp_rcvbuf_errors(self.ns) - drops_before
        c = final_counters(err)
        self.assertTrue(c, f"no counters in flowmarkd's last words: {err[-2000:]}")
        starts = c.get("flowmark_source_events_total{source=fireflies,state=start}", 0)
        evicted = c.get("flowmark_pipeline_evicted_total", 0)
        received = c.get("flowmark_firefly_datagrams_total{source=fireflies}", 0)
        m = re.search(r"stopped: (\d+) live flow\(s\) ended", err)
        live_at_stop = int(m.group(1)) if m else -1
        print(f"flood: received {received}, kernel drops {drops}, starts {starts}, evicted "
              f"{evicted}, live at stop {live_at_stop}", file=sys.stderr)
        # UDP: on a loaded machine the kernel drops much of a 250,000/s flood (833,174 of
        # 2,000,000 arrived once with two test jobs and two builds running); three times the
        # bound still floods the table (every start past it evicts).
        self.assertGreater(starts, MAX_LIVE * 3, "too few fireflies arrived to flood anything")
        self.assertEqual(live_at_stop, MAX_LIVE)
        # Every start beyond the bound ended the flow idle longest; nothing else ended flows.
        self.assertEqual(evicted, starts - MAX_LIVE)

        # The store backend: every event offered is delivered or dropped with a reason.
        offered = c.get("flowmark_backend_offered_total{backend=store}", 0)
        delivered = c.get("flowmark_backend_events_total{backend=store,outcome=delivered}", 0)
        full = c.get("flowmark_backend_events_total{backend=store,outcome=dropped_queue_full}", 0)
        self.assertEqual(offered, starts + evicted + live_at_stop)
        self.assertEqual(delivered + full, offered)
        # At SIGTERM the live flows were flushed as open (their end events bypass the queue
        # bound, and the store writes what it holds before it stops).
        open_rows = self.rows("SELECT count(*) FROM flows WHERE state = 'open'")[0][0]
        if full == 0:
            self.assertEqual(open_rows, MAX_LIVE)
            total = self.rows("SELECT count(*) FROM flows")[0][0]
            self.assertEqual(total, starts)
        else:
            # An evicted end dropped for a full queue leaves that flow's row open.
            self.assertGreaterEqual(open_rows, MAX_LIVE)
        # The tail is stored (evicted by the second flood, or open).
        self.assertEqual(tail_in_store(), TAIL)


class CollectorReload(NetnsProcesses, unittest.TestCase):
    """SIGHUP with a new site map: flows that start after the reload are accounted to the new
    sites, those stored before keep theirs, and no flow is lost across the reload."""

    def setUp(self):
        CollectorFlood.setUp(self)

    def write_conf(self, site):
        write_conf(self.conf, self.db, f"""[[site]]
name = "{site}"
networks = ["10.0.0.0/8"]
[[site]]
name = "DEST"
networks = ["192.0.2.0/24"]
""")

    def rows(self, sql, *args):
        return CollectorFlood.rows(self, sql, *args)

    def pairs(self, first, count):
        """Start and end fireflies of flows first..first+count-1."""
        rc, out, err = self.run_cmd(self.ns, [FLOOD, "--to", f"127.0.0.1:{PORT}", "--first",
                                              str(first), "--count", str(count), "--states",
                                              "start,end", "--rate", "20000"], timeout=60)
        self.assertEqual(rc, 0, err)

    def sites(self, first, count):
        """{src_site: flows} of the stored complete flows first..first+count-1."""
        want = {flow_ip(i) for i in range(first, first + count)}
        try:
            got = self.rows("SELECT src_ip, src_site FROM flows WHERE state = 'complete' AND "
                            "dst_site = 'DEST'")
        except sqlite3.Error:
            return {}
        out = {}
        for ip, site in got:
            if ip in want:
                out[site] = out.get(site, 0) + 1
        return out

    def test_sighup_applies_a_new_site_map_to_new_flows(self):
        self.write_conf("BEFORE")
        d = self.spawn(self.ns, [FLOWMARKD, "-c", self.conf])
        wait_udp_ready(self, self.ns, d, PORT)
        self.pairs(0, 100)
        wait_until(lambda: self.sites(0, 100) == {"BEFORE": 100}, 30,
                   "100 flows stored with site BEFORE")
        self.write_conf("AFTER")
        d.send_signal(signal.SIGHUP)
        # The reload is applied when a probe flow sent after it is stored with the new site.
        probe = [1_000_000]

        def reloaded():
            probe[0] += 1
            self.pairs(probe[0], 1)
            return self.sites(probe[0], 1).get("AFTER") == 1 or \
                self.sites(probe[0] - 1, 1).get("AFTER") == 1
        wait_until(reloaded, 15, "the new site map applied after SIGHUP")
        self.pairs(100, 100)
        wait_until(lambda: self.sites(100, 100) == {"AFTER": 100}, 30,
                   "100 flows stored with site AFTER")
        d.send_signal(signal.SIGTERM)
        out, err = d.communicate(timeout=30)
        self.assertEqual(d.returncode, 0, err[-2000:])
        self.assertEqual(self.sites(0, 100), {"BEFORE": 100})
        self.assertEqual(self.sites(100, 100), {"AFTER": 100})
        probes = probe[0] - 1_000_000
        self.assertEqual(self.rows("SELECT count(*) FROM flows")[0][0], 200 + probes)
        c = final_counters(err)
        self.assertEqual(c.get("flowmark_reloads_total{outcome=applied}"), 1)


if __name__ == "__main__":
    unittest.main()
