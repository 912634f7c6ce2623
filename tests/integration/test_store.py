#!/usr/bin/env python3
"""The store backend end to end, with a real PostgreSQL server started by this test.

flowmarkd (a firefly source, and two store backends: SQLite and PostgreSQL) is fed start and
end fireflies (JSON with usage, built here); then:
  - PostgreSQL holds exactly the flows sent, with the durations, bytes, names and states they
    imply (read back with psql, not with flowmark);
  - `flowmark report` gives the same groups and totals from SQLite and from PostgreSQL, equal
    to the sums this test computes from what it sent;
  - PostgreSQL stopped mid-run: the backend keeps taking events (SQLite keeps getting them),
    holds up to `buffer` flows, counts the rest as dropped_buffer_full; PostgreSQL started
    again: every held flow arrives;
  - at exit a flow still live is stored as open (no end time), and every event is accounted
    for (written + coalesced + dropped = delivered, per backend).

Runs in a network namespace of its own (unshare -n: no port clashes with other tests), the
server as user postgres (initdb and pg_ctl of Debian's postgresql-15) with its socket and
data in a temporary directory removed at the end, whatever happens. Takes a few seconds.
Usage: test_store.py BUILD_DIR. Exit status 0 pass, 1 fail, 4 skipped (the reason printed).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PG_BIN = "/usr/lib/postgresql/15/bin"
T0 = 1796616000  # 2026-12-07T04:00:00Z
FAILURES = []


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(4)


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", flush=True)
    return cond


def wait_for(pred, what, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.02)


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Postgres:
    """A PostgreSQL 15 cluster in `root`, run as user postgres, on 127.0.0.1:port."""

    def __init__(self, root, port):
        # Data, log and socket in a directory of the postgres user's own.
        self.root, self.port = os.path.join(root, "pg"), port
        os.mkdir(self.root, 0o700)
        shutil.chown(self.root, "postgres", "postgres")
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "pg.log")
        self.run([f"{PG_BIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8", "--locale=C"])

    def run(self, argv):
        p = subprocess.run(["runuser", "-u", "postgres", "--"] + argv, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=self.root)
        if p.returncode != 0:
            log = open(self.log).read() if os.path.exists(self.log) else ""
            raise AssertionError(f"{' '.join(argv)}: exit {p.returncode}: {p.stdout}{log}")
        return p

    def start(self):
        opts = (f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off")
        self.run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w",
                  "-t", "30", "start"])

    def stop(self):
        subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN}/pg_ctl", "-D", self.data,
                        "-m", "immediate", "-w", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=self.root)

    def url(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def query(self, sql):
        """Rows of `sql` through psql (unaligned, '|'-separated), or None while it fails."""
        p = subprocess.run(["psql", "-X", "-At", "-h", self.root, "-p", str(self.port), "-U",
                            "postgres", "-d", "postgres", "-c", sql], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            return None
        return [line.split("|") for line in p.stdout.splitlines()]

    def count(self, where="true"):
        rows = self.query(f"SELECT count(*) FROM flows WHERE {where}")
        return int(rows[0][0]) if rows else -1


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Flows:
    """Fireflies sent by this test, and what it expects of them."""

    EXPERIMENTS = [(2, 1), (2, 3), (5, 1), (77, 0)]  # (experiment, activity); 77 unknown

    def __init__(self, port):
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = {}  # src port -> expectation

    def send(self, doc):
        self.sock.sendto(json.dumps(doc).encode(), ("127.0.0.1", self.port))

    def doc(self, state, sport, exp, act, start, end=None, usage=None):
        d = {"version": 1,
             "flow-lifecycle": {"state": state, "start-time": iso(start)},
             "flow-id": {"afi": "ipv4", "src-ip": "192.0.2.1", "dst-ip": "198.51.100.7",
                         "protocol": "tcp", "src-port": sport, "dst-port": 443},
             "context": {"experiment-id": exp, "activity-id": act}}
        if end is not None:
            d["flow-lifecycle"]["end-time"] = iso(end)
        if usage is not None:
            d["usage"] = {"sent": usage[0], "received": usage[1]}
        return d

    def flow(self, sport):
        exp, act = self.EXPERIMENTS[sport % len(self.EXPERIMENTS)]
        start = T0 + sport * 7 % 3600
        duration = 1 + sport % 50
        sent, received = sport * 1000 + 17, (sport * 37) % 50000
        self.send(self.doc("start", sport, exp, act, start))
        self.send(self.doc("end", sport, exp, act, start, start + duration, (sent, received)))
        self.sent[sport] = dict(exp=exp, act=act, start=start, duration=duration,
                                volume=max(sent, received), sent=sent, received=received)

    def expected_groups(self, ports):
        """{(experiment_id, activity_id): (flows, bytes)} over `ports`."""
        g = {}
        for p in ports:
            f = self.sent[p]
            flows, total = g.get((f["exp"], f["act"]), (0, 0))
            g[(f["exp"], f["act"])] = (flows + 1, total + f["volume"])
        return g


def report(flowmark, store, by="experiment,activity"):
    p = subprocess.run([flowmark, "report", "--store", store, "--by", by, "--format", "json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    if p.returncode != 0:
        raise AssertionError(f"flowmark report --store {store}: exit {p.returncode}: {p.stderr}")
    return json.loads(p.stdout)


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def metric(m, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for key, v in m.items():
        if key.split("{")[0] == name and all(f'{k}="{v}"' in key for k, v in labels.items()):
            return v
    return 0 if want else m.get(name, 0)


def run(build):
    flowmarkd = os.path.join(build, "flowmarkd")
    flowmark = os.path.join(build, "flowmark")
    root = tempfile.mkdtemp(prefix="flowmark-store-")
    os.chmod(root, 0o755)  # postgres reaches its data directory and socket through it
    pg = None
    daemon = None
    try:
        pg = Postgres(root, free_port())
        pg.start()
        ff_port, prom_port = free_port(socket.SOCK_DGRAM), free_port()
        sqlite_path = os.path.join(root, "flows.db")
        buffer = 40
        config = os.path.join(root, "flowmark.toml")
        with open(config, "w") as f:
            f.write(f"""
[source.ff]
type = "firefly"
port = {ff_port}
bind = "127.0.0.1"

[backend.pg]
type = "store"
url = "{pg.url()}"
flush_interval = 20
retry_max = 200
buffer = {buffer}

[backend.lite]
type = "store"
path = "{sqlite_path}"
flush_interval = 20

[backend.prom]
type = "prometheus"
listen = "127.0.0.1:{prom_port}"
""")
        err = open(os.path.join(root, "flowmarkd.log"), "w+")
        daemon = subprocess.Popen([flowmarkd, "-c", config], stdout=err, stderr=subprocess.STDOUT)
        wait_for(lambda: daemon.poll() is not None or _listening(prom_port), "flowmarkd ready")
        check(daemon.poll() is None, "flowmarkd runs")
        flows = Flows(ff_port)

        # ---- 1. flows in, both stores hold them --------------------------------------------
        first = range(1000, 1100)
        for p in first:
            flows.flow(p)
        wait_for(lambda: pg.count("state = 'complete'") == len(first), "100 complete flows in PG")
        rows = pg.query("SELECT src_port, start_time, end_time, duration, bytes_sent, "
                        "bytes_received, volume, experiment_id, activity_id, "
                        "coalesce(experiment, ''), state FROM flows")
        check(len(rows) == len(first), f"one row per flow in PG: {len(rows)}")
        for r in rows:
            f = flows.sent[int(r[0])]
            got = (int(r[1]), int(r[2]), float(r[3]), int(r[4]), int(r[5]), int(r[6]),
                   int(r[7]), int(r[8]), r[10])
            want = (f["start"] * 10**6, (f["start"] + f["duration"]) * 10**6,
                    float(f["duration"]), f["sent"], f["received"], f["volume"], f["exp"],
                    f["act"], "complete")
            check(got == want, f"flow {r[0]} in PG: {got} != {want}")
            check((r[9] == "atlas") == (f["exp"] == 2), f"flow {r[0]}: experiment name {r[9]}")
        wait_for(lambda: metric(metrics(prom_port), "flowmark_store_records_total",
                                backend="lite", outcome="written") >= len(first),
                 "SQLite written")
        want = flows.expected_groups(first)
        for store in (sqlite_path, pg.url()):
            got = {(r["experiment_id"], r["activity_id"]): (r["flows"], r["bytes"])
                   for r in report(flowmark, store)}
            check(got == want, f"report from {store}: {got} != {want}")
        lite_rows = report(flowmark, sqlite_path, "experiment,activity,day")
        pg_rows = report(flowmark, pg.url(), "experiment,activity,day")
        for a, b in zip(lite_rows, pg_rows):
            check(abs(a["throughput_median"] - b["throughput_median"]) <= 1e-6 * b["throughput_median"]
                  and abs(a["throughput_p95"] - b["throughput_p95"]) <= 1e-6 * b["throughput_p95"]
                  and {k: v for k, v in a.items() if not k.startswith("throughput")}
                  == {k: v for k, v in b.items() if not k.startswith("throughput")},
                  f"SQLite and PostgreSQL reports differ: {a} / {b}")
        check(len(lite_rows) == len(pg_rows) > 0, "reports have the same rows")

        # ---- 1b. SIGHUP with the same configuration: the store backends are kept (and use
        # the registry they were made with), names still resolve --------------------------
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: metric(metrics(prom_port), "flowmark_reloads_total",
                                outcome="applied") >= 1, "the reload applied")
        flows.flow(1500)  # experiment 2 (atlas)
        wait_for(lambda: pg.count("src_port = 1500 AND state = 'complete'") == 1,
                 "a flow after the reload")
        check(pg.query("SELECT experiment, activity FROM flows WHERE src_port = 1500")
              == [["atlas", "default"]], "names after the reload")
        first = list(first) + [1500]

        # ---- 2. PostgreSQL stops: records wait (up to `buffer` flows), the rest counted ----
        pg.stop()
        second = range(2000, 2000 + buffer + 10)
        for p in second:
            flows.flow(p)
        wait_for(lambda: metric(metrics(prom_port), "flowmark_store_records_total",
                                backend="lite", outcome="written") >= len(first) + len(second),
                 "SQLite keeps writing while PostgreSQL is down")
        m = wait_for(lambda: (lambda m: m if metric(m, "flowmark_store_records_total",
                                                    backend="pg",
                                                    outcome="dropped_buffer_full") >= 20 else
                              None)(metrics(prom_port)), "drops past the buffer")
        check(metric(m, "flowmark_store_buffered", backend="pg") == buffer,
              f"the PG backend holds {buffer} flows: {metric(m, 'flowmark_store_buffered', backend='pg')}")
        check(metric(m, "flowmark_store_errors_total", backend="pg", reason="unavailable") >= 1,
              "PG errors counted as unavailable")
        check(metric(m, "flowmark_store_records_total", backend="pg",
                     outcome="dropped_buffer_full") == 20,
              "10 flows past the buffer: their start and end records dropped (20)")
        pg.start()
        held = list(second)[:buffer]
        wait_for(lambda: pg.count() == len(first) + buffer,
                 lambda: f"the held flows written after restart: {pg.count()} rows, "
                         f"{metrics(prom_port)}")
        check(pg.count("src_port >= 2000 AND state = 'complete'") == buffer,
              "every held flow arrived complete")
        check(pg.count(f"src_port >= {2000 + buffer}") == 0, "the dropped flows are absent")
        want = flows.expected_groups(list(first) + held)
        got = {(r["experiment_id"], r["activity_id"]): (r["flows"], r["bytes"])
               for r in report(flowmark, pg.url())}
        check(got == want, f"PG report after the restart: {got} != {want}")
        want = flows.expected_groups(list(first) + list(second))
        got = {(r["experiment_id"], r["activity_id"]): (r["flows"], r["bytes"])
               for r in report(flowmark, sqlite_path)}
        check(got == want, f"SQLite report: {got} != {want}")

        # ---- 3. exit: a live flow is stored as open; every event accounted for ------------
        flows.send(flows.doc("start", 3000, 2, 1, T0))
        wait_for(lambda: pg.count("src_port = 3000 AND state = 'open'") == 1, "a live flow")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=20)
        daemon_rc = daemon.returncode
        daemon = None
        err.seek(0)
        log = err.read()
        counters = None
        for line in reversed(log.splitlines()):
            if "counters {" in line:
                counters = json.loads(line[line.index("counters {") + 9:])
                break
        check(counters is not None, "exit counters logged")
        check(pg.query("SELECT state, end_time IS NULL FROM flows WHERE src_port = 3000")
              == [["open", "t"]], "the flow live at exit stays open, with no end time")
        check(daemon_rc == 0, f"flowmarkd exit {daemon_rc}")
        for b in ("pg", "lite"):
            delivered = counters.get(f"flowmark_backend_events_total{{backend={b},outcome=delivered}}", 0)
            accounted = sum(v for k, v in counters.items()
                            if k.startswith(f"flowmark_store_records_total{{backend={b},"))
            check(delivered > 0 and accounted == delivered,
                  f"backend {b}: {delivered} events delivered, {accounted} accounted: {counters}")

        # ---- 4. report errors -------------------------------------------------------------
        p = subprocess.run([flowmark, "report", "--store", os.path.join(root, "none.db")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        check(p.returncode == 66 and "no such store file" in p.stderr, f"missing file: {p}")
        p = subprocess.run([flowmark, "report", "--store", sqlite_path, "--by", "site"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        check(p.returncode == 2 and "allowed: experiment" in p.stderr, f"bad --by: {p}")
        p = subprocess.run([flowmark, "report", "--store", "postgresql://postgres@127.0.0.1:1/x"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        check(p.returncode == 69 and "cannot connect" in p.stderr, f"no server: {p}")
    except AssertionError as e:
        FAILURES.append(str(e))
        print(f"FAIL: {e}")
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        if FAILURES and os.path.exists(os.path.join(root, "flowmarkd.log")):
            print("flowmarkd's log:\n" + open(os.path.join(root, "flowmarkd.log")).read()[-4000:])
        if pg is not None:
            pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    if os.geteuid() != 0:
        skip("needs root (a network namespace; PostgreSQL run as user postgres)")
    if not os.path.exists(f"{PG_BIN}/initdb") or shutil.which("psql") is None:
        skip(f"PostgreSQL 15 is not installed ({PG_BIN}/initdb, psql): apt-get install postgresql")
    if os.environ.get("FLOWMARK_STORE_TEST_NETNS") != "1":
        os.environ["FLOWMARK_STORE_TEST_NETNS"] = "1"
        os.execvp("unshare", ["unshare", "--net", sys.executable] + sys.argv)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    started = time.monotonic()
    run(os.path.abspath(sys.argv[1]))
    print(f"{'FAIL' if FAILURES else 'PASS'}: store integration, {len(FAILURES)} failure(s), "
          f"{time.monotonic() - started:.1f} s")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
