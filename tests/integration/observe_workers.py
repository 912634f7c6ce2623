#!/usr/bin/python3
"""`flowmark observe --workers N` (issue 17, capture files): for N = 2, 3, 4 the records are
the same multiset (JSON lines, sorted) as with one worker, on every test capture.

    /usr/bin/python3 tests/integration/observe_workers.py BUILD_DIR [unittest options]

Captures: those of the observe truth tests (observe_truth.py and observe_chains_truth.py,
imported here: their scapy builders write them to a temporary directory), pathspider's test
captures (the 48 .pcap files of python3-pathspider 2.0.1's tests/data), and one written here
with what a split observer can get wrong: many flows in both directions, IPv4 and IPv6
fragments (the first one before, after and without the others), ICMP and ICMPv6 errors from the destination host and from
routers quoting held and unknown flows, frames stamped before the clock, gaps longer than
the idle timeout, flows split by the active timeout, VLAN tags. Each is run with the default
chains and --chains all; the written capture also with --vlan, short timeouts, CSV and from
standard input (libpcap's frames do not outlive a batch: copied for the workers).
--icmp-flows is refused with more than one worker (checked); without --workers (or with 0) the
workers are the cores available for a pcap file without --filter, one with --icmp-flows,
--filter or pcapng. --stats: the per-worker lines add up
to the summed line, which equals one worker's. Needs Debian's python3-scapy (hence
/usr/bin/python3). No network, no root.
"""

import glob
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: observe_workers.py BUILD_DIR [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
FLOWMARK = os.path.join(BUILD_DIR, "flowmark")
HERE = os.path.dirname(os.path.abspath(__file__))
PATHSPIDER_DATA = "/usr/lib/python3/dist-packages/pathspider/tests/data"

try:
    from scapy.all import (ICMP, IP, TCP, UDP, Dot1Q, Ether, ICMPv6DestUnreach,
                           ICMPv6PacketTooBig, IPv6, IPv6ExtHdrFragment, PcapWriter, Raw,
                           fragment, fragment6)
except ImportError:
    print("SKIP: python3-scapy is missing (apt-get install python3-scapy)")
    sys.exit(4)

# The truth tests' capture builders (they take BUILD_DIR from argv[1] when imported).
sys.path.insert(0, HERE)
_argv = sys.argv
sys.argv = [_argv[0], BUILD_DIR]
import observe_truth  # noqa: E402

sys.argv = [_argv[0], BUILD_DIR]
import observe_chains_truth  # noqa: E402

sys.argv = _argv

WORKERS = (2, 3, 4)


def observe(path, workers, *extra, stats=False, chunk=None):
    args = [FLOWMARK, "observe", "-r", path, "--workers", str(workers), *extra]
    if stats:
        args.append("--stats")
    env = dict(os.environ)
    if chunk is not None:
        env["FLOWMARK_OBSERVE_CHUNK_BYTES"] = str(chunk)
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr}")
    return p.stdout, p.stderr


def build_hard_capture(path, seed):
    """Frames a split observer can get wrong; written in the order built, times as given."""
    rnd = random.Random(seed)
    frames = []  # (time in s, scapy packet)
    t = 1_700_000_000.0

    def add(pkt, dt=0.01):
        nonlocal t
        t += dt
        frames.append((t, pkt))

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    hosts4 = [f"10.{i // 250}.{i % 250}.1" for i in range(40)]
    hosts6 = [f"2001:db8::{i + 1:x}" for i in range(20)]
    # TCP and UDP flows in both directions, interleaved, some on VLANs.
    for i in range(150):
        a, b = rnd.sample(hosts4, 2)
        sp, dp = rnd.randrange(1024, 65535), rnd.choice([80, 443, 53, 5000])
        tag = Dot1Q(vlan=rnd.choice([10, 20])) if i % 5 == 0 else None
        for k in range(rnd.randrange(1, 6)):
            fwd = k % 2 == 0
            l4 = (TCP(sport=sp, dport=dp, flags="S" if k == 0 else "A") if i % 2 else
                  UDP(sport=sp, dport=dp))
            if not fwd:
                l4.sport, l4.dport = dp, sp
            ip = IP(src=a if fwd else b, dst=b if fwd else a) / l4 / Raw(b"x" * rnd.randrange(40))
            add(eth / tag / ip if tag is not None else eth / ip, rnd.random() * 0.05)
    for i in range(60):
        a, b = rnd.sample(hosts6, 2)
        sp, dp = rnd.randrange(1024, 65535), 443
        for k in range(rnd.randrange(1, 4)):
            fwd = k % 2 == 0
            add(eth / IPv6(src=a if fwd else b, dst=b if fwd else a) /
                UDP(sport=sp if fwd else dp, dport=dp if fwd else sp) / Raw(b"y" * 30),
                rnd.random() * 0.05)
    # IPv4 fragments: in order, non-first before the first, and without a first.
    for i in range(20):
        a, b = rnd.sample(hosts4, 2)
        big = IP(src=a, dst=b, id=1000 + i) / UDP(sport=4000 + i, dport=9) / Raw(b"z" * 3000)
        parts = fragment(big, fragsize=1000)
        if i % 3 == 1:
            parts = parts[1:] + parts[:1]
        elif i % 3 == 2:
            parts = parts[1:]
        for p in parts:
            add(eth / p)
        add(eth / IP(src=b, dst=a) / UDP(sport=9, dport=4000 + i) / Raw(b"r"))
    # IPv6 fragments.
    for i in range(10):
        a, b = rnd.sample(hosts6, 2)
        big = (IPv6(src=a, dst=b) / IPv6ExtHdrFragment(id=77 + i) /
               UDP(sport=6000 + i, dport=9) / Raw(b"w" * 3000))
        parts = fragment6(big, 1280)
        if i % 2:
            parts = parts[1:] + parts[:1]
        for p in parts:
            add(eth / p)
    # ICMP errors: from the destination (port unreachable), from routers (time exceeded),
    # quoting held flows and flows never seen.
    for i in range(30):
        a, b = rnd.sample(hosts4[1:], 2)
        sender = b if i % 2 else f"192.0.2.{i % 4 + 1}"
        if i % 2 == 0:  # one host, four routers: errors quoting many flows make 3-tuple flows
            a = hosts4[0]
        probe = IP(src=a, dst=b, ttl=3) / UDP(sport=33434 + i, dport=53) / Raw(b"q" * 12)
        if i % 3 != 2:
            add(eth / probe)
        code_type = (3, 3) if sender == b else (11, 0)
        add(eth / IP(src=sender, dst=a) / ICMP(type=code_type[0], code=code_type[1]) /
            bytes(probe)[:28])
    for i in range(10):
        a, b = rnd.sample(hosts6, 2)
        probe = IPv6(src=a, dst=b) / UDP(sport=7000 + i, dport=53) / Raw(b"p" * 1400)
        if i % 3 != 2:
            add(eth / probe)
        sender = b if i % 2 else f"2001:db8:ffff::{i + 1:x}"
        err = ICMPv6PacketTooBig(mtu=1280) if i % 2 else ICMPv6DestUnreach(code=0)
        add(eth / IPv6(src=sender, dst=a) / err / bytes(probe)[:200])
    # Echo between that host and the routers (the same 3-tuple flows as their errors).
    for i in range(4):
        add(eth / IP(src=hosts4[0], dst=f"192.0.2.{i + 1}") / ICMP(type=8, id=i, seq=1))
    # Echo between hosts (3-tuple ICMP flows).
    for i in range(10):
        a, b = rnd.sample(hosts4, 2)
        add(eth / IP(src=a, dst=b) / ICMP(type=8, id=i, seq=1))
        add(eth / IP(src=b, dst=a) / ICMP(type=0, id=i, seq=1))
    # Frames stamped before the clock (late): shuffle the times of a stretch.
    times = [f[0] for f in frames[100:160]]
    rnd.shuffle(times)
    for k, tt in enumerate(times):
        frames[100 + k] = (tt, frames[100 + k][1])
    # A gap longer than the idle timeout, then the same flows again; a long flow across the
    # active timeout (40 s at 1 s spacing), interleaved with other hosts' traffic.
    t += 100
    for i in range(40):
        add(eth / IP(src="10.9.9.1", dst="10.9.9.2") / TCP(sport=5555, dport=80, flags="A"), 1.0)
        a, b = rnd.sample(hosts4, 2)
        add(eth / IP(src=a, dst=b) / UDP(sport=1000 + i, dport=53), 0.001)
    t += 50
    for i in range(50):
        a, b = rnd.sample(hosts4, 2)
        add(eth / IP(src=a, dst=b) / UDP(sport=1000 + i, dport=53), 0.3)
    w = PcapWriter(path, linktype=1, nano=True, sync=False)
    for tt, p in frames:
        p.time = tt
        w.write(p)
    w.close()


class WorkersTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="fm_workers_")
        cls.seed = int(os.environ.get("WORKERS_TEST_SEED", random.randrange(1 << 30)))
        cls.hard = os.path.join(cls.tmp, "hard.pcap")
        build_hard_capture(cls.hard, cls.seed)
        truth_dir, _ = observe_truth.built_scenarios()
        chains_dir, _ = observe_chains_truth.built_captures()
        cls.truth = sorted(glob.glob(os.path.join(truth_dir, "*.pcap*")))
        cls.chains = sorted(glob.glob(os.path.join(chains_dir, "*.pcap*")))
        cls.pathspider = sorted(glob.glob(os.path.join(PATHSPIDER_DATA, "*.pcap")))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def same_records(self, path, *extra, chunk=None):
        ref, _ = observe(path, 1, *extra)
        ref_lines = sorted(ref.splitlines())
        for n in WORKERS:
            got, _ = observe(path, n, *extra, chunk=chunk)
            got_lines = sorted(got.splitlines())
            if got_lines != ref_lines:
                missing = [x for x in ref_lines if x not in got_lines][:3]
                extra_lines = [x for x in got_lines if x not in ref_lines][:3]
                self.fail(f"{path} --workers {n} {' '.join(extra)} (seed {self.seed}): "
                          f"{len(got_lines)} records, one worker {len(ref_lines)}; "
                          f"only with one worker: {missing}; only with {n}: {extra_lines}")

    def test_captures_give_records(self):
        # random.pcap of pathspider holds no IP: every other capture makes records.
        for path in self.truth + self.chains + [self.hard] + [
                p for p in self.pathspider if not p.endswith("random.pcap")]:
            out, _ = observe(path, 1)
            self.assertTrue(out.strip(), f"{path}: no records")

    def test_captures_exist(self):
        self.assertGreaterEqual(len(self.truth), 5)
        self.assertGreaterEqual(len(self.chains), 2)
        self.assertGreaterEqual(len(self.pathspider), 48, "pathspider's test captures")

    def test_truth_captures(self):
        for path in self.truth + self.chains:
            with self.subTest(path=os.path.basename(path)):
                self.same_records(path)
                self.same_records(path, "--chains", "all")

    def test_pathspider_captures(self):
        for path in self.pathspider:
            with self.subTest(path=os.path.basename(path)):
                self.same_records(path)
                self.same_records(path, "--chains", "all")

    def test_hard_capture(self):
        for extra in ([], ["--chains", "all"], ["--vlan"],
                      ["--idle-timeout", "2", "--active-timeout", "10", "--expiry-delay", "1"],
                      ["--format", "csv"]):
            with self.subTest(options=extra):
                self.same_records(self.hard, *extra)

    def test_standard_input(self):
        # Frames read through libpcap do not outlive a batch: they are copied for the workers.
        ref, _ = observe(self.hard, 1, "--chains", "all")
        for n in WORKERS:
            with open(self.hard, "rb") as f:
                p = subprocess.run([FLOWMARK, "observe", "-r", "-", "--workers", str(n),
                                    "--chains", "all"], stdin=f, capture_output=True,
                                   text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(sorted(p.stdout.splitlines()), sorted(ref.splitlines()),
                             f"standard input, --workers {n} (seed {self.seed})")

    def test_hard_capture_spreads(self):
        # The frames really go to several workers, fragments and errors among them.
        _, err = observe(self.hard, 4, stats=True)
        per = re.findall(r"flowmark observe worker (\d+): (\d+) packets.*fragments (\d+)", err)
        self.assertEqual(len(per), 4, err)
        self.assertTrue(all(int(p) > 0 for _, p, _ in per), err)

    def test_stats_sum(self):
        def counters(line):
            return [int(x) for x in re.findall(r"\b\d+\b", line.split(":", 1)[1])]

        _, one = observe(self.hard, 1, stats=True)
        one_line = next(x for x in one.splitlines() if x.startswith("flowmark observe: "))
        for n in WORKERS:
            _, err = observe(self.hard, n, stats=True)
            lines = err.splitlines()
            workers = [x for x in lines if re.match(r"flowmark observe worker \d+: \d+ packets", x)]
            total = next(x for x in lines if x.startswith("flowmark observe: "))
            self.assertEqual(len(workers), n, err)
            sums = [sum(c) for c in zip(*(counters(x) for x in workers))]
            # every counter but the last (bytes per flow) adds up
            self.assertEqual(sums[:-1], counters(total)[:-1], err)
            self.assertEqual(counters(total), counters(one_line), f"{n} workers:\n{err}\n{one}")

    def test_default_for_a_file(self):
        # No --workers (and --workers 0) on a pcap file without --filter: a worker per core
        # this process may run on (the workers read the file: README, "Every core"), the
        # same records as one worker. With --filter, a pcapng file or --icmp-flows (refused
        # above one): one, the very output of --workers 1, without a word. The interface
        # default (a worker per core) is in observe_live_workers.py.
        cores = min(len(os.sched_getaffinity(0)), 64)
        ref, _ = observe(self.hard, 1)
        for args in ([], ["--workers", "0"]):
            p = subprocess.run([FLOWMARK, "observe", "-r", self.hard, "--stats", *args],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(sorted(p.stdout.splitlines()), sorted(ref.splitlines()), args)
            workers = re.findall(r"flowmark observe worker (\d+):", p.stderr)
            self.assertEqual(len(workers), cores if cores > 1 else 0, p.stderr)
        pcapng = [x for x in self.truth + self.chains if x.endswith(".pcapng")]
        self.assertTrue(pcapng, "no pcapng capture among the truth tests'")
        for path, extra in ((self.hard, ["--filter", "ip or ip6 or vlan"]), (pcapng[0], [])):
            ref, _ = observe(path, 1, *extra)
            p = subprocess.run([FLOWMARK, "observe", "-r", path, "--stats", *extra],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout, ref, (path, extra))
            self.assertNotIn("worker", p.stderr)
        ref, _ = observe(self.hard, 1, "--icmp-flows")
        p = subprocess.run([FLOWMARK, "observe", "-r", self.hard, "--icmp-flows", "--stats"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, ref)
        self.assertNotIn("worker", p.stderr)

    def test_shared_reading_small_chunks(self):
        # A mapped pcap file is read by the workers themselves, in chunks (4 MiB; here 4 KiB,
        # so that these small captures make many): frames across chunk ends, ICMP errors
        # decided by another worker in another chunk, the clock carried from chunk to chunk.
        for path in self.truth + self.chains + [self.hard]:
            if not path.endswith(".pcap"):
                continue  # pcapng: one reader thread
            with self.subTest(path=os.path.basename(path)):
                self.same_records(path, "--chains", "all", chunk=4096)
        for extra in (["--idle-timeout", "2", "--active-timeout", "10", "--expiry-delay", "1"],
                      ["--vlan"]):
            self.same_records(self.hard, *extra, chunk=4096)
        _, err = observe(self.hard, 2, stats=True, chunk=4096)
        m = re.search(r"the workers read the file: (\d+) chunks", err)
        self.assertTrue(m and int(m.group(1)) > 4, err)

    def test_shared_reading_false_record_headers(self):
        # Payloads full of what looks like pcap record headers: a chunk's first record, guessed
        # by the look of the bytes, is then often wrong; such a chunk is read again from where
        # the records before it end (counted in --stats), and no frame is lost or made up.
        path = os.path.join(self.tmp, "fake_headers.pcap")
        rnd = random.Random(self.seed)
        w = PcapWriter(path, sync=False)
        t = 1_700_000_000.0
        fake = (int(t).to_bytes(4, "little") + (5).to_bytes(4, "little") +
                (60).to_bytes(4, "little") + (60).to_bytes(4, "little"))
        for i in range(600):
            a, b = f"10.1.{i % 7}.{1 + i % 50}", f"10.2.{i % 11}.{1 + i % 3}"
            if rnd.random() < 0.5:
                a, b = b, a
            size = rnd.choice((1, 20, 60, 87))
            p = Ether() / IP(src=a, dst=b) / UDP(sport=1000 + i % 13, dport=53) / Raw(
                fake * size)
            p.time = t + i * 0.001
            w.write(p)
        w.close()
        self.same_records(path, chunk=4096)
        _, err = observe(path, 2, stats=True, chunk=4096)
        m = re.search(r"(\d+) chunks, (\d+) read again", err)
        self.assertTrue(m and int(m.group(2)) > 0, err)

    def test_shared_reading_long_records(self):
        # Records far longer than a chunk (4 KiB here) and than what is read past its end
        # (64 KiB): the worker that walks a chunk reads on into its buffer, moving it (and
        # walking the chunk again) when it must grow; the frames listed before stay valid.
        path = os.path.join(self.tmp, "long_records.pcap")
        rnd = random.Random(self.seed)
        w = PcapWriter(path, sync=False)
        t = 1_700_000_000.0
        for i in range(300):
            a, b = f"10.3.{i % 5}.{1 + i % 40}", f"10.4.{i % 9}.{1 + i % 3}"
            if rnd.random() < 0.5:
                a, b = b, a
            r = rnd.random()
            if r < 0.05:
                p = Ether(type=0x88B5) / Raw(bytes(rnd.choice((70_000, 200_000, 700_000))))
            elif r < 0.3:
                p = Ether() / IP(src=a, dst=b) / UDP(sport=2000 + i % 17, dport=443) / Raw(
                    bytes(rnd.choice((5_000, 30_000, 60_000))))
            else:
                p = Ether() / IP(src=a, dst=b) / UDP(sport=2000 + i % 17, dport=443) / Raw(
                    bytes(rnd.randrange(1, 1400)))
            p.time = t + i * 0.001
            w.write(p)
        w.close()
        self.same_records(path, chunk=4096)
        self.same_records(path, chunk=65536)

    def test_shared_reading_truncated(self):
        # A capture cut inside a record: the records of the frames before it, and the error
        # naming the offset, as with one worker.
        path = os.path.join(self.tmp, "cut.pcap")
        with open(self.hard, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:len(data) * 2 // 3])
        def run(n, chunk=None):
            env = dict(os.environ)
            if chunk:
                env["FLOWMARK_OBSERVE_CHUNK_BYTES"] = str(chunk)
            return subprocess.run([FLOWMARK, "observe", "-r", path, "--workers", str(n)],
                                  capture_output=True, text=True, timeout=120, env=env)
        one = run(1)
        self.assertEqual(one.returncode, 65, one.stderr)
        self.assertIn("corrupt capture at byte offset", one.stderr)
        for n in WORKERS:
            for chunk in (None, 4096):
                p = run(n, chunk)
                self.assertEqual(p.returncode, one.returncode, p.stderr)
                self.assertEqual(p.stderr, one.stderr)
                self.assertEqual(sorted(p.stdout.splitlines()), sorted(one.stdout.splitlines()))

    def test_bad_worker_counts(self):
        for bad in (["65"], ["2", "--icmp-flows"]):
            p = subprocess.run([FLOWMARK, "observe", "-r", self.hard, "--workers", *bad],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("--workers", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
