#!/usr/bin/env python3
"""The `dashboard` backend in a real browser.

    python3 tests/integration/test_dashboard.py BUILD_DIR [unittest options]

flowmarkd runs in a network namespace of its own with a firefly source, a store backend and a
dashboard backend whose static_dir is the build's page (BUILD_DIR/dashboard). The test sends start,
ongoing and end fireflies of flows of three experiments (one the registry does not know)
between three sites, computes flows, open flows, bytes, bytes per site pair and per
experiment from what it sent, and checks that
  - /api/summary says exactly that (after waiting for it, with a deadline);
  - headless Chromium (Debian `chromium`), loading the page from flowmarkd, shows the same
    numbers in its DOM (--dump-dom: the elements' data-value under their stable ids, and
    the text shown);
  - those numbers are the store's: a store backend (SQLite) on the same events holds as many
    flows and open flows, and as many bytes (the sum of its flows' volumes), as the page shows;
  - a screenshot of the page is written, kept as a test artefact:
    BUILD_DIR/test-artefacts/dashboard/dashboard.png (and dashboard.html, the DOM).
Skips (exit 4, reason printed) only when chromium is absent. Root (namespaces).

Sites: when this build's configuration knows `[[site]]` tables (the collector's site map),
the flows' addresses lie in three sites' networks and the pairs are checked by name; a
build without them is told by `flowmarkd --check`, and the pairs are then all (none → none).
Bytes: each flow's start (no usage), an ongoing with 40 % of its usage and an end (or, for
the flows left open, another ongoing) with all of it; the dashboard adds for each event its
volume less the volume the pipeline forwarded before it (FlowEvent::previous_volume), so each
flow counts its final volume once. A copy of a start and of an end is sent too.
"""

import datetime
import html.parser
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

from netns_helpers import _delete_namespace, _live_namespaces, _sh, in_netns

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_dashboard.py BUILD_DIR [unittest options]")
BUILD = os.path.abspath(sys.argv.pop(1))
FLOWMARKD = os.path.join(BUILD, "flowmarkd")
STATIC_DIR = os.path.join(BUILD, "dashboard")
ARTEFACTS = os.path.join(BUILD, "test-artefacts", "dashboard")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FIREFLY_PORT = 10514
DASH_PORT = 8750

SITES = {"SITE-A": "10.1.0.0/16", "SITE-B": "10.2.0.0/16", "SITE-C": "10.3.0.0/16"}
SITE_OF = {"10.1.": "SITE-A", "10.2.": "SITE-B", "10.3.": "SITE-C"}
# The built-in registry: 2 = atlas, 3 = cms; 77 is not in it (the dashboard shows its id).
EXPERIMENTS = {2: "atlas", 3: "cms", 77: "77"}

# (src, sport, dst, dport, experiment, sent, received, ends): one flow each.
FLOWS = [
    ("10.1.0.1", 40001, "10.2.0.1", 1094, 2, 5_000_000, 20_000, True),
    ("10.1.0.2", 40002, "10.2.0.2", 1094, 2, 7_000_000, 30_000, True),
    ("10.2.0.3", 40003, "10.1.0.3", 443, 3, 10_000, 3_000_000, True),
    ("10.3.0.4", 40004, "10.1.0.4", 443, 3, 1_250_000, 0, True),
    ("10.1.0.5", 40005, "10.3.0.5", 2811, 77, 900_000, 800_000, True),
    ("10.3.0.6", 40006, "10.2.0.6", 1094, 2, 64_000, 64_000, True),
    ("10.1.0.7", 40007, "10.2.0.7", 1094, 2, 2_500_000, 1_000, False),  # stays open
    ("10.2.0.8", 40008, "10.3.0.8", 443, 77, 0, 333_333, False),         # stays open
]


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat()


def firefly(flow, state, start, now, part=1.0):
    """One firefly of `flow`; an ongoing one carries `part` of its final usage."""
    src, sport, dst, dport, exp, sent, received, _ = flow
    sent, received = int(sent * part), int(received * part)
    doc = {"version": 1,
           "flow-lifecycle": {"state": state, "start-time": iso(start), "current-time": iso(now)},
           "flow-id": {"afi": "ipv4", "src-ip": src, "dst-ip": dst, "protocol": "tcp",
                       "src-port": sport, "dst-port": dport},
           "context": {"experiment-id": exp, "activity-id": 1, "application": "dashboard-test"}}
    if state == "end":
        doc["flow-lifecycle"]["end-time"] = iso(now)
    if state != "start":
        doc["usage"] = {"received": received, "sent": sent}
    return json.dumps(doc).encode()


def site_of(ip, with_sites):
    if not with_sites:
        return None
    return next(site for prefix, site in SITE_OF.items() if ip.startswith(prefix))


def expected(with_sites):
    """What the dashboard must show, computed from FLOWS alone."""
    totals = {"flows": len(FLOWS), "open_flows": sum(1 for f in FLOWS if not f[7]),
              "bytes": sum(max(f[5], f[6]) for f in FLOWS)}
    pairs, by_exp = {}, {}
    for src, _, dst, _, exp, sent, received, _ in FLOWS:
        key = (site_of(src, with_sites), site_of(dst, with_sites))
        p = pairs.setdefault(key, {"bytes": 0, "flows": 0})
        p["bytes"] += max(sent, received)
        p["flows"] += 1
        by_exp[EXPERIMENTS[exp]] = by_exp.get(EXPERIMENTS[exp], 0) + max(sent, received)
    return totals, pairs, by_exp


class Dom(html.parser.HTMLParser):
    """The dumped DOM: every element with an id (its attributes and text), and the rows of
    the tables' bodies (cells: text and attributes)."""

    def __init__(self, text):
        super().__init__()
        self.by_id, self.rows = {}, {}
        self._open = []      # [(tag, id or None)] of elements whose text is being collected
        self._body = None    # the id of the tbody being read
        self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.by_id[a["id"]] = {"attrs": a, "text": ""}
        self._open.append(a.get("id"))
        if tag == "tbody" and "id" in a:
            self._body = a["id"]
            self.rows[self._body] = []
        elif tag == "tr" and self._body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = {"attrs": a, "text": ""}

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows[self._body].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._body = None

    def handle_data(self, data):
        for element in self._open:
            if element is not None:
                self.by_id[element]["text"] += data
        if self._cell is not None:
            self._cell["text"] += data


class DashboardTest(unittest.TestCase):
    def setUp(self):
        if CHROMIUM is None:
            print("SKIPPED test_dashboard: chromium is not installed (Debian: apt-get install "
                  "chromium; scripts/install-deps.sh installs it)")
            sys.exit(4)
        for path in (FLOWMARKD, os.path.join(STATIC_DIR, "index.html"),
                     os.path.join(STATIC_DIR, "uPlot.iife.min.js")):
            self.assertTrue(os.path.exists(path), f"{path} is missing: build the project first")
        self.ns = f"fm-dash-{os.getpid()}"
        _sh(["ip", "netns", "add", self.ns])
        _live_namespaces.add(self.ns)
        self.addCleanup(_delete_namespace, self.ns)
        _sh(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        self.tmp = tempfile.mkdtemp(prefix="fm-dash-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.store = os.path.join(self.tmp, "flows.db")
        os.makedirs(ARTEFACTS, exist_ok=True)

    def netns(self, args):
        return ["ip", "netns", "exec", self.ns] + list(args)

    def config(self, with_sites):
        text = f"""
[service]
registry = "builtin"
[source.ff]
type = "firefly"
bind = "127.0.0.1"
port = {FIREFLY_PORT}
[backend.dash]
type = "dashboard"
listen = "127.0.0.1:{DASH_PORT}"
static_dir = "{STATIC_DIR}"
window = 5
bin = 10
latest = 20
[backend.store]
type = "store"
path = "{self.store}"
flush_interval = 100
"""
        if with_sites:
            for name, net in SITES.items():
                text += f'\n[[site]]\nname = "{name}"\nnetworks = ["{net}"]\n'
        path = os.path.join(self.tmp, "sites.toml" if with_sites else "flowmark.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def start_flowmarkd(self):
        # The site map when this build knows [[site]]; else none (see the docstring).
        check = subprocess.run([FLOWMARKD, "--check", "-c", self.config(True)],
                               capture_output=True, text=True, timeout=10)
        with_sites = check.returncode == 0
        if not with_sites:
            # Only "no such table" may turn the site map off; any other refusal is a failure.
            self.assertIn("unknown table or key 'site'", check.stderr,
                          f"flowmarkd refuses the configuration: {check.stderr}")
            print("note: this flowmarkd has no [[site]] tables: site pairs are (none → none)")
        log = open(os.path.join(self.tmp, "flowmarkd.log"), "w+")
        p = subprocess.Popen(self.netns([FLOWMARKD, "-c", self.config(with_sites)]),
                             stdout=log, stderr=subprocess.STDOUT)

        def stop():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            log.seek(0)
            with open(os.path.join(ARTEFACTS, "flowmarkd.log"), "w") as out:
                out.write(log.read())
            log.close()
        self.addCleanup(stop)
        deadline = time.monotonic() + 10
        while True:
            log.seek(0)
            text = log.read()
            if "dashboard on http://" in text and "flowmarkd running" in text:
                return with_sites
            if p.poll() is not None or time.monotonic() > deadline:
                self.fail(f"flowmarkd did not start (exit {p.poll()}):\n{text}")
            time.sleep(0.02)

    def summary(self):
        # The namespace's loopback: fetched by curl inside it.
        r = subprocess.run(self.netns(["curl", "-sS", "--max-time", "5",
                                       f"http://127.0.0.1:{DASH_PORT}/api/summary"]),
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, f"curl /api/summary: {r.stderr}")
        return json.loads(r.stdout)

    def chromium(self, *args):
        """Runs Chromium on the page; fails on any message the page logs to its console
        (an uncaught exception, a failed request) — Chromium prints them with
        --enable-logging=stderr as lines with ":CONSOLE"."""
        argv = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
                "--enable-logging=stderr", "--v=0",
                f"--user-data-dir={os.path.join(self.tmp, 'chromium')}",
                "--window-size=1280,1200", "--virtual-time-budget=4000", *args,
                f"http://127.0.0.1:{DASH_PORT}/"]
        r = subprocess.run(self.netns(argv), capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, HOME=self.tmp))
        self.assertEqual(r.returncode, 0, f"chromium failed: {r.stderr[-2000:]}")
        console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
        self.assertEqual(console, [], "the page logged to its console")
        return r.stdout

    def test_page_shows_what_was_sent(self):
        with_sites = self.start_flowmarkd()
        want_totals, want_pairs, want_by_exp = expected(with_sites)

        sock = in_netns(self.ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.addCleanup(sock.close)
        start = time.time() - 30
        to = ("127.0.0.1", FIREFLY_PORT)
        # Each flow: a start, an ongoing with part of its usage, then an end (or a second
        # ongoing for the flows that stay open) with all of it. The first flow's start and end
        # arrive twice (a copy relayed by the destination): counted once by the pipeline.
        sent = []
        for flow in FLOWS:
            sent.append(firefly(flow, "start", start, start))
        for flow in FLOWS:
            sent.append(firefly(flow, "ongoing", start, start + 10, part=0.4))
        now = time.time()
        for flow in FLOWS:
            sent.append(firefly(flow, "end" if flow[7] else "ongoing", start, now))
        sent.insert(1, sent[0])
        sent.append(sent[-len(FLOWS)])
        for datagram in sent:
            sock.sendto(datagram, to)

        deadline = time.monotonic() + 10
        while True:
            s = self.summary()
            if s["totals"] == want_totals:
                break
            if time.monotonic() > deadline:
                self.fail(f"/api/summary totals {s['totals']}, want {want_totals}")
            time.sleep(0.05)

        # The API: totals, pairs, per-experiment bytes over the bins, the latest records.
        got_pairs = {(p["src_site"], p["dst_site"]): {"bytes": p["bytes"], "flows": p["flows"]}
                     for p in s["site_pairs"]}
        self.assertEqual(got_pairs, want_pairs)
        self.assertEqual([p["bytes"] for p in s["site_pairs"]],
                         sorted((p["bytes"] for p in s["site_pairs"]), reverse=True))
        got_by_exp = {x["experiment"]: sum(x["bytes"]) for x in s["throughput"]["series"]}
        self.assertEqual(got_by_exp, want_by_exp)
        self.assertEqual(len(s["latest"]), len(FLOWS))
        latest = {r["src_port"]: r for r in s["latest"]}
        for src, sport, dst, dport, exp, sent, received, ends in FLOWS:
            r = latest[sport]
            self.assertEqual((r["src_ip"], r["dst_ip"], r["dst_port"], r["experiment_id"]),
                             (src, dst, dport, exp))
            self.assertEqual((r["bytes_sent"], r["bytes_received"], r["volume"]),
                             (sent, received, max(sent, received)))
            self.assertEqual(r["state"], "complete" if ends else "open")
            self.assertEqual(r["experiment"], None if exp == 77 else EXPERIMENTS[exp])
            self.assertEqual((r["src_site"], r["dst_site"]),
                             (site_of(src, with_sites), site_of(dst, with_sites)))

        # The page in Chromium: the same numbers.
        dump = self.chromium("--dump-dom")
        with open(os.path.join(ARTEFACTS, "dashboard.html"), "w") as f:
            f.write(dump)
        dom = Dom(dump)
        status = dom.by_id["status"]["attrs"]
        self.assertEqual(status.get("data-state"), "ok", dom.by_id["status"]["text"])
        self.assertGreaterEqual(int(status["data-polls"]), 1)
        for element, key in (("total-flows", "flows"), ("total-open-flows", "open_flows"),
                             ("total-bytes", "bytes")):
            shown = dom.by_id[element]
            self.assertEqual(int(shown["attrs"]["data-value"]), want_totals[key], element)
            self.assertEqual(int(shown["text"].replace(",", "")), want_totals[key], element)
            self.assertEqual(int(shown["attrs"]["data-value"]), s["totals"][key], element)

        # The store (the same events, through the store backend): the page's numbers are its.
        def store_totals():
            try:
                con = sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=5)
                flows, open_flows, volume = con.execute(
                    "SELECT count(*), sum(state = 'open'), sum(volume) FROM flows").fetchone()
                pairs = {(a or "", b or ""): v for a, b, v in con.execute(
                    "SELECT src_site, dst_site, sum(volume) FROM flows GROUP BY 1, 2")}
                con.close()
            except sqlite3.Error:
                return None
            return {"flows": flows, "open_flows": open_flows, "bytes": volume}, pairs
        deadline = time.monotonic() + 10
        while True:
            stored = store_totals()
            if stored and stored[0]["flows"] == len(FLOWS):
                break
            if time.monotonic() > deadline:
                self.fail(f"the store holds {stored}, not the {len(FLOWS)} flows sent")
            time.sleep(0.05)
        for element, key in (("total-flows", "flows"), ("total-open-flows", "open_flows"),
                             ("total-bytes", "bytes")):
            self.assertEqual(int(dom.by_id[element]["attrs"]["data-value"]), stored[0][key],
                             f"{element}: the page against the store")

        rows = dom.rows["site-pairs"]
        self.assertEqual(len(rows), len(want_pairs))
        page_pairs = {}
        for row in rows:
            name = lambda c: None if "none" in c["attrs"].get("class", "") else c["text"]
            page_pairs[(name(row[0]), name(row[1]))] = {
                "flows": int(row[2]["attrs"]["data-value"]),
                "bytes": int(row[3]["attrs"]["data-value"])}
            self.assertEqual(int(row[3]["text"].replace(",", "")),
                             int(row[3]["attrs"]["data-value"]))
        self.assertEqual(page_pairs, want_pairs)

        flows = dom.rows["latest-flows"]
        self.assertEqual(len(flows), len(FLOWS))
        page_flows = {}
        for row in flows:
            by_class = {c["attrs"].get("class", "").split()[-1]: c for c in row
                        if c["attrs"].get("class")}
            page_flows[by_class["src"]["text"]] = int(by_class["volume"]["attrs"]["data-value"])
        self.assertEqual(page_flows, {f"{f[0]}:{f[1]}": max(f[5], f[6]) for f in FLOWS})
        # The chart: uPlot drew one series per experiment (its legend lists them).
        self.assertIn("uplot", dump)
        for name in want_by_exp:
            self.assertIn(f'<div class="u-label">{name}</div>', dump)

        # The screenshot, kept as an artefact.
        shot = os.path.join(ARTEFACTS, "dashboard.png")
        if os.path.exists(shot):
            os.unlink(shot)
        self.chromium(f"--screenshot={shot}")
        with open(shot, "rb") as f:
            head = f.read(8)
        self.assertEqual(head, b"\x89PNG\r\n\x1a\n", f"{shot} is not a PNG")
        self.assertGreater(os.path.getsize(shot), 10_000, f"{shot}: a blank page?")
        print(f"screenshot: {shot}")


if __name__ == "__main__":
    unittest.main()
