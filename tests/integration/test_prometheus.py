#!/usr/bin/env python3
"""Integration test of the `prometheus` backend against a real Prometheus server.

    python3 tests/integration/test_prometheus.py EXPORTER [unittest options]

EXPORTER is the program that serves the metrics: for now tests/integration/prom_driver
(the real PrometheusBackend on one real loopback TCP connection, values from
getsockopt(TCP_INFO)). Everything that depends on it is in `start_exporter` / the Exporter
class, so that flowmarkd can take its place later. Needs /usr/bin/prometheus (Debian's
`prometheus` package); skips with the reason when it is missing. Python 3 stdlib only.
Processes and temporary directories are cleaned up even when a test fails.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_prometheus.py EXPORTER [unittest options]")
EXPORTER = os.path.abspath(sys.argv.pop(1))
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
EXP, ACT = 2, 17
FLOW_METRICS = ["rtt", "rtt_var", "cwnd", "ssthresh", "bytes_sent", "bytes_acked",
                "bytes_received", "segs_out", "segs_in", "retrans", "pacing_rate",
                "delivery_rate", "mss", "pmtu"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_for(what, check, timeout=30, every=0.2):
    """Polls check() until it returns something true; fails the test after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as e:  # not listening yet
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def stop_process(proc):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Exporter:
    """The process under test: serves /metrics for one live TCP flow.

    The interface the test relies on: .port, .flow (dict of the labels the flow's series must
    carry), .end_flow() and .stop()."""

    def __init__(self, proc, port, flow):
        self.proc, self.port, self.flow = proc, port, flow

    def _line(self):
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"exporter exited (status {self.proc.wait()})")
        return line.split()

    def end_flow(self):
        self.proc.stdin.write("end\n")
        self.proc.stdin.flush()
        assert self._line() == ["ended"]

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()


def start_exporter():
    """Starts the exporter on a free loopback port; returns an Exporter once its flow is live."""
    proc = subprocess.Popen([EXPORTER, "127.0.0.1:0", str(EXP), str(ACT)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    exporter = Exporter(proc, 0, {})
    try:
        words = exporter._line()
        assert words[0] == "listening", words
        exporter.port = int(words[1])
        words = exporter._line()
        assert words[0] == "flow", words
        src, sport, dst, dport = words[1:5]
        exporter.flow = {"src": src, "dst": dst, "exp": str(EXP), "act": str(ACT),
                         "flow": f"{sport}:{dport}"}
        return exporter
    except BaseException:
        exporter.stop()
        raise


class Prometheus:
    """A real Prometheus server scraping one target every second, in a temporary directory."""

    def __init__(self, target_port):
        self.dir = tempfile.mkdtemp(prefix="flowmark-prom-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n"
                    "  scrape_interval: 1s\n"
                    "  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: flowmark\n"
                    "    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{target_port}']\n")
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def api(self, path, **params):
        query = urllib.parse.urlencode(params)
        doc = json.loads(http_get(f"{self.url}/api/v1/{path}?{query}"))
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def log_tail(self):
        self.log.flush()
        with open(self.log.name) as f:
            return "".join(f.readlines()[-20:])

    def close(self):
        stop_process(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@unittest.skipUnless(os.access(PROMETHEUS, os.X_OK), f"{PROMETHEUS} not installed "
                     "(apt-get install prometheus)")
class PrometheusScrapesTheExporter(unittest.TestCase):
    def setUp(self):
        self.exporter = start_exporter()
        self.addCleanup(self.exporter.stop)
        self.prom = Prometheus(self.exporter.port)
        self.addCleanup(self.prom.close)

    def scrape_exporter(self):
        return http_get(f"http://127.0.0.1:{self.exporter.port}/metrics")

    def wait_target_up(self):
        def up():
            targets = self.prom.api("targets")["activeTargets"]
            return [t for t in targets if t["health"] == "up"]
        try:
            return wait_for("the exporter target to be up", up)
        except AssertionError:
            print(self.prom.log_tail(), file=sys.stderr)
            raise

    def test_flow_series_appear_and_go_stale_after_the_end(self):
        flow = self.exporter.flow
        targets = self.wait_target_up()
        print(f"\ntarget: {targets[0]['scrapeUrl']} health={targets[0]['health']}")

        result = wait_for("flow_tcp_rtt in Prometheus", lambda: self.prom.query("flow_tcp_rtt"))
        self.assertEqual(len(result), 1, result)
        labels = result[0]["metric"]
        print(f"flow_tcp_rtt: {labels} = {result[0]['value'][1]} s")
        self.assertEqual(labels["__name__"], "flow_tcp_rtt")
        for key, value in flow.items():
            self.assertEqual(labels.get(key), value, key)
        self.assertEqual(labels["job"], "flowmark")
        rtt = float(result[0]["value"][1])
        self.assertGreater(rtt, 0)      # a real loopback RTT, in seconds
        self.assertLess(rtt, 1)

        # Every metric of the spec is there for the flow, counters typed as counters.
        selector = ",".join(f'{k}="{v}"' for k, v in flow.items())
        for name in FLOW_METRICS:
            got = self.prom.query(f"flow_tcp_{name}{{{selector}}}")
            self.assertEqual(len(got), 1, name)
        metadata = self.prom.api("metadata")
        self.assertEqual(metadata["flow_tcp_bytes_sent"][0]["type"], "counter")
        self.assertEqual(metadata["flow_tcp_rtt"][0]["type"], "gauge")
        # The driver sends data every second; the reader's refresh makes the counter grow.
        first = float(self.prom.query(f"flow_tcp_bytes_acked{{{selector}}}")[0]["value"][1])
        grown = wait_for("flow_tcp_bytes_acked to grow", lambda: float(
            self.prom.query(f"flow_tcp_bytes_acked{{{selector}}}")[0]["value"][1]) > first)
        self.assertTrue(grown)
        # The service's own counters come through the same endpoint.
        live = self.prom.query("flowmark_live_flows")
        self.assertEqual(live[0]["value"][1], "1")
        events = self.prom.query("flowmark_source_events_total")
        self.assertTrue(events, "service counters missing")

        self.exporter.end_flow()
        text = self.scrape_exporter()
        self.assertNotIn("flow_tcp_", text)
        self.assertIn("flowmark_live_flows 0", text)
        print("exporter after the end: no flow_tcp_ series; flowmark_live_flows 0")

        # The next scrape without the series marks it stale: instant queries return nothing.
        t0 = time.monotonic()
        wait_for("flow_tcp_rtt to go stale", lambda: self.prom.query("flow_tcp_rtt") == [])
        for name in FLOW_METRICS:
            self.assertEqual(self.prom.query(f"flow_tcp_{name}"), [], name)
        print(f"Prometheus: flow_tcp_* stale {time.monotonic() - t0:.1f} s after the end")
        live = wait_for("flowmark_live_flows 0", lambda: self.prom.query(
            "flowmark_live_flows == 0"))
        self.assertTrue(live)


if __name__ == "__main__":
    unittest.main(verbosity=2)
