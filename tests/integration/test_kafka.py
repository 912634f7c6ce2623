#!/usr/bin/env python3
"""Integration tests of the kafka backend: flowmarkd (firefly source → kafka backend) produces
into librdkafka's mock cluster (the Kafka protocol over real loopback TCP, run by
kafka_mock_broker), and `kcat`, an independent consumer, reads what arrived.

    python3 tests/integration/test_kafka.py BUILD_DIR KAFKA_MOCK_BROKER [unittest options]

- every flow event arrives once (a duplicated end firefly too), keyed by the flow, in one
  partition per flow, in order, as the collector record (topic) with registry names and
  sites, and as the firefly (fireflies_topic);
- SIGHUP with a renamed site: the kafka backend is kept, later records carry the new name;
- SIGTERM with open flows: their last records (state open) are flushed before the exit;
- all brokers down while events are sent, then back: nothing lost within `buffer`;
- a buffer too small for an outage: the overflow counted as dropped_buffer_full (Prometheus
  exposition and exit counters), what fitted delivered;
- brokers down at SIGTERM: stop() gives up after flush_timeout, counts the rest as failed;
- librdkafka properties that librdkafka rejects fail at start, naming the key.
Every wait is on a condition (a counter, a line) with a deadline. Python 3 stdlib and kcat.
"""

import collections
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from netns_helpers import wait_until  # noqa: E402
import tempfile
import threading
import time
import unittest
import urllib.request

if len(sys.argv) < 3 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_kafka.py BUILD_DIR KAFKA_MOCK_BROKER [unittest options]")
BUILD_DIR = os.path.abspath(sys.argv.pop(1))
MOCK = os.path.abspath(sys.argv.pop(1))
FLOWMARKD = os.path.join(BUILD_DIR, "flowmarkd")
KCAT = shutil.which("kcat")
BROKERS = 3


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




class MockCluster:
    """kafka_mock_broker: a mock Kafka cluster of BROKERS brokers; down(), up(), count()."""

    def __init__(self, topics):
        self.p = subprocess.Popen([MOCK, "--brokers", str(BROKERS), *topics],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.bootstrap = self._line(10)
        if not re.fullmatch(r"[\w.:-]+(,[\w.:-]+)*", self.bootstrap):
            raise AssertionError(f"kafka_mock_broker printed {self.bootstrap!r}")

    def _line(self, timeout):
        if not select.select([self.p.stdout], [], [], timeout)[0]:
            raise AssertionError(f"kafka_mock_broker said nothing within {timeout} s")
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError(f"kafka_mock_broker exited ({self.p.wait()})")
        return line.strip()

    def command(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()
        reply = self._line(15)
        if reply.startswith("error"):
            raise AssertionError(f"kafka_mock_broker {text}: {reply}")
        return reply

    def down(self):
        for b in range(1, BROKERS + 1):
            self.command(f"down {b}")

    def up(self):
        for b in range(1, BROKERS + 1):
            self.command(f"up {b}")

    def count(self, topic):
        return int(self.command(f"count {topic}").split()[1])

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.write("quit\n")
                self.p.stdin.close()
                self.p.wait(10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()
        self.p.stdout.close()


def kcat(bootstrap, topic, expect, timeout=20):
    """Every message of `topic` from the beginning, as kcat's JSON envelopes (dicts with
    key, payload, partition, offset). Reads again until `expect` messages are there (the
    consumer sees a message once the broker has it) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run([KCAT, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e",
                            "-J", "-q", "-X", "topic.metadata.refresh.interval.ms=1000"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=max(1, deadline - time.monotonic()) + 5)
        if r.returncode != 0:
            raise AssertionError(f"kcat -t {topic} failed ({r.returncode}): {r.stderr}")
        msgs = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        if len(msgs) >= expect or time.monotonic() > deadline:
            return msgs
        time.sleep(0.1)


class Daemon:
    """flowmarkd with a firefly source on a free UDP port, a prometheus backend on a free TCP
    port and the kafka backend given; stderr lines collected by a thread."""

    def __init__(self, workdir, kafka, extra_librdkafka=None):
        self.ff_port = free_port(socket.SOCK_DGRAM)
        self.prom_port = free_port()
        self.kafka, self.extra = kafka, extra_librdkafka
        self.config = os.path.join(workdir, "flowmark.toml")
        self.write_config("SITE-SRC")
        self.err = []
        self.p = subprocess.Popen([FLOWMARKD, "-c", self.config], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        wait_until(lambda: any("flowmarkd running" in l for l in self.err) or
                   self.p.poll() is not None, 15, "flowmarkd running")
        if self.p.poll() is not None:
            raise AssertionError(f"flowmarkd exited: {self.tail()}")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.counters = {}

    def write_config(self, src_site):
        """The config with 192.0.2.0/24 named `src_site`."""
        lines = ["[service]", 'log_level = "info"', "",
                 "[[site]]", f'name = "{src_site}"', 'networks = ["192.0.2.0/24"]', "",
                 "[[site]]", 'name = "SITE-DST"', 'networks = ["198.51.100.0/24"]', "",
                 "[source.ff]", 'type = "firefly"', 'bind = "127.0.0.1"',
                 f"port = {self.ff_port}", "",
                 "[backend.prom]", 'type = "prometheus"', f'listen = "127.0.0.1:{self.prom_port}"',
                 "", "[backend.k]", 'type = "kafka"']
        for k, v in self.kafka.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines += ["", "[backend.k.librdkafka]",
                  # brokers back after an outage: reconnect within half a second
                  '"reconnect.backoff.max.ms" = 500', '"reconnect.backoff.ms" = 50']
        for k, v in (self.extra or {}).items():
            lines.append(f'"{k}" = {json.dumps(v)}')
        with open(self.config + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(self.config + ".tmp", self.config)

    def reload(self, src_site):
        """SIGHUP with the site of 192.0.2.0/24 renamed; waits until it is applied."""
        start = len(self.err)
        self.write_config(src_site)
        self.p.send_signal(signal.SIGHUP)
        wait_until(lambda: any("reload: site map" in l for l in self.err[start:]), 10,
                   "reload with the new site map")
        if any("stopping backend k" in l for l in self.err[start:]):
            raise AssertionError("the kafka backend was restarted by a reload that did not "
                                 "change it")

    def _read(self):
        for line in self.p.stderr:
            self.err.append(line.rstrip("\n"))

    def tail(self):
        return "\n  ".join(self.err[-20:])

    def send(self, docs):
        for d in docs:
            self.sock.sendto(json.dumps(d).encode(), ("127.0.0.1", self.ff_port))

    def metrics(self):
        """{(name, frozenset(labels)): value} from the exposition."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.prom_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r'^(\w+)(?:\{(.*)\})?\s+(\S+)', line)
            if not m or line.startswith("#"):
                continue
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
        return out

    def metric(self, name, **labels):
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= ls)

    def messages(self, outcome):
        return self.metric("flowmark_kafka_messages_total", backend="k", outcome=outcome)

    def wait_metric(self, name, value, timeout=20, **labels):
        try:
            wait_until(lambda: self.metric(name, **labels) == value, timeout,
                       f"{name}{labels} == {value}")
        except AssertionError as e:
            raise AssertionError(f"{e}; now {self.metric(name, **labels)}; {self.tail()}")

    def stop(self, timeout=15):
        self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout)
        self._reader.join(5)
        for line in reversed(self.err):
            m = re.search(r"counters (\{.*\})\s*$", line)
            if m:
                self.counters = json.loads(m.group(1))
                break
        self.sock.close()
        return rc

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self._reader.join(5)
        self.p.stderr.close()
        self.sock.close()


def flow(i, base_port=20000):
    """Three fireflies of flow i (start, ongoing with usage, end with usage) and its key."""
    src, dst = f"192.0.2.{1 + i % 200}", f"198.51.100.{1 + i % 7}"
    sport, dport = base_port + i, 443
    start = f"2026-12-07T04:{i // 60 % 60:02d}:{i % 60:02d}.250000+00:00"
    fid = {"afi": "ipv4", "src-ip": src, "dst-ip": dst, "protocol": "tcp",
           "src-port": sport, "dst-port": dport}
    ctx = {"experiment-id": 2, "activity-id": 1}
    end = f"2026-12-07T05:{i // 60 % 60:02d}:{i % 60:02d}.250000+00:00"
    docs = [
        {"version": 1, "flow-lifecycle": {"state": "start", "start-time": start},
         "flow-id": fid, "context": ctx},
        {"version": 1, "flow-lifecycle": {"state": "ongoing", "start-time": start},
         "flow-id": fid, "context": ctx, "usage": {"received": 10 * i, "sent": 1000 * i + 1}},
        {"version": 1, "flow-lifecycle": {"state": "end", "start-time": start, "end-time": end},
         "flow-id": fid, "context": ctx, "usage": {"received": 20 * i, "sent": 2000 * i + 2}},
    ]
    return docs, (src, sport, dst, dport)


def start_micros(i):
    import datetime
    t = datetime.datetime(2026, 12, 7, 4, i // 60 % 60, i % 60, 250000,
                          tzinfo=datetime.timezone.utc)
    return int(t.timestamp()) * 1000000 + 250000


def flow_key(i, base_port=20000):
    _, (src, sport, dst, dport) = flow(i, base_port)
    return f"tcp {src} {sport} {dst} {dport} {start_micros(i)}"


class KafkaTest(unittest.TestCase):
    def setUp(self):
        self.t0 = time.monotonic()
        self.dir = tempfile.mkdtemp(prefix="fmk-kafka-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.cluster = MockCluster(["flows:4", "fireflies:4"])
        self.addCleanup(self.cluster.close)

    def tearDown(self):
        print(f"  [{self._testMethodName}: {time.monotonic() - self.t0:.2f} s]", file=sys.stderr)

    def daemon(self, **kafka):
        extra = kafka.pop("librdkafka", None)
        d = Daemon(self.dir, {"brokers": self.cluster.bootstrap, "topic": "flows", **kafka},
                   extra)
        self.addCleanup(d.kill)
        return d

    def send_flows(self, d, indexes, base_port=20000):
        for i in indexes:
            d.send(flow(i, base_port)[0])

    def test_every_event_arrives_once_keyed_by_flow(self):
        n = 40
        d = self.daemon(what="both", fireflies_topic="fireflies")
        self.send_flows(d, range(n))
        # A copy of each end firefly (a relay, a second collector behind one address): the
        # pipeline counts it once, so no message of its own.
        d.send([flow(i)[0][2] for i in range(n)])
        d.wait_metric("flowmark_kafka_messages_total", 2 * 3 * n, backend="k",
                      outcome="delivered")
        records = kcat(self.cluster.bootstrap, "flows", 3 * n)
        fireflies = kcat(self.cluster.bootstrap, "fireflies", 3 * n)
        self.assertEqual(len(records), 3 * n, records[:3])
        self.assertEqual(len(fireflies), 3 * n, fireflies[:3])
        self.assertEqual(self.cluster.count("flows"), 3 * n)
        by_key = collections.defaultdict(list)
        for m in records:
            by_key[m["key"]].append(m)
        self.assertEqual(set(by_key), {flow_key(i) for i in range(n)})
        partitions = set()
        for i in range(n):
            msgs = by_key[flow_key(i)]
            # One partition per flow, in the order of its events, each once.
            self.assertEqual(len({m["partition"] for m in msgs}), 1, msgs)
            partitions.add(msgs[0]["partition"])
            msgs.sort(key=lambda m: m["offset"])
            recs = [json.loads(m["payload"]) for m in msgs]
            self.assertEqual([r["state"] for r in recs], ["open", "open", "complete"], recs)
            _, (src, sport, dst, dport) = flow(i)
            last = recs[-1]
            self.assertEqual((last["protocol"], last["src_ip"], last["src_port"], last["dst_ip"],
                              last["dst_port"]), ("tcp", src, sport, dst, dport), last)
            self.assertEqual((last["bytes_sent"], last["bytes_received"], last["volume"]),
                             (2000 * i + 2, 20 * i, 2000 * i + 2), last)
            self.assertEqual(recs[1]["bytes_sent"], 1000 * i + 1, recs[1])
            self.assertEqual(last["duration"], 3600.0, last)
            self.assertEqual((last["experiment_id"], last["activity_id"]), (2, 1), last)
            self.assertEqual((last["experiment"], last["activity"]), ("atlas", "default"), last)
            self.assertEqual((last["src_site"], last["dst_site"]), ("SITE-SRC", "SITE-DST"), last)
            self.assertEqual(last["start_time"], f"2026-12-07T04:{i // 60:02d}:{i % 60:02d}"
                             ".250000+00:00", last)
        self.assertGreater(len(partitions), 1, "40 flows all in one partition")
        # The fireflies: the same keys, the events as flowmark sends them.
        ff_by_key = collections.defaultdict(list)
        for m in fireflies:
            ff_by_key[m["key"]].append(m)
        self.assertEqual(set(ff_by_key), set(by_key))
        for i in range(n):
            msgs = sorted(ff_by_key[flow_key(i)], key=lambda m: m["offset"])
            self.assertEqual(len({m["partition"] for m in msgs}), 1, msgs)
            docs = [json.loads(m["payload"]) for m in msgs]
            self.assertEqual([f["flow-lifecycle"]["state"] for f in docs],
                             ["start", "ongoing", "end"], docs)
            self.assertEqual(docs[2]["usage"], {"received": 20 * i, "sent": 2000 * i + 2})
            self.assertEqual(docs[0]["flow-id"]["src-port"], 20000 + i)
        self.assertEqual(d.messages("failed"), 0)
        self.assertEqual(d.messages("dropped_buffer_full"), 0)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.counters.get("flowmark_kafka_messages_total{backend=k,outcome=delivered}"),
                         6 * n, d.counters)

    def test_sighup_new_site_map_applies_to_later_records(self):
        d = self.daemon()
        self.send_flows(d, range(1))
        d.wait_metric("flowmark_kafka_messages_total", 3, backend="k", outcome="delivered")
        d.reload("SITE-RENAMED")
        self.send_flows(d, range(1, 2))
        d.wait_metric("flowmark_kafka_messages_total", 6, backend="k", outcome="delivered")
        sites = {}
        for m in kcat(self.cluster.bootstrap, "flows", 6):
            sites.setdefault(m["key"], []).append(json.loads(m["payload"])["src_site"])
        self.assertEqual(sites, {flow_key(0): ["SITE-SRC"] * 3,
                                 flow_key(1): ["SITE-RENAMED"] * 3})
        self.assertEqual(d.stop(), 0)

    def test_sigterm_flushes_open_flows_as_open(self):
        n = 20
        d = self.daemon()
        for i in range(n):
            d.send(flow(i)[0][:1])  # starts only: open at the stop
        d.wait_metric("flowmark_kafka_messages_total", n, backend="k", outcome="delivered")
        self.assertEqual(d.stop(), 0)
        # The stop ends every live flow (end reason shutdown): one more record each, still
        # open, and flushed before the exit.
        self.assertEqual(d.counters.get("flowmark_kafka_messages_total{backend=k,outcome=delivered}"),
                         2 * n, d.counters)
        latest = {}
        for m in sorted(kcat(self.cluster.bootstrap, "flows", 2 * n), key=lambda m: m["offset"]):
            latest[m["key"]] = json.loads(m["payload"])
        self.assertEqual(set(latest), {flow_key(i) for i in range(n)})
        for rec in latest.values():
            self.assertEqual((rec["state"], rec["end_time"]), ("open", None), rec)

    def test_brokers_down_nothing_lost_within_buffer(self):
        d = self.daemon(buffer=1000)
        self.send_flows(d, range(10))
        d.wait_metric("flowmark_kafka_messages_total", 30, backend="k", outcome="delivered")
        self.cluster.down()
        self.send_flows(d, range(10, 30))
        # The 60 events reached the backend and wait in its buffer: none delivered yet.
        d.wait_metric("flowmark_kafka_queued", 60, backend="k")
        self.assertEqual(d.messages("delivered"), 30)
        self.cluster.up()
        d.wait_metric("flowmark_kafka_messages_total", 90, backend="k", outcome="delivered")
        records = kcat(self.cluster.bootstrap, "flows", 90)
        keys = collections.Counter(m["key"] for m in records)
        self.assertEqual(keys, {flow_key(i): 3 for i in range(30)})
        self.assertEqual(d.messages("failed"), 0)
        self.assertEqual(d.messages("dropped_buffer_full"), 0)
        self.assertEqual(d.stop(), 0)
        # The outage was seen and counted by its reason (connections refused).
        errors = {k: v for k, v in d.counters.items() if k.startswith("flowmark_kafka_errors_total")}
        self.assertTrue(errors, d.counters)

    def test_tiny_buffer_overflow_counted(self):
        d = self.daemon(buffer=5)
        self.send_flows(d, range(1))  # a flow delivered: the producer knows the topic
        d.wait_metric("flowmark_kafka_messages_total", 3, backend="k", outcome="delivered")
        self.cluster.down()
        self.send_flows(d, range(1, 11))  # 30 events: 5 fit, 25 do not
        d.wait_metric("flowmark_kafka_messages_total", 25, backend="k",
                      outcome="dropped_buffer_full")
        self.assertEqual(d.metric("flowmark_backend_events_total", backend="k",
                                  outcome="delivered"), 33)  # all reached the backend
        self.cluster.up()
        d.wait_metric("flowmark_kafka_messages_total", 8, backend="k", outcome="delivered")
        records = kcat(self.cluster.bootstrap, "flows", 8)
        self.assertEqual(len(records), 8, records)
        self.assertEqual(len({(m["partition"], m["offset"]) for m in records}), 8)
        self.assertEqual(d.stop(), 0)
        c = d.counters
        self.assertEqual(c.get("flowmark_kafka_messages_total{backend=k,outcome=dropped_buffer_full}"),
                         25, c)
        self.assertEqual(c.get("flowmark_kafka_messages_total{backend=k,outcome=delivered}"), 8, c)

    def test_stop_with_brokers_down_is_bounded_and_counted(self):
        d = self.daemon(buffer=1000, flush_timeout=0.5)
        self.send_flows(d, range(1))
        d.wait_metric("flowmark_kafka_messages_total", 3, backend="k", outcome="delivered")
        self.cluster.down()
        self.send_flows(d, range(1, 3))
        d.wait_metric("flowmark_kafka_queued", 6, backend="k")
        t0 = time.monotonic()
        self.assertEqual(d.stop(), 0)
        self.assertLess(time.monotonic() - t0, 5, d.tail())
        c = d.counters
        self.assertEqual(c.get("flowmark_kafka_messages_total{backend=k,outcome=failed}"), 6, c)
        purged = sum(v for k, v in c.items()
                     if k.startswith("flowmark_kafka_errors_total{backend=k,reason=_PURGE"))
        self.assertEqual(purged, 6, c)
        self.assertTrue(any("not acknowledged within flush_timeout" in l for l in d.err), d.tail())

    def test_bad_librdkafka_property_names_the_key(self):
        for key, value, expect in (("linger.ms", "soon", r"\[backend\.k\.librdkafka\] linger\.ms"),
                                   ("no.such.property", "1",
                                    r"\[backend\.k\.librdkafka\] no\.such\.property")):
            config = os.path.join(self.dir, "bad.toml")
            with open(config, "w") as f:
                f.write(f'[source.p]\ntype = "named-pipe"\npath = "{self.dir}/p"\n'
                        f'[backend.k]\ntype = "kafka"\nbrokers = "127.0.0.1:9"\n'
                        f'topic = "flows"\n[backend.k.librdkafka]\n"{key}" = "{value}"\n')
            r = subprocess.run([FLOWMARKD, "--check", "-c", config], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=10)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertRegex(r.stdout, expect)


if __name__ == "__main__":
    if not KCAT:
        print("SKIP: kcat is not installed (Debian package kcat)", file=sys.stderr)
        sys.exit(4)
    for exe in (FLOWMARKD, MOCK):
        if not os.access(exe, os.X_OK):
            sys.exit(f"{exe} is missing: build first")
    unittest.main(verbosity=2)
