#!/usr/bin/python3
"""`flowmark observe --summary scitags`: its rows against the flows a capture was built with,
and its totals against the sum over the records of the same capture.

    /usr/bin/python3 tests/integration/observe_summary.py BUILD_DIR [unittest options]

Needs Debian's python3-scapy (hence /usr/bin/python3). No network, no root.

The capture is written here with scapy: IPv6 TCP flows whose packets carry Scitags flow
labels (experiment and activity encoded here from the bit layout of the Scitags spec, with
random entropy), flows marked by the hop-by-hop option 0x1E only, unmarked IPv6 flows
(label 0) and IPv4 flows. The expected rows (flows, packets and IP octets per direction,
first and last) are computed from the packets written; the summary must equal them, and
must equal the sums over the records that `--chains scitags` writes for the same file.
pathspider's own captures (Debian package pathspider), when installed, are summed too.
"""

import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest
from collections import defaultdict
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ksft  # noqa: E402

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: observe_summary.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")

try:
    from scapy.all import IPv6, IP, TCP, Ether, IPv6ExtHdrHopByHop, wrpcap  # noqa: E402
    from scapy.layers.inet6 import HBHOptUnknown  # noqa: E402
except ImportError as e:  # pragma: no cover
    print(f"SKIPPED: python3-scapy is not installed ({e})", file=sys.stderr)
    sys.exit(ksft.KSFT_SKIP)


def reverse9(v):
    return int(f"{v:09b}"[::-1], 2)


def label(exp, act, entropy):
    return ((entropy >> 3) & 3) << 18 | reverse9(exp) << 9 | ((entropy >> 2) & 1) << 8 | act << 2 | (entropy & 3)


def run(*args):
    p = subprocess.run([FLOWMARK, *args], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError(f"flowmark {' '.join(args)}: exit {p.returncode}: {p.stderr}")
    return p.stdout


def key_of(row):
    return (row["experiment"], row["activity"], row["ip_version"])


class Summary(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix="fm-summary-")
        rnd = random.Random(14)
        pkts, expected = [], defaultdict(lambda: dict(flows=0, pkt_fwd=0, pkt_rev=0, oct_fwd=0,
                                                      oct_rev=0, first=None, last=None))
        t = Decimal("1700000000")
        port = 20000

        def flow(group, ip_fwd, ip_rev, n):
            nonlocal t, port
            port += 1
            e = expected[group]
            e["flows"] += 1
            for i in range(n):
                for rev in (False, True):
                    t += Decimal("0.001")
                    ip = ip_rev() if rev else ip_fwd()
                    tcp = TCP(sport=80 if rev else port, dport=port if rev else 80,
                              flags="SA" if (rev and i == 0) else ("S" if i == 0 else "A"))
                    payload = b"x" * rnd.randrange(0, 200)
                    p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / tcp / payload
                    p.time = t
                    pkts.append(p)
                    size = len(bytes(ip / tcp / payload))
                    d = "rev" if rev else "fwd"
                    e["pkt_" + d] += 1
                    e["oct_" + d] += size
                    e["first"] = e["first"] if e["first"] is not None else t
                    e["last"] = t

        a6, b6 = "2001:db8::1", "2001:db8::2"
        for exp, act, count in ((2, 9, 3), (3, 3, 2), (300, 5, 1)):
            for _ in range(count):
                lf, lr = label(exp, act, rnd.randrange(32)), label(exp, act, rnd.randrange(32))
                flow((exp, act, 6), lambda lf=lf: IPv6(src=a6, dst=b6, fl=lf),
                     lambda lr=lr: IPv6(src=b6, dst=a6, fl=lr), rnd.randrange(2, 6))
        # Marked by the hop-by-hop option only (experiment 0x0105 = 261, activity 7).
        opt = HBHOptUnknown(otype=0x1E, optdata=bytes([0x01, 0x05, 7]))
        flow((261, 7, 6), lambda: IPv6(src=a6, dst=b6, fl=0) / IPv6ExtHdrHopByHop(options=[opt]),
             lambda: IPv6(src=b6, dst=a6, fl=0), 3)
        for _ in range(2):
            flow((None, None, 6), lambda: IPv6(src=a6, dst=b6, fl=0),
                 lambda: IPv6(src=b6, dst=a6, fl=0), 3)
        for _ in range(3):
            flow((None, None, 4), lambda: IP(src="10.0.0.1", dst="10.0.0.2"),
                 lambda: IP(src="10.0.0.2", dst="10.0.0.1"), 2)
        cls.pcap = os.path.join(cls.dir.name, "marked.pcap")
        wrpcap(cls.pcap, pkts)
        cls.expected = expected

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def summary(self, pcap):
        return {key_of(r): r for r in json.loads(run("observe", "-r", pcap, "--summary", "scitags",
                                                     "--format", "json"))}

    def test_rows_equal_the_flows_written(self):
        rows = self.summary(self.pcap)
        self.assertEqual(set(rows), set(self.expected) | {(None, None, 6), (None, None, 4)})
        for k, e in self.expected.items():
            r = rows[k]
            for f in ("flows", "pkt_fwd", "pkt_rev", "oct_fwd", "oct_rev"):
                self.assertEqual(r[f], e[f], f"{k} {f}")
            self.assertAlmostEqual(Decimal(str(r["first"])), e["first"], delta=Decimal("1e-6"))
            self.assertAlmostEqual(Decimal(str(r["last"])), e["last"], delta=Decimal("1e-6"))
        self.assertEqual(rows[(2, 9, 6)]["experiment_name"], "atlas")
        self.assertIsNone(rows[(300, 5, 6)]["experiment_name"])  # not in the registry
        self.assertIsNone(rows[(None, None, 4)]["experiment_name"])

    def test_text_table_has_a_row_per_group(self):
        text = run("observe", "-r", self.pcap, "--summary", "scitags").splitlines()
        self.assertIn("experiment", text[0])
        self.assertEqual(len(text), 1 + len(set(self.expected) | {(None, None, 6), (None, None, 4)}))

    def assert_totals_match_records(self, pcap):
        sums = defaultdict(lambda: defaultdict(int))
        for line in run("observe", "-r", pcap, "--chains", "scitags").splitlines():
            r = json.loads(line)
            marked = r["scitags_source"] is not None
            k = (r["scitags_experiment"], r["scitags_activity"], r["ip_version"]) if marked \
                else (None, None, r["ip_version"])
            s = sums[k]
            s["flows"] += 1
            for f in ("pkt_fwd", "pkt_rev", "oct_fwd", "oct_rev"):
                s[f] += r[f]
        rows = self.summary(pcap)
        for k, s in sums.items():
            for f, v in s.items():
                self.assertEqual(rows[k][f], v, f"{os.path.basename(pcap)} {k} {f}")
        for k, r in rows.items():
            if k not in sums:
                self.assertEqual(r["flows"], 0, f"{k}")
        return sum(s["flows"] for s in sums.values())

    def test_totals_equal_the_sum_over_records(self):
        self.assertEqual(self.assert_totals_match_records(self.pcap),
                         sum(e["flows"] for e in self.expected.values()))

    def test_totals_on_pathspider_captures(self):
        caps = sorted(glob.glob("/usr/lib/python3/dist-packages/pathspider/tests/data/*.pcap"))
        if not caps:
            self.skipTest("pathspider's captures are not installed (Debian package pathspider)")
        flows = sum(self.assert_totals_match_records(c) for c in caps)
        self.assertGreater(flows, 1000)


if __name__ == "__main__":
    ksft.main()
