#!/usr/bin/env bash
# bench/collector_bench.sh BUILD_DIR — flowmarkd as a collector of fireflies, whole process.
#
# In a private network namespace, on loopback, bench/firefly_flood (pinned to CPU 0) sends
# fireflies of distinct flows to flowmarkd's firefly source (every thread of flowmarkd pinned
# to CPU 1). What the kernel dropped is read from the namespace's UDP RcvbufErrors, what
# flowmarkd took from its own counters at exit. Runs:
#   ingest_unpaced   start+end pairs as fast as the sender can: the rate flowmarkd reads,
#                    decodes and joins them (backend: prometheus aggregates only)
#   ingest_paced     the same at COLLECTOR_BENCH_RATE (default 500,000/s) for
#                    COLLECTOR_BENCH_SECONDS (default 10): loss at a sustained rate
#   sqlite           start+end pairs into the store backend (SQLite): stored rows per second,
#                    every flow checked in the database
#   memory           COLLECTOR_BENCH_OPEN (default 1,000,000) start fireflies, no end: resident
#                    memory per open flow (store + prometheus aggregates)
# Nothing is asserted. Printed for each run: the rate the sender offered (on loopback the
# kernel's receive work runs on the sender's core, which is what bounds it), what flowmarkd
# read and what the kernel dropped, and flowmarkd's CPU per firefly (its capacity on one core).
#
# Needs root (ip netns), taskset, python3 (sqlite3 module).
set -euo pipefail
die() { echo "bench/collector_bench.sh: $*" >&2; exit 1; }
[[ $# -eq 1 ]] || die "usage: bench/collector_bench.sh BUILD_DIR"
BUILD=$(cd "$1" && pwd) || die "no build directory $1"
FLOWMARKD=$BUILD/flowmarkd
FLOOD=$BUILD/bench/firefly_flood
[[ -x $FLOWMARKD && -x $FLOOD ]] || die "build first (make build)"
[[ $(id -u) -eq 0 ]] || die "needs root to create a network namespace"
COUNT=${COLLECTOR_BENCH_COUNT:-1000000}
RATE=${COLLECTOR_BENCH_RATE:-500000}
SECONDS_PACED=${COLLECTOR_BENCH_SECONDS:-10}
OPEN=${COLLECTOR_BENCH_OPEN:-1000000}
PORT=10514
NS=fmcollbench-$$-$RANDOM
OUT=$(mktemp -d /tmp/fmcollbench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
in_ns() { ip netns exec "$NS" "$@"; }
udp_counter() {
  in_ns awk -v name="$1" '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == name) c = i; h = 1 }
                                    else print $c }' /proc/net/snmp
}
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
b0=$(busy_ticks); sleep 1; b1=$(busy_ticks)
echo "== background load: $(python3 -c "print(f'{($b1 - $b0) / $(getconf CLK_TCK):.2f}')") CPUs busy of $(nproc)"

# start_d NAME BACKENDS: flowmarkd pinned to CPU 1 with the given backend tables.
start_d() {
  local name=$1 backends=$2
  cat >"$OUT/$name.toml" <<TOML
[service]
max_live_flows = 2000000
[source.fireflies]
type = "firefly"
bind = "127.0.0.1"
port = $PORT
$backends
TOML
  ip netns exec "$NS" taskset -c 1 "$FLOWMARKD" -c "$OUT/$name.toml" 2>"$OUT/$name.err" &
  D=$!
  PIDS+=("$D")
  for _ in $(seq 500); do in_ns ss -Hulpn "sport = :$PORT" | grep -q . && break; sleep 0.01; done
}
stop_d() {  # prints the counters flowmarkd logged at exit (JSON), with its CPU seconds
  local ticks
  ticks=$(awk '{print $14 + $15}' "/proc/$D/stat")
  kill -TERM "$D"; wait "$D" || true
  python3 -c "import re,sys,json; m=re.search(r'counters (\{.*\})', open(sys.argv[1]).read()); c=json.loads(m.group(1) if m else '{}'); c['cpu_seconds']=int(sys.argv[2])/int(sys.argv[3]); print(json.dumps(c))" "$OUT/$1.err" "$ticks" "$(getconf CLK_TCK)"
}
flood() { in_ns taskset -c 0 "$FLOOD" --to "127.0.0.1:$PORT" "$@"; }
PROM='[backend.metrics]
type = "prometheus"
listen = "127.0.0.1:19000"
flow_metrics = false'

report() {  # NAME SENT_JSON COUNTERS_JSON DROPS
  python3 - "$@" <<'PY'
import json, sys
name, sent, counters, drops = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
got = counters.get("flowmark_firefly_datagrams_total{source=fireflies}", 0)
cpu = counters.get("cpu_seconds", 0)
print(f"{name:16s} offered {sent['sent']:>9} in {sent['seconds']:7.3f} s = {sent['rate']:>9.0f}/s; "
      f"flowmarkd read {got:>9}; kernel dropped {drops:>9} ({100 * drops / max(sent['sent'], 1):.2f} %); "
      f"flowmarkd CPU {cpu:.2f} s = {1e6 * cpu / max(got, 1):.2f} us a firefly "
      f"(one core: {got / cpu if cpu else 0:,.0f}/s)")
PY
}

# ---- ingest ----------------------------------------------------------------------------------
start_d ingest "$PROM"
d0=$(udp_counter RcvbufErrors)
sent=$(flood --count "$((COUNT / 2))" --states start,end --preencode)
sleep 1
c=$(stop_d ingest)
report ingest_unpaced "$sent" "$c" "$(($(udp_counter RcvbufErrors) - d0))"

start_d paced "$PROM"
d0=$(udp_counter RcvbufErrors)
sent=$(flood --count "$((RATE * SECONDS_PACED / 2))" --states start,end --rate "$RATE")
sleep 1
c=$(stop_d paced)
report ingest_paced "$sent" "$c" "$(($(udp_counter RcvbufErrors) - d0))"

# ---- into SQLite -----------------------------------------------------------------------------
start_d sqlite "[backend.store]
type = \"store\"
path = \"$OUT/flows.db\""
d0=$(udp_counter RcvbufErrors)
t0=$(date +%s%N)
sent=$(flood --count "$((COUNT / 2))" --states start,end --rate "${COLLECTOR_BENCH_SQLITE_RATE:-300000}")
c=$(stop_d sqlite)
t1=$(date +%s%N)
report sqlite "$sent" "$c" "$(($(udp_counter RcvbufErrors) - d0))"
python3 - "$OUT/flows.db" "$((COUNT / 2))" "$t0" "$t1" "$c" <<'PY'
import json, sqlite3, sys
db, flows, t0, t1, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
n = sqlite3.connect(db).execute("SELECT count(*), sum(state = 'complete') FROM flows").fetchone()
full = c.get("flowmark_backend_events_total{backend=store,outcome=dropped_queue_full}", 0)
print(f"sqlite           {n[0]} rows ({n[1]} complete) of {flows} flows sent; stored to exit "
      f"{(t1 - t0) / 1e9:.2f} s = {2 * n[1] / ((t1 - t0) / 1e9):.0f} fireflies/s; "
      f"queue_full drops {full}")
PY

# ---- memory per open flow ------------------------------------------------------------------
start_d memory "$PROM
[backend.store]
type = \"store\"
path = \"$OUT/open.db\""
rss0=$(awk '/VmRSS/ {print $2}' /proc/$D/status)
sent=$(flood --count "$OPEN" --states start --rate 200000)
sleep 2
rss1=$(awk '/VmRSS/ {print $2}' /proc/$D/status)
c=$(stop_d memory)
python3 - "$rss0" "$rss1" "$c" <<'PY'
import json, sys
r0, r1, c = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
n = c.get("flowmark_source_events_total{source=fireflies,state=start}", 0)
print(f"memory           {n} open flows: resident {r0 / 1024:.1f} -> {r1 / 1024:.1f} MB = "
      f"{(r1 - r0) * 1024 / max(n, 1):.0f} bytes per open flow")
PY
