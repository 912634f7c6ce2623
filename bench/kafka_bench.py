#!/usr/bin/env python3
"""bench/kafka_bench.py BUILD_DIR [--events N] [--mode pipe|firefly|both] [--what W] —
flow events per second through flowmarkd's kafka backend into librdkafka's mock cluster.

The mock cluster (BUILD_DIR/tests/kafka_mock_broker: 3 brokers, the Kafka protocol over
loopback TCP) is the broker. N distinct events (N/2 flows, a start and an end line each) go in:
  pipe     a writer (`cat` of a prepared file) into flowmarkd's named pipe, as fast as it can;
  firefly  bench/firefly_flood (distinct flows, a start and an end firefly each, sendmmsg;
           --rate paces it) into flowmarkd's firefly source (--threads readers) over UDP on
           loopback: what the kernel drops is read from /proc/net/snmp RcvbufErrors and
           reported, not guessed.
flowmarkd's kafka backend (what = "fireflies" by default: one firefly JSON per event) produces
them to a topic of 8 partitions. Time: from the first line written until the last message is
in the brokers' logs. Every message is checked to have arrived: the mock cluster's high
watermarks summed over the topic's partitions must equal the delivered count (flowmarkd's exit
counters). CPU of flowmarkd = utime + stime of all its threads (/proc/PID/stat), also per
thread ("loop": the event loop: sources and pipeline; the kafka backend's worker; librdkafka's
rdk:broker threads), and of the mock cluster (the brokers share the machine).
Prints one JSON line per run. Nothing is asserted but the arrival check (exit 1 when a
message is missing).

The issue's target: >= 500,000 fireflies/s (on a dedicated machine: flowmarkd on one core,
the mock cluster and the writer on others).
"""

import argparse
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu(pid):
    """{"name/tid": CPU seconds} of each thread of `pid` (tid == pid: the event loop)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        label = "loop" if tid == str(pid) else f"{name}/{tid}"
        out[label] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def udp(name):
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Udp:")]
    return int(rows[1][rows[0].index(name)])


class Mock:
    def __init__(self, exe, topic):
        self.p = subprocess.Popen([exe, "--brokers", "3", f"{topic}:8"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.bootstrap = self.line()

    def line(self, timeout=30):
        if not select.select([self.p.stdout], [], [], timeout)[0]:
            sys.exit("kafka_mock_broker: no answer")
        return self.p.stdout.readline().strip()

    def count(self, topic):
        self.p.stdin.write(f"count {topic}\n")
        self.p.stdin.flush()
        reply = self.line()
        if not reply.startswith("count "):
            sys.exit(f"kafka_mock_broker: {reply}")
        return int(reply.split()[1])

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.close()
        self.p.wait(30)


def run(build, mode, events, what, workdir, rate=0, threads=1):
    topic = "bench"
    mock = Mock(os.path.join(build, "tests", "kafka_mock_broker"), topic)
    ff_port = free_port(socket.SOCK_DGRAM)
    pipe = os.path.join(workdir, f"{mode}.pipe")
    lines = os.path.join(workdir, "lines")
    if not os.path.exists(lines):
        with open(lines, "w") as f:
            for i in range(events // 2):
                src = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                port = 1024 + i % 60000
                f.write(f"start tcp {src} {port} 192.0.2.1 443 2 1\n")
            for i in range(events // 2):
                src = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                port = 1024 + i % 60000
                f.write(f"end tcp {src} {port} 192.0.2.1 443 2 1\n")
    source = (f'[source.in]\ntype = "named-pipe"\npath = "{pipe}"\n' if mode == "pipe" else
              f'[source.in]\ntype = "firefly"\nbind = "127.0.0.1"\nport = {ff_port}\n'
              f'threads = {threads}\n')
    cfg = os.path.join(workdir, f"{mode}.toml")
    with open(cfg, "w") as f:
        f.write(f'[service]\nqueue_size = 4194304\n\n{source}\n'
                f'[backend.k]\ntype = "kafka"\nbrokers = "{mock.bootstrap}"\ntopic = "{topic}"\n'
                f'what = "{what}"\nbuffer = 2000000\nflush_timeout = 30\n'
                f'[backend.k.librdkafka]\n"linger.ms" = 20\n"batch.num.messages" = 10000\n')
    err_path = os.path.join(workdir, f"{mode}.err")
    err = open(err_path, "w")
    d = subprocess.Popen([os.path.join(build, "flowmarkd"), "-c", cfg], stderr=err,
                         stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while "flowmarkd running" not in open(err_path).read():  # ready
        if time.monotonic() > deadline or d.poll() is not None:
            sys.exit(f"flowmarkd did not start: {open(err_path).read()[-2000:]}")
        time.sleep(0.02)
    rcvbuf_errors0 = udp("RcvbufErrors")
    cpu0, mock_cpu0 = cpu_s(d.pid), cpu_s(mock.p.pid)
    t0 = time.monotonic()
    if mode == "pipe":
        writer = subprocess.Popen(f"cat {lines} > {pipe}", shell=True)
    else:  # firefly_flood: distinct flows, a start and an end each, sendmmsg batches
        args = [os.path.join(build, "bench", "firefly_flood"), "--to", f"127.0.0.1:{ff_port}",
                "--count", str(events // 2), "--states", "start,end"]
        if rate:
            args += ["--rate", str(rate)]
        writer = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    # Done: the writer exited and the brokers' count stopped growing (it reached `events`, or
    # stayed put for a second). Counted at the brokers, not by flowmarkd: a message counts
    # once it is in a partition's log.
    count, t_done, changed = 0, t0, time.monotonic()
    while True:
        time.sleep(0.05)
        now = mock.count(topic)
        if now != count:
            count, t_done, changed = now, time.monotonic(), time.monotonic()
        if writer.poll() is not None and (count >= events or time.monotonic() - changed > 1):
            break
        if time.monotonic() - changed > 30:
            break
    cpu, mock_cpu = cpu_s(d.pid) - cpu0, cpu_s(mock.p.pid) - mock_cpu0
    threads_cpu = {k: round(v, 2) for k, v in sorted(thread_cpu(d.pid).items(),
                                                      key=lambda kv: -kv[1]) if v >= 0.05}
    seconds = t_done - t0
    d.send_signal(signal.SIGTERM)
    d.wait(60)
    err.close()
    counters = {}
    for line in reversed(open(err_path).read().splitlines()):
        m = re.search(r"counters (\{.*\})\s*$", line)
        if m:
            counters = json.loads(m.group(1))
            break
    c = lambda key: counters.get(key, 0)
    delivered = c("flowmark_kafka_messages_total{backend=k,outcome=delivered}")
    arrived = mock.count(topic)  # after the stop: the end events of flows still live, too
    mock.close()
    result = dict(mode=mode, what=what, events=events, rate=rate or None,
                  threads=threads if mode == "firefly" else None,
                  offered=c("flowmark_backend_offered_total{backend=k}"),
                  delivered=delivered,
                  failed=c("flowmark_kafka_messages_total{backend=k,outcome=failed}"),
                  dropped=c("flowmark_kafka_messages_total{backend=k,outcome=dropped_buffer_full}"),
                  arrived=arrived, seconds=round(seconds, 3),
                  per_s=int(count / seconds) if seconds > 0 else 0,
                  flowmarkd_cpu_s=round(cpu, 2),
                  cpu_us_per_msg=round(cpu / count * 1e6, 2) if count else None,
                  udp_rcvbuf_errors=udp("RcvbufErrors") - rcvbuf_errors0 if mode == "firefly"
                  else 0, thread_cpu_s=threads_cpu, mock_cluster_cpu_s=round(mock_cpu, 2),
                  load_1min=round(os.getloadavg()[0], 2))
    print(json.dumps(result), flush=True)
    return arrived == delivered


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build")
    ap.add_argument("--events", type=int, default=2000000)
    ap.add_argument("--mode", choices=("pipe", "firefly", "both"), default="both")
    ap.add_argument("--what", choices=("fireflies", "records"), default="fireflies")
    ap.add_argument("--rate", type=int, default=0,
                    help="firefly mode: fireflies/s offered by the sender (0: as fast as it can)")
    ap.add_argument("--threads", type=int, default=1, help="firefly mode: the source's threads")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    for exe in ("flowmarkd", "bench/firefly_flood", "tests/kafka_mock_broker"):
        if not os.access(os.path.join(build, exe), os.X_OK):
            sys.exit(f"{build}/{exe} is missing: build first")
    ok = True
    with tempfile.TemporaryDirectory(prefix="kafka-bench-") as tmp:
        for mode in (("pipe", "firefly") if a.mode == "both" else (a.mode,)):
            ok &= run(build, mode, a.events, a.what, tmp, a.rate, a.threads)
    if not ok:
        print("kafka_bench: messages missing at the broker (arrived != delivered)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
