#!/usr/bin/env bash
# bench/flowmarkd_bench.sh BUILD_DIR — whole-process figures of the flowmarkd service.
#
# In a private network namespace, on loopback, flowmarkd pinned to one core and the other
# processes (writer, sender, collector) to the other:
#   pipe_to_wire   a writer (`cat` of a prepared file) pushes N lines — N/2 distinct flows,
#                  each a start and an end line — into the named pipe as fast as it can;
#                  flowmarkd's firefly backend sends one firefly per event to a collector
#                  (`flowmark firefly listen --rcvbuf 64M`) on 127.0.0.1. Wall time from
#                  the first line written to the last firefly read (the namespace's UDP
#                  InDatagrams stops growing; polled every 5 ms).
#   firefly_relay  `flowmark firefly send --repeat N --rate R ongoing ...` to flowmarkd's
#                  firefly source; its firefly backend relays each one to the collector
#                  (ongoing events: every one is forwarded). Unpaced and paced.
#   kernel_floor   the kernel's share alone: `flowmark firefly send --repeat N --gso` (one
#                  start firefly encoded once, sent as the backend sends a run of equal-sized
#                  datagrams: UDP GSO buffers of 64 datagrams, four per sendmmsg; a build
#                  without --gso: sendmmsg by 64) pinned to flowmarkd's core, to the same
#                  collector: its CPU per datagram is what the UDP send and the loopback
#                  receive (which runs in the sender's softirq, on its core: the collector's
#                  socket enqueue and wake-up, and with GSO the cutting into datagrams, are
#                  charged to the sender) cost on that core, the floor under pipe_to_wire's CPU
#                  per event (the ratio is printed).
#   idle           flowmarkd (named-pipe source, firefly backend) idle for 10 s: RSS, CPU.
#   live_100k      the same after 100,000 start lines (100,000 live flows): RSS, CPU over
#                  10 s, then the time SIGTERM takes to end them all.
# CPU of flowmarkd = utime + stime from /proc/PID/stat (all its threads), per event.
# The named pipe is a lossless source (back-pressure: the writer waits while a backend's queue
# is full), so its runs keep the default queue_size; the firefly source cannot be slowed, so
# the relay runs get a queue large enough ([service] queue_size) that nothing is dropped for
# lack of room. pipe_to_wire checks the count: every line is a firefly delivered by the
# backend (exit counters) and arrived in the namespace. Drops, losses and the exit counters
# are reported. Nothing is asserted.
#
# Needs root (ip netns), taskset and python3.
# Environment: FMD_BENCH_LINES  lines for pipe_to_wire (1000000)
#              FMD_BENCH_RELAY  fireflies for firefly_relay (500000)
#              FMD_BENCH_RATE   paced rate of firefly_relay (200000)
#              FMD_BENCH_IDLE   seconds of the idle measurements (10)
#              FMD_BENCH_KEEP=1 keep the raw outputs (their directory is printed)
set -euo pipefail

die() { echo "bench/flowmarkd_bench.sh: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: bench/flowmarkd_bench.sh BUILD_DIR"
BUILD=$(cd "$1" && pwd) || die "no build directory $1"
for exe in flowmark flowmarkd; do
  [[ -x $BUILD/$exe ]] || die "$BUILD/$exe is missing: build first (make build)"
done
[[ $(id -u) -eq 0 ]] || die "needs root to create a network namespace"
for tool in ip taskset python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (make deps)"
done

NS=fmdbench-$$-$RANDOM
OUT=$(mktemp -d /tmp/fmdbench.XXXXXX)
chmod 755 "$OUT"
cleanup() {
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  if [[ ${FMD_BENCH_KEEP:-0} == 1 ]]; then
    echo "raw outputs kept in $OUT"
  else
    rm -rf "$OUT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$NS"
ip -n "$NS" link set lo up

echo "== flowmarkd: $(nproc) CPUs, $(uname -r); flowmarkd on CPU 0, the others on CPU $(( $(nproc) > 1 ? 1 : 0 ))"
ip netns exec "$NS" python3 - "$BUILD" "$OUT" "${FMD_BENCH_LINES:-1000000}" \
  "${FMD_BENCH_RELAY:-500000}" "${FMD_BENCH_RATE:-200000}" "${FMD_BENCH_IDLE:-10}" <<'EOF'
import json, os, re, signal, subprocess, sys, time

build, out, n_lines, n_relay, rate, idle_s = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
FLOWMARK, FLOWMARKD = f"{build}/flowmark", f"{build}/flowmarkd"
TICK = os.sysconf("SC_CLK_TCK")
ncpu = os.cpu_count() or 1
D_CPU, O_CPU = "0", ("1" if ncpu > 1 else "0")
PIPE = f"{out}/fm.pipe"
procs = []

def spawn(args, cpu, **kw):
    p = subprocess.Popen(["taskset", "-c", cpu, *args], **kw)
    procs.append(p)
    return p

def udp(name):
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Udp:")]
    return int(rows[1][rows[0].index(name)])

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime

def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

def mem(pid):
    """RSS, its peak (VmHWM), and of it: anonymous (the process's own), file-backed (mapped
    libraries, shared with other processes); PSS (shared pages divided among their users). kB."""
    with open(f"/proc/{pid}/status") as f:
        st = f.read()
    with open(f"/proc/{pid}/smaps_rollup") as f:
        roll = f.read()
    g = lambda pat, text: int(re.search(pat + r":\s+(\d+)", text).group(1))
    return dict(rss=g("VmRSS", st), hwm=g("VmHWM", st), anon=g("RssAnon", st),
                file=g("RssFile", st), pss=g("Pss", roll))

def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]

def wait_bound(port):
    for _ in range(1000):
        if f":{port} " in subprocess.run(["ss", "-Hulpn"], capture_output=True, text=True).stdout:
            return
        time.sleep(0.01)
    sys.exit(f"nothing bound UDP port {port}")

def collector(port, name):
    p = spawn([FLOWMARK, "firefly", "listen", "--bind", "127.0.0.1", "--port", str(port),
               "--rcvbuf", str(1 << 30), "--timeout", "600"], O_CPU,
              stdout=subprocess.DEVNULL, stderr=open(f"{out}/{name}.listen.err", "w"))
    wait_bound(port)
    return p

def daemon(name, sources, backends, service=None):
    cfg = f"{out}/{name}.toml"
    with open(cfg, "w") as f:
        # log_level info: the exit counters are logged at info.
        f.write("[service]\n")
        for k, v in (service or {}).items():
            f.write(f"{k} = {json.dumps(v)}\n")
        for kind, parts in (("source", sources), ("backend", backends)):
            for n, kv in parts.items():
                f.write(f"\n[{kind}.{n}]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                                      for k, v in kv.items()))
    err = open(f"{out}/{name}.flowmarkd.err", "w+")
    p = spawn([FLOWMARKD, "-c", cfg], D_CPU, stderr=err)
    for _ in range(1000):  # ready: its pipe exists, or its port is bound
        if "pipe" in sources and os.path.exists(PIPE):
            break
        if "ffin" in sources and ":30514 " in subprocess.run(
                ["ss", "-Hulpn"], capture_output=True, text=True).stdout:
            break
        if p.poll() is not None:
            sys.exit(f"flowmarkd exited: {open(err.name).read()}")
        time.sleep(0.01)
    time.sleep(0.1)
    return p, err

def stop(p, err):
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    rc = p.wait(60)
    secs = time.monotonic() - t0
    counters = {}
    for line in open(err.name):
        m = re.search(r"counters (\{.*\})\s*$", line)
        if m:
            counters = json.loads(m.group(1))
    return rc, secs, counters

def arrived_total():
    # Datagrams that reached a UDP socket in the namespace: queued (InDatagrams) or dropped
    # for a full receive buffer (RcvbufErrors) — on the wire either way.
    return udp("InDatagrams") + udp("RcvbufErrors")

def wait_arrivals(target, t0, quiet=2.0):
    """Polls the arrivals until `target` more arrived or nothing came for `quiet` s; returns
    (arrived, seconds from t0 to the last arrival)."""
    base, last, t_last = arrived_total(), 0, time.monotonic()
    while True:
        got = arrived_total() - base
        now = time.monotonic()
        if got != last:
            last, t_last = got, now
        if got >= target or now - t_last > quiet:
            return got, t_last - t0
        time.sleep(0.005)

results = {}

# ---- 1. named pipe -> fireflies on the wire ---------------------------------------------
lines_path = f"{out}/lines.txt"
with open(lines_path, "w") as f:
    flows = n_lines // 2
    buf = []
    for i in range(flows):
        src = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        buf.append(f"start tcp {src} {1024 + i % 60000} 10.200.0.1 443 2 1\n")
    for i in range(flows):
        src = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        buf.append(f"end tcp {src} {1024 + i % 60000} 10.200.0.1 443 2 1\n")
    f.write("".join(buf))
    del buf
coll = collector(20514, "pipe")
d, err = daemon("pipe", {"pipe": {"type": "named-pipe", "path": PIPE, "max_line": 256}},
                {"ff": {"type": "firefly", "to_destination": False,
                        "collectors": ["127.0.0.1:20514"]}})
c0, b0, in0, drop0 = cpu_ticks(d.pid), busy(), udp("InDatagrams"), udp("RcvbufErrors")
t0 = time.monotonic()
w = spawn(["sh", "-c", f"cat {lines_path} > {PIPE}"], O_CPU)
arrived, wall = wait_arrivals(n_lines, t0)
w.wait()
t_write = time.monotonic() - t0
c1, b1 = cpu_ticks(d.pid), busy()
rss = rss_kb(d.pid)
rc, stop_s, counters = stop(d, err)
coll.terminate(); coll.wait()
results["pipe"] = dict(events=n_lines, arrived=arrived, wall=wall, write_s=t_write,
                       cpu=(c1 - c0) / TICK, rss=rss, rc=rc, stop_s=stop_s,
                       drops=udp("RcvbufErrors") - drop0, machine=(b1 - b0) / TICK,
                       counters=counters)

# ---- 1b. the kernel floor: the same datagrams, sendmmsg alone ------------------------------
coll = collector(20517, "floor")
# GSO as the backend sends, where this build's flowmark has --gso (builds before it: sendmmsg).
gso = subprocess.run([FLOWMARK, "firefly", "send", "--gso", "--to", "127.0.0.1:9", "start", "tcp",
                      "10.0.0.1", "1024", "10.200.0.1", "443", "2", "1"],
                     capture_output=True).returncode == 0
drop0 = udp("RcvbufErrors")
t0 = time.monotonic()
s = spawn([FLOWMARK, "firefly", "send", "--to", "127.0.0.1:20517", "--repeat", str(n_lines),
           *(["--gso"] if gso else []),
           "--rate", "0", "start", "tcp", "10.0.0.1", "1024", "10.200.0.1", "443", "2", "1"],
          D_CPU, stdout=subprocess.DEVNULL)
arrived, wall = wait_arrivals(n_lines, t0)
_, status, ru = os.wait4(s.pid, 0)
procs.remove(s)
coll.terminate(); coll.wait()
results["floor"] = dict(events=n_lines, arrived=arrived, wall=wall, gso=gso,
                        cpu=ru.ru_utime + ru.ru_stime, drops=udp("RcvbufErrors") - drop0)

# ---- 2. firefly source -> firefly backend -------------------------------------------------
def relay(name, r):
    coll = collector(20515, name)
    d, err = daemon(name, {"ffin": {"type": "firefly", "bind": "127.0.0.1", "port": 30514}},
                    {"ff": {"type": "firefly", "to_destination": False,
                            "collectors": ["127.0.0.1:20515"]}}, {"queue_size": 4194304})
    c0, drop0 = cpu_ticks(d.pid), udp("RcvbufErrors")
    t0 = time.monotonic()
    s = spawn([FLOWMARK, "firefly", "send", "--to", "127.0.0.1:30514", "--repeat", str(n_relay),
               "--rate", str(r), "ongoing", "tcp", "192.0.2.1", "2345", "192.0.2.2", "5777",
               "2", "1"], O_CPU)
    # Every firefly is read twice in the namespace: by flowmarkd, then by the collector.
    arrived, wall = wait_arrivals(2 * n_relay, t0)
    s.wait()
    c1 = cpu_ticks(d.pid)
    rc, stop_s, counters = stop(d, err)
    coll.terminate(); coll.wait()
    relayed = counters.get("flowmark_backend_events_total{backend=ff,outcome=delivered}", 0)
    results[name] = dict(events=n_relay, arrived=relayed, wall=wall, cpu=(c1 - c0) / TICK,
                         rc=rc, drops=udp("RcvbufErrors") - drop0, counters=counters,
                         rate=r)

relay("relay_unpaced", 0)
relay("relay_paced", rate)

def by_library(pid, top=8):
    """RSS per mapped file, the largest first: [(name, kB)]."""
    agg, cur = {}, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                parts = line.split()
                cur = os.path.basename(parts[5]) if len(parts) > 5 else "[anon]"
            elif line.startswith("Rss:"):
                agg[cur] = agg.get(cur, 0) + int(line.split()[1])
    return sorted(agg.items(), key=lambda kv: -kv[1])[:top], len([k for k in agg if ".so" in k])

# ---- 3. idle, then 100,000 live flows -------------------------------------------------
coll = collector(20516, "idle")
d, err = daemon("idle", {"pipe": {"type": "named-pipe", "path": PIPE}},
                {"ff": {"type": "firefly", "to_destination": False,
                        "collectors": ["127.0.0.1:20516"]}})
time.sleep(1)
c0 = cpu_ticks(d.pid)
time.sleep(idle_s)
c1 = cpu_ticks(d.pid)
results["idle"] = dict(**mem(d.pid), cpu_pct=100.0 * (c1 - c0) / TICK / idle_s,
                       libs=by_library(d.pid))
live = 100_000
with open(f"{out}/live.txt", "w") as f:
    f.write("".join(f"start tcp 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255} "
                    f"{1024 + i % 60000} 10.200.0.1 443 2 1\n" for i in range(live)))
t0 = time.monotonic()
subprocess.run(["sh", "-c", f"cat {out}/live.txt > {PIPE}"], check=True)
arrived, load_s = wait_arrivals(live, t0)
time.sleep(1)
c0 = cpu_ticks(d.pid)
time.sleep(idle_s)
c1, m = cpu_ticks(d.pid), mem(d.pid)
rc, stop_s, counters = stop(d, err)
coll.terminate(); coll.wait()
results["live"] = dict(flows=live, arrived=arrived, load_s=load_s, **m,
                       cpu_pct=100.0 * (c1 - c0) / TICK / idle_s, stop_s=stop_s, rc=rc,
                       ended=counters.get("flowmark_backend_events_total{backend=ff,outcome=delivered}", 0) - live)

json.dump(results, open(f"{out}/results.json", "w"), indent=1)

# ---- table ----------------------------------------------------------------------------
n = lambda v: f"{v:,.0f}"
def table(title, head, rows):
    print(f"\n{title}")
    w = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    line = "+-" + "-+-".join("-" * x for x in w) + "-+"
    print(line)
    print("| " + " | ".join(str(h).ljust(x) for h, x in zip(head, w)) + " |")
    print(line)
    for r in rows:
        print("| " + " | ".join(str(c).ljust(x) if i == 0 else str(c).rjust(x)
                                for i, (c, x) in enumerate(zip(r, w))) + " |")
    print(line)

rows = []
p = results["pipe"]
dq = sum(v for k, v in p["counters"].items() if "dropped" in k)
p_delivered = p["counters"].get("flowmark_backend_events_total{backend=ff,outcome=delivered}", 0)
p_paused = p["counters"].get("flowmark_source_paused_total{source=pipe}", 0)
rows.append(["pipe -> firefly on the wire", n(p["events"]), n(p["arrived"]), f"{p['wall']:.3f}",
             n(p["arrived"] / max(p["wall"], 1e-9)), f"{p['cpu']:.2f}",
             n(p["cpu"] * 1e9 / max(p["events"], 1)), n(p["events"] / max(p["cpu"], 1e-9)),
             f"{dq} queue, {p['drops']} rcvbuf"])
f = results["floor"]
rows.append(["kernel floor: firefly send --repeat " + ("--gso" if f["gso"] else "(sendmmsg)"),
             n(f["events"]), n(f["arrived"]),
             f"{f['wall']:.3f}", n(f["arrived"] / max(f["wall"], 1e-9)), f"{f['cpu']:.2f}",
             n(f["cpu"] * 1e9 / max(f["events"], 1)), n(f["events"] / max(f["cpu"], 1e-9)),
             f"{f['drops']} rcvbuf"])
for name in ("relay_unpaced", "relay_paced"):
    r = results[name]
    dq = sum(v for k, v in r["counters"].items() if "dropped" in k)
    label = "firefly source -> collector, " + (f"paced {n(r['rate'])}/s" if r["rate"] else "unpaced")
    rows.append([label, n(r["events"]), n(r["arrived"]), f"{r['wall']:.3f}",
                 n(r["arrived"] / max(r["wall"], 1e-9)), f"{r['cpu']:.2f}",
                 n(r["cpu"] * 1e9 / max(r["arrived"], 1)), n(r["arrived"] / max(r["cpu"], 1e-9)),
                 f"{dq} queue, {r['drops']} rcvbuf"])
table("flowmarkd throughput (events out = fireflies that reached the collector's host, "
      "read or dropped by its full buffer; CPU = flowmarkd utime+stime, all threads; "
      "events/s per core = events / CPU seconds)",
      ["run", "events in", "events out", "wall s", "events/s", "CPU s", "CPU ns/event",
       "events/s per core", "drops (queue; UDP rcvbuf, namespace)"], rows)
i, l = results["idle"], results["live"]
mb = lambda kb: f"{kb / 1024:.1f} MB"
table("flowmarkd resources (RSS = anonymous + file-backed, the latter the mapped shared "
      "libraries; PSS shares those among their users)",
      ["state", "RSS", "anon", "file", "PSS", "CPU (% of a core)", "notes"],
      [["idle (pipe source, firefly backend)", mb(i["rss"]), mb(i["anon"]), mb(i["file"]),
        mb(i["pss"]), f"{i['cpu_pct']:.2f}", f"over {idle_s} s"],
       [f"{n(l['flows'])} live flows", mb(l["rss"]), mb(l["anon"]), mb(l["file"]), mb(l["pss"]),
        f"{l['cpu_pct']:.2f}",
        f"loaded in {l['load_s']:.2f} s; SIGTERM ended {n(l['ended'])} in {l['stop_s']:.2f} s"]])
libs, nlibs = i["libs"]
print(f"idle RSS by mapping ({nlibs} shared libraries mapped): "
      + ", ".join(f"{name} {kb / 1024:.1f} MB" for name, kb in libs))
rate_e2e = p["arrived"] / max(p["wall"], 1e-9)
per_core = p["events"] / max(p["cpu"], 1e-9)
table("Targets (issue 5)", ["what", "target", "measured", "verdict"],
      [["named pipe -> fireflies on the wire", ">= 200,000 events/s on one core",
        f"{n(rate_e2e)}/s wall, {n(per_core)}/s per CPU-second",
        "met" if rate_e2e >= 200_000 and p["arrived"] == p["events"] else "NOT met"],
       ["RSS idle", "< 10 MB", f"{mb(i['rss'])} ({mb(i['anon'])} anonymous, PSS {mb(i['pss'])})",
        "met" if i["rss"] < 10 * 1024 else "NOT met"]])
table("Targets (issue 18)", ["what", "target", "measured", "verdict"],
      [["named pipe -> fireflies on the wire", ">= 1,000,000 events/s on one core",
        f"{n(rate_e2e)}/s wall, {n(per_core)}/s per CPU-second",
        "met" if rate_e2e >= 1_000_000 else "NOT met"],
       [f"every one of a {n(p['events'])}-line burst delivered", "all, 0 dropped",
        f"{n(p_delivered)} delivered by the backend, {n(p['arrived'])} on the wire, "
        f"{dq} dropped; the pipe paused {n(p_paused)} times",
        "met" if p_delivered == p["events"] and p["arrived"] >= p["events"] and dq == 0
        else "NOT met"],
       ["RSS with 100,000 live flows", "<= 16 MB",
        f"{mb(l['rss'])} (peak {mb(l['hwm'])}; {mb(l['anon'])} anonymous)",
        "met" if l["hwm"] <= 16 * 1024 else "NOT met"]])
print(f"\npipe_to_wire CPU per event / kernel floor (the same datagrams sent alone, same core): "
      f"{p['cpu'] / max(p['events'], 1) / max(f['cpu'] / max(f['events'], 1), 1e-12):.2f}")
print(f"machine busy during pipe_to_wire: {p['machine'] / max(p['wall'], 1e-9):.2f} of {ncpu} CPUs "
      f"(other processes included)")
EOF
