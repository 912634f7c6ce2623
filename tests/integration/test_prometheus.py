#!/usr/bin/env python3
"""Integration test of the `prometheus` backend against a real Prometheus server.

    python3 tests/integration/test_prometheus.py EXPORTER [FLOWMARKD] [unittest options]

The same test runs against two exporters:
- EXPORTER, tests/integration/prom_driver: the real PrometheusBackend on one real loopback
  TCP connection, values from getsockopt(TCP_INFO);
- FLOWMARKD, the service itself: a named-pipe source and a prometheus backend on
  127.0.0.1:PORT; the test opens a real loopback TCP connection, announces its 4-tuple with a
  pipe line, and the flow_tcp_* values are those flowmarkd reads over netlink
  (INET_DIAG_INFO); the end line must remove the series. Also the service's own counters.
Needs /usr/bin/prometheus (Debian's `prometheus` package); skips with the reason when it is
missing. Python 3 stdlib only. Processes and temporary directories are cleaned up even when
a test fails.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request

from netns_helpers import write_pipe

if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
    sys.exit("usage: test_prometheus.py EXPORTER [FLOWMARKD] [unittest options]")
EXPORTER = os.path.abspath(sys.argv.pop(1))
FLOWMARKD = None
if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
    FLOWMARKD = os.path.abspath(sys.argv.pop(1))
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


class FlowmarkdExporter:
    """flowmarkd (named-pipe source, prometheus backend) and one real loopback TCP connection,
    announced by a pipe line; the same interface as Exporter."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="flowmark-promd-")
        self.pipe = os.path.join(self.dir, "flowmark.pipe")
        self.port = free_port()
        self.proc = None
        self.stopping = threading.Event()
        self.socks = []
        config = os.path.join(self.dir, "flowmark.toml")
        with open(config, "w") as f:
            f.write("[source.pipe]\n"
                    'type = "named-pipe"\n'
                    f'path = "{self.pipe}"\n\n'
                    "[backend.metrics]\n"
                    'type = "prometheus"\n'
                    f'listen = "127.0.0.1:{self.port}"\n'
                    "poll_interval = 1\n")
        self.err = open(os.path.join(self.dir, "flowmarkd.err"), "w")
        self.proc = subprocess.Popen([FLOWMARKD, "-c", config], stdout=subprocess.DEVNULL,
                                     stderr=self.err)
        wait_for("flowmarkd running", lambda: self.proc.poll() is None and
                 "flowmarkd running" in self.stderr(), timeout=15, every=0.05)
        # The connection: a listener, a client, and a thread that sends a few KiB every
        # 0.5 s (so that bytes_acked grows) while the other end reads.
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        listener.close()
        self.socks = [client, server]
        threading.Thread(target=self._traffic, args=(client, server), daemon=True).start()
        sport, dport = client.getsockname()[1], client.getpeername()[1]
        self.line = f"tcp 127.0.0.1 {sport} 127.0.0.1 {dport} {EXP} {ACT}\n"
        self.flow = {"src": "127.0.0.1", "dst": "127.0.0.1", "exp": str(EXP), "act": str(ACT),
                     "flow": f"{sport}:{dport}"}
        write_pipe(self.pipe, "start " + self.line)

    def _traffic(self, client, server):
        while not self.stopping.wait(0.5):
            try:
                client.sendall(b"f" * 4096)
                n = 0
                while n < 4096:
                    n += len(server.recv(65536))
            except OSError:
                return

    def stderr(self):
        self.err.flush()
        with open(self.err.name) as f:
            return f.read()

    def metrics(self):
        return http_get(f"http://127.0.0.1:{self.port}/metrics")

    def end_flow(self):
        write_pipe(self.pipe, "end " + self.line)
        # The pipeline is asynchronous: wait until the backend has taken the end.
        wait_for("the flow's series to leave /metrics",
                 lambda: "flow_tcp_" not in self.metrics(), timeout=5, every=0.05)

    def stop(self):
        self.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in self.socks:
            s.close()
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


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
    make_exporter = staticmethod(start_exporter)

    def setUp(self):
        self.exporter = self.make_exporter()
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


@unittest.skipUnless(FLOWMARKD, "no FLOWMARKD argument")
class PrometheusScrapesFlowmarkd(PrometheusScrapesTheExporter):
    """The same test against the service, and its own counters through Prometheus."""

    make_exporter = staticmethod(FlowmarkdExporter)

    def test_service_counters_in_prometheus(self):
        self.wait_target_up()
        selector = ",".join(f'{k}="{v}"' for k, v in self.exporter.flow.items())
        wait_for("the flow's series", lambda: self.prom.query(f"flow_tcp_rtt{{{selector}}}"))
        want = {'flowmark_source_events_total{source="pipe",state="start"}': 1,
                'flowmark_backend_offered_total{backend="metrics"}': 1,
                'flowmark_backend_events_total{backend="metrics",outcome="delivered"}': 1,
                'flowmark_pipeline_received_total': 1,
                'flowmark_live_flows': 1}
        for expr, value in want.items():
            got = wait_for(expr, lambda: self.prom.query(f"{expr} == {value}"))
            print(f"  {expr} = {got[0]['value'][1]}")
        # A pipe line that is rejected is counted by reason.
        write_pipe(self.exporter.pipe, "start tcp 127.0.0.1 1 127.0.0.1 0 2 1\n")
        expr = 'flowmark_source_rejected_total{source="pipe",reason="bad_port"}'
        self.assertEqual(self.prom.query(expr)[0]["value"][1], "0")  # every reason, from 0
        wait_for("the reject counted", lambda: self.prom.query(f"{expr} == 1"))
        metadata = self.prom.api("metadata")
        self.assertEqual(metadata["flowmark_source_events_total"][0]["type"], "counter")
        self.assertEqual(metadata["flowmark_live_flows"][0]["type"], "gauge")
        # The values are flowmarkd's reading of the kernel's tcp_info (over netlink): the
        # connection's MSS on loopback is far above any Ethernet one.
        mss = float(self.prom.query(f"flow_tcp_mss{{{selector}}}")[0]["value"][1])
        self.assertGreater(mss, 1460)
        print(f"  flow_tcp_mss{{{selector}}} = {mss:.0f}")
        self.exporter.end_flow()
        text = self.exporter.metrics()
        self.assertRegex(text, r"(?m)^flowmark_live_flows 0\b")
        self.assertRegex(text, r'(?m)^flowmark_source_events_total\{source="pipe",'
                               r'state="end"\} 1\b')


if __name__ == "__main__":
    from ksft import main  # exit 4 when tests were skipped, printing why
    main()
