#!/usr/bin/env python3
"""flowd-go's conf.yaml read as it is: the same fireflies on the wire as the equivalent TOML.

    python3 tests/integration/test_flowmarkd_flowd_go.py BUILD_DIR [unittest options]

In network namespaces (the Site of test_flowmarkd.py: hosts A, B, C on one bridge), flowmarkd
in A runs three times on the same named-pipe lines: with a flowd-go conf.yaml (namedPipe
plugin, firefly backend sending to the flows' destinations and to a collector in C, syslog
header on), with the TOML a site would write by hand for the same, and with the translation
`flowmarkd --check --print` printed. The collector and the destinations must receive the same
fireflies (times and the sender's port aside), and the sources and pipeline count the same.
Needs root. Python 3 stdlib only.
"""

import json
import os
import re
import subprocess
import sys
import unittest

import test_flowmarkd as fmd  # takes BUILD_DIR from sys.argv
from test_flowmarkd import FLOWMARKD, Proc, ServiceTestCase, Site, parse_counters, write_pipe

# What differs between two runs of the same lines: times, and the sender's ephemeral port.
VARYING = {"start-time", "end-time", "current-time", "sport"}


def without_times(doc):
    if isinstance(doc, dict):
        return {k: without_times(v) for k, v in doc.items() if k not in VARYING}
    if isinstance(doc, list):
        return [without_times(v) for v in doc]
    return doc


def unnamed(counter):
    """A counter's key without the source's or backend's name (they differ between files)."""
    return re.sub(r"(source|backend)=[^,}]*", r"\1=*", counter)


def setUpModule():
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root (network namespaces)")
    if not os.access(FLOWMARKD, os.X_OK):
        raise RuntimeError(f"{FLOWMARKD} is missing: build first")
    # Addresses of its own: other integration tests may run at the same time.
    fmd.SITE = Site(v4_prefix="10.77.0.", v6_prefix="fd77::")
    unittest.addModuleCleanup(fmd.SITE.destroy)
    fmd.SITE.create()


class Daemon(Proc):
    """flowmarkd -c PATH in `host` (any format: the file decides)."""

    def __init__(self, site, host, path):
        super().__init__(site.argv(host, [FLOWMARKD, "-c", path]))
        self.wait_err(r"flowmarkd running", timeout=15)

    def stop(self):
        self.signal(15)
        rc = self.wait(10)
        self.counters = parse_counters(self.err) or {}
        return rc


class TestFlowdGoConfig(ServiceTestCase):
    def test_conf_yaml_and_the_equivalent_toml_give_the_same_fireflies(self):
        pipe = os.path.join(self.dir, "np")
        yaml_path = os.path.join(self.dir, "conf.yaml")
        with open(yaml_path, "w") as f:
            f.write("# flowd-go's conf.yaml of a test site\n"
                    "plugins:\n"
                    "    namedPipe:\n"
                    f"        pipePath: \"{pipe}\"\n"
                    "backends:\n"
                    "    firefly:\n"
                    "        destinationPort: 10514\n"
                    "        prependSyslog: true\n"
                    "        sendToCollector: true\n"
                    f"        collectorAddress: \"{self.C4}\"\n"
                    "        collectorPort: 20541\n")
        by_hand = os.path.join(self.dir, "by_hand.toml")
        with open(by_hand, "w") as f:
            f.write("[source.pipe]\n"
                    "type = \"named-pipe\"\n"
                    f"path = \"{pipe}\"\n"
                    "[backend.fireflies]\n"
                    "type = \"firefly\"\n"
                    "to_destination = true\n"
                    "port = 10514\n"
                    f"collectors = [\"{self.C4}:20541\"]\n"
                    "syslog_header = true\n")
        r = subprocess.run([FLOWMARKD, "--check", "--print", "-c", yaml_path],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "", "no warning expected for this file")
        self.assertIn(f'path = "{pipe}"', r.stdout)
        self.assertIn(f'collectors = ["{self.C4}:20541"]', r.stdout)
        translated = os.path.join(self.dir, "translation.toml")
        with open(translated, "w") as f:
            f.write(r.stdout)

        A4, B4, A6, B6 = self.A4, self.B4, self.A6, self.B6
        lines = (f"start tcp {A4} 46000 {B4} 5777 2 1\n"
                 f"start udp {A6} 46001 {B6} 443 2 2\n"
                 f"start  tcp  {A4}  46002 {B4} 1094 1 3\n"  # flowd-go trims any blanks
                 f"end tcp {A4} 46000 {B4} 5777 2 1\n"
                 f"end udp {A6} 46001 {B6} 443 2 2\n")
        # 46002 stays live: ended at shutdown.
        runs = {}
        for name, path in (("conf.yaml", yaml_path), ("by hand", by_hand),
                           ("translation", translated)):
            coll = self.collector("C", 20541, bind=self.C4)
            dest = self.collector("B", 10514)  # the flows' destination, both families
            d = Daemon(self.site, "A", path)
            self.addCleanup(d.kill)
            write_pipe(pipe, lines)
            coll.wait_count(5)
            rc = d.stop()
            self.assertEqual(rc, 0, d.describe())
            self.assertFalse(os.path.exists(pipe), "the FIFO is left behind")
            runs[name] = {"collector": [without_times(g) for g in coll.wait_count(6)],
                          "destination": [without_times(g) for g in dest.wait_count(6)],
                          "counters": d.counters}
            coll.kill()
            dest.kill()
        a = runs["conf.yaml"]
        got = [(g["firefly"]["flow-lifecycle"]["state"], g["firefly"]["flow-id"]["src-port"],
                g["firefly"]["context"]["experiment-id"], g["firefly"]["context"]["activity-id"])
               for g in a["collector"]]
        self.assertEqual(got, [("start", 46000, 2, 1), ("start", 46001, 2, 2),
                               ("start", 46002, 1, 3), ("end", 46000, 2, 1),
                               ("end", 46001, 2, 2), ("end", 46002, 1, 3)])
        self.maxDiff = None
        # The destinations' collector has a socket per family: order across them may vary.
        canon = lambda gs: sorted(json.dumps(g, sort_keys=True) for g in gs)
        for other in ("by hand", "translation"):
            b = runs[other]
            self.assertEqual(a["collector"], b["collector"], other)
            self.assertEqual(canon(a["destination"]), canon(b["destination"]), other)
            for k in ("flowmark_source_events_total", "flowmark_pipeline_events_total"):
                sa = {unnamed(n): v for n, v in a["counters"].items() if n.startswith(k)}
                sb = {unnamed(n): v for n, v in b["counters"].items() if n.startswith(k)}
                self.assertEqual(sa, sb, (k, other))
        print(f"  [conf.yaml, the TOML by hand and the translation: {len(a['collector'])} "
              f"identical fireflies at the collector, {len(a['destination'])} at the "
              f"destinations: {got}]", file=sys.stderr)


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
