#!/usr/bin/env bash
# bench/run.sh BUILD_DIR — the multicast benchmarks, in a private network namespace.
#
#   1. mcast_bench (Google Benchmark): Sender::send vs send_batch, sender alone and
#      SAY→RECV with a receiving thread, 64 and 1400-byte datagrams; stream micro-benchmarks.
#   2. Whole processes: `flowmark mcast recv --stats` pinned to one core and
#      `flowmark mcast say --count N --size 64` pinned to the other — paced at 500,000/s,
#      unpaced, and unpaced with nobody listening — with each process's CPU per message.
#   3. iperf2 (if installed) on the same namespace, 64-byte UDP multicast, for comparison.
#   4. A summary of the figures against the issue's targets. Nothing is asserted: the exit
#      status only says whether the runs could be made.
#   5. bench/firefly_listen.sh: whole-process throughput of `flowmark firefly listen`.
#   6. bench/flowmarkd_bench.sh: the service, named pipe -> fireflies, firefly relay, RSS
#      and CPU idle and with 100,000 live flows.
#   7. bench/observe_bench.sh: `flowmark observe -r` vs peer flow meters (softflowd, nfpcapd,
#      argus, ndpiReader, tshark) on synthetic captures, whole processes.
#   7. bpf_flowlabel_bench: ns/packet of the TC flow-label program (BPF_PROG_TEST_RUN,
#      100,000 flows in the map; target <= 100 ns), when built with FLOWMARK_BPF.
#   8. bench/bpf_veth_bench.sh: iperf2 over a veth pair without and with the hook.
#   9. bench/kevents_delay_bench.py: connect() -> start firefly delay of flowmarkd's
#      kernel-events source (target <= 1 ms) against the sockets source polling every 2 s.
#  10. kafka_backend_bench and bench/kafka_bench.py: the kafka backend alone and flowmarkd end
#      to end into librdkafka's mock cluster, when built with FLOWMARK_KAFKA.
#  11. store_bench: fireflies -> flowmarkd's firefly source -> store backend (SQLite) end
#      to end (target >= 300,000 fireflies/s, every flow stored), and `flowmark report` over
#      10,000,000 stored flows (target <= 2 s).
#  12. collector_bench.sh: flowmarkd as a collector — ingest rate and loss, into SQLite,
#      memory per open flow (COLLECTOR_BENCH_* variables, see the script)
#
# Needs root (ip netns), taskset, GNU time (/usr/bin/time) and python3: `make deps`.
# Environment: MCAST_BENCH_COUNT   datagrams per whole-process run (2000000)
#              MCAST_BENCH_MIN_TIME Google Benchmark min time per benchmark, s (1)
#              MCAST_BENCH_FILTER   --benchmark_filter for mcast_bench (all)
#              IPERF_SECONDS        length of the iperf2 run (3; 0 skips it)
#              MCAST_BENCH_KEEP=1   keep the raw outputs (their directory is printed)
#              BPF_BENCH_REPEAT     BPF_PROG_TEST_RUN repetitions per trial (1000000)
#              KEVENTS_BENCH_COUNT  connections of the connect() -> firefly delay run (200)
#              KAFKA_BENCH_EVENTS   events of each kafka run (2000000)
#              STORE_BENCH_FLOWS    flows of the store ingest run (1000000; 2 fireflies each)
#              STORE_REPORT_FLOWS   flows in the store the report runs over (10000000)
set -euo pipefail

die() { echo "bench/run.sh: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: bench/run.sh BUILD_DIR"
BUILD=$(cd "$1" && pwd) || die "no build directory $1"
FLOWMARK=$BUILD/flowmark
BENCH=$BUILD/bench/mcast_bench
[[ -x $FLOWMARK ]] || die "$FLOWMARK is missing: build first (make build)"
[[ -x $BENCH ]] || die "$BENCH is missing: configure with FLOWMARK_BENCH=ON and build"
[[ $(id -u) -eq 0 ]] || die "needs root to create a network namespace"
for tool in ip taskset python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (make deps)"
done
TIME=/usr/bin/time
[[ -x $TIME ]] || die "GNU time ($TIME) is missing (make deps)"
IPERF=$(command -v iperf || true)

COUNT=${MCAST_BENCH_COUNT:-2000000}
MIN_TIME=${MCAST_BENCH_MIN_TIME:-1}
IPERF_SECONDS=${IPERF_SECONDS:-3}
GROUP=239.9.9.9
PORT=45000
TICK=$(getconf CLK_TCK)

# One core for the sender, the other for the receiver.
NCPU=$(nproc)
TX_CPU=0
RX_CPU=$((NCPU > 1 ? 1 : 0))
((NCPU > 1)) || echo "bench/run.sh: one CPU only: sender and receiver share it" >&2

NS=fmbench-$$-$RANDOM
OUT=$(mktemp -d /tmp/fmbench.XXXXXX)
BG_PIDS=()
cleanup() {
  local p
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  if [[ ${MCAST_BENCH_KEEP:-0} == 1 ]]; then
    echo "raw outputs kept in $OUT"
  else
    rm -rf "$OUT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A private namespace whose loopback does multicast. The address gives datagrams a real
# source (without one the kernel sends from 0.0.0.0, which iperf2's server cannot use).
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link set lo multicast on
ip -n "$NS" addr add 10.255.0.1/32 dev lo
ip -n "$NS" route add 224.0.0.0/4 dev lo
in_ns() { ip netns exec "$NS" "$@"; }

# Busy ticks of the whole machine (user nice system irq softirq steal).
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
udp_rcvbuf_errors() {
  in_ns awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RcvbufErrors") c = i; h = 1 }
                       else print $c }' /proc/net/snmp
}
wait_joined() {  # until a socket in the namespace is a member of $GROUP on lo
  local i
  for ((i = 0; i < 200; i++)); do
    ip -n "$NS" maddr show dev lo | grep -Eq "inet +$GROUP\$" && { sleep 0.05; return 0; }
    sleep 0.01
  done
  die "the receiver did not join $GROUP"
}
now_ns() { date +%s%N; }

echo "== machine: $(nproc) CPUs, $(uname -r); sender on CPU $TX_CPU, receiver on CPU $RX_CPU"
b0=$(busy_ticks); sleep 1; b1=$(busy_ticks)
BACKGROUND=$(python3 -c "print(f'{($b1 - $b0) / $TICK:.2f}')")
echo "== background load before the runs: $BACKGROUND CPUs busy (of $NCPU)"
if python3 -c "import sys; sys.exit(0 if $BACKGROUND > 0.1 else 1)"; then
  echo "   WARNING: other processes are using the CPUs; the figures below will be low." >&2
  ps -eo pid,pcpu,etime,comm --sort=-pcpu | head -n 4 | sed 's/^/   /' >&2
fi

# ---- 1. mcast_bench ------------------------------------------------------------------
echo
echo "== mcast_bench (min time ${MIN_TIME}s per benchmark)"
bench_args=(--benchmark_min_time="$MIN_TIME" --benchmark_out="$OUT/bench.json"
            --benchmark_out_format=json)
if [[ -n ${MCAST_BENCH_FILTER:-} ]]; then bench_args+=(--benchmark_filter="$MCAST_BENCH_FILTER"); fi
in_ns "$BENCH" "${bench_args[@]}"

# ---- 2. whole processes --------------------------------------------------------------
# run_cli NAME INTERVAL WITH_RECEIVER: one SAY of $COUNT 64-byte datagrams (paced when
# INTERVAL is not empty), with a RECV --stats on the other core when WITH_RECEIVER is 1.
# Appends one JSON object to $OUT/cli.jsonl.
run_cli() {
  local name=$1 interval=$2 with_rx=$3
  shift 3
  local extra=("$@")
  local port=$((PORT++)) rx_pid=""
  local drops0 drops1 b0 b1 t0 t1
  drops0=$(udp_rcvbuf_errors)
  if ((with_rx)); then
    # Not through in_ns: a function put in the background is a subshell, and $! must be
    # the process itself (ip netns exec and taskset exec it).
    ip netns exec "$NS" taskset -c "$RX_CPU" "$TIME" -f '%e %U %S' -o "$OUT/$name.recv.time" \
      "$FLOWMARK" mcast recv --group "$GROUP" --port "$port" --daemon --stats --timeout 2 \
      --rcvbuf 67108864 >"$OUT/$name.recv.json" 2>"$OUT/$name.recv.err" &
    rx_pid=$!
    BG_PIDS+=("$rx_pid")
    wait_joined
  fi
  local say=("$FLOWMARK" mcast say --group "$GROUP" --port "$port" --count "$COUNT" --size 64)
  if [[ -n $interval ]]; then say+=(--interval "$interval"); fi
  say+=("${extra[@]}")
  echo "-- $name: ${say[*]#"$BUILD/"}"
  b0=$(busy_ticks)
  t0=$(now_ns)
  in_ns taskset -c "$TX_CPU" "$TIME" -f '%e %U %S' -o "$OUT/$name.say.time" "${say[@]}" \
    2>"$OUT/$name.say.err" || die "$name: SAY failed: $(cat "$OUT/$name.say.err")"
  t1=$(now_ns)
  b1=$(busy_ticks)
  if [[ -n $rx_pid ]]; then
    wait "$rx_pid" || die "$name: RECV failed: $(cat "$OUT/$name.recv.err")"
  fi
  drops1=$(udp_rcvbuf_errors)
  python3 - "$name" "$COUNT" "${interval:-0}" "$with_rx" "$((t1 - t0))" "$((b1 - b0))" "$TICK" \
    "$((drops1 - drops0))" "$OUT/$name" >>"$OUT/cli.jsonl" <<'EOF'
import json, sys
name, count, interval, with_rx, wall_ns, busy, tick, drops, base = sys.argv[1:]
count, with_rx, wall = int(count), int(with_rx) == 1, int(wall_ns) / 1e9
def cpu(path):
    e, u, s = (float(x) for x in open(path).read().split()[-3:])
    return u, s
su, ss = cpu(base + ".say.time")
r = {"name": name, "sent": count, "interval": float(interval), "wall_s": wall,
     "rate": count / wall, "say_usr_ns": su * 1e9 / count, "say_sys_ns": ss * 1e9 / count,
     "machine_busy_cpus": int(busy) / int(tick) / wall, "with_rx": with_rx}
if with_rx:
    stats = None
    for line in open(base + ".recv.json"):
        if '"type":"stats"' in line:
            stats = json.loads(line)
    streams = stats["streams"] if stats else []
    received = sum(s["received"] for s in streams)
    unique = sum(s["unique"] for s in streams)
    ru, rs = cpu(base + ".recv.time")
    r.update(received=received, lost=count - unique, loss_pct=100.0 * (count - unique) / count,
             duplicates=sum(s["duplicates"] for s in streams), rcvbuf_drops=int(drops),
             recv_usr_ns=ru * 1e9 / max(received, 1), recv_sys_ns=rs * 1e9 / max(received, 1))
print(json.dumps(r))
EOF
  python3 - "$OUT/cli.jsonl" <<'EOF'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print(f"   sent {r['sent']:,} in {r['wall_s']:.3f} s = {r['rate']:,.0f}/s; SAY CPU "
      f"{r['say_usr_ns'] + r['say_sys_ns']:.0f} ns/msg (usr {r['say_usr_ns']:.0f}, sys {r['say_sys_ns']:.0f})")
if r["with_rx"]:
    print(f"   received {r['received']:,}, lost {r['lost']:,} ({r['loss_pct']:.3f} %), "
          f"rcvbuf drops {r['rcvbuf_drops']:,}; RECV CPU {r['recv_usr_ns'] + r['recv_sys_ns']:.0f} "
          f"ns/msg (usr {r['recv_usr_ns']:.0f}, sys {r['recv_sys_ns']:.0f})")
print(f"   machine busy during the send: {r['machine_busy_cpus']:.2f} CPUs")
EOF
}

echo
echo "== whole processes: $COUNT datagrams of 64 bytes to $GROUP, SAY on CPU $TX_CPU, RECV on CPU $RX_CPU"
: >"$OUT/cli.jsonl"
run_cli paced_500k 0.000002 1
run_cli unpaced "" 1
run_cli unpaced_no_receiver "" 0
run_cli unpaced_gso "" 1 --gso
run_cli unpaced_gso_no_receiver "" 0 --gso

# ---- 3. iperf2 -----------------------------------------------------------------------
: >"$OUT/iperf.json"
if [[ -n $IPERF && $IPERF_SECONDS != 0 ]]; then
  echo
  echo "== iperf2 ($($IPERF -v 2>&1 | head -n 1)): 64-byte UDP to $GROUP for ${IPERF_SECONDS}s, unpaced (-b 10G)"
  port=$((PORT++))
  ip netns exec "$NS" taskset -c "$RX_CPU" "$IPERF" -s -u -B "$GROUP" -p "$port" -l 64 -w 64M -e \
    >"$OUT/iperf.server.txt" 2>&1 &
  srv=$!
  BG_PIDS+=("$srv")
  wait_joined
  in_ns taskset -c "$TX_CPU" "$TIME" -f '%e %U %S' -o "$OUT/iperf.client.time" \
    "$IPERF" -c "$GROUP" -u -p "$port" -l 64 -b 10G -t "$IPERF_SECONDS" -T 1 -e \
    >"$OUT/iperf.client.txt" 2>&1 || die "iperf client failed: $(cat "$OUT/iperf.client.txt")"
  sleep 1
  # The server's CPU time (utime + stime, in ticks) before it is stopped.
  srv_ticks=$(awk '{ print $14 + $15 }' "/proc/$srv/stat" 2>/dev/null || echo 0)
  # iperf2 asks for a second interrupt while its threads finish; then it is killed.
  for sig in INT INT KILL; do
    kill -"$sig" "$srv" 2>/dev/null || break
    for ((i = 0; i < 20; i++)); do kill -0 "$srv" 2>/dev/null && sleep 0.1; done
  done
  wait "$srv" 2>/dev/null || true
  python3 - "$OUT" "$srv_ticks" "$TICK" >"$OUT/iperf.json" <<'EOF'
import json, re, sys
out, srv_ticks, tick = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = open(out + "/iperf.client.txt").read()
server = open(out + "/iperf.server.txt").read()
r = {}
m = re.search(r"sec\s.*?(\d+)/(\d+)\s+(\d+) pps", client)
if m:
    r["sent"], r["send_pps"] = int(m.group(1)), int(m.group(3))
    e, u, s = (float(x) for x in open(out + "/iperf.client.time").read().split()[-3:])
    r["client_cpu_ns"] = (u + s) * 1e9 / max(r["sent"], 1)
# The server's summary: "... 0.001 ms 0/617703 (0%) ... 607727 pps 607703/0(2) pkts ...".
# Its Lost/Total is not used: iperf2 counts there datagrams never sent (its total can
# exceed what the client sent). Received = the Rx packets; lost = sent - received.
m = re.search(r"(\d+) pps\s+(\d+)/\d+\(\d+\) pkts", server)
if m:
    received = int(m.group(2))
    lost = max(r.get("sent", received) - received, 0)
    r.update(server_received=received, server_lost=lost, recv_pps=int(m.group(1)),
             server_loss_pct=100.0 * lost / max(r.get("sent", 1), 1))
    r["server_cpu_ns"] = srv_ticks / tick * 1e9 / max(received, 1)
print(json.dumps(r))
EOF
  grep -E "pps|Sent" "$OUT/iperf.client.txt" | sed 's/^/   client: /' || true
  grep -E "Lost/Total|%\)" "$OUT/iperf.server.txt" | sed 's/^/   server: /' || true
else
  echo
  echo "== iperf2 not installed (apt-get install iperf): no comparison"
fi

# ---- 4. summary ----------------------------------------------------------------------
python3 - "$OUT" "$BACKGROUND" "$NCPU" <<'EOF'
import json, sys
out, background, ncpu = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])

def table(title, head, rows):
    print(f"\n{title}")
    cols = list(zip(*([head] + rows))) if rows else [[h] for h in head]
    w = [max(len(str(c)) for c in col) for col in cols]
    line = "+-" + "-+-".join("-" * x for x in w) + "-+"
    print(line)
    print("| " + " | ".join(str(h).ljust(x) for h, x in zip(head, w)) + " |")
    print(line)
    for r in rows:
        print("| " + " | ".join(str(c).rjust(x) if i and str(c)[:1].isdigit() else str(c).ljust(x)
                                for i, (c, x) in enumerate(zip(r, w))) + " |")
    print(line)

n = lambda v: f"{v:,.0f}"
bench = {}
try:
    for b in json.load(open(out + "/bench.json"))["benchmarks"]:
        bench[b["name"].removesuffix("/real_time")] = b
except (OSError, ValueError, KeyError):
    pass

print("\n" + "=" * 100)
print("SUMMARY")
rows = []
for name, b in bench.items():
    if not name.startswith("SAY"):
        continue
    recv = f"{b['recv_ratio'] * 100:.2f} %" if "recv_ratio" in b else "-"
    loss = f"{b['loss_pct']:.3f} %" if "loss_pct" in b else "-"
    rx = n(b["rx_cpu_ns/msg"]) if "rx_cpu_ns/msg" in b else "-"
    drops = n(b["rcvbuf_drops"]) if "rcvbuf_drops" in b else "-"
    rows.append([name, n(b["items_per_second"]), n(b["cpu_ns/msg"]), rx, recv, loss, drops])
table("Library (mcast_bench; 64 datagrams per iteration; CPU = the sending / receiving thread)",
      ["benchmark", "msgs/s", "tx CPU ns/msg", "rx CPU ns/msg", "received", "loss", "rcvbuf drops"],
      rows)
rows = []
for name, b in bench.items():
    if name.startswith(("stream/", "recv/")):
        label = f" ({b['label']})" if b.get("label") else ""
        rows.append([name + label, f"{b['cpu_time']:.2f}", n(b["items_per_second"])])
table("Stream header, statistics and DatagramReader::read (per call)",
      ["benchmark", "ns", "calls/s"], rows)

cli = {}
for line in open(out + "/cli.jsonl"):
    if line.strip():
        r = json.loads(line)
        cli[r["name"]] = r
rows = []
for r in cli.values():
    rx = r["with_rx"]
    rows.append([r["name"], n(r["sent"]), f"{r['wall_s']:.3f}", n(r["rate"]),
                 n(r["say_usr_ns"] + r["say_sys_ns"]),
                 n(r["recv_usr_ns"] + r["recv_sys_ns"]) if rx else "-",
                 n(r["received"]) if rx else "-", n(r["lost"]) if rx else "-",
                 f"{r['loss_pct']:.3f} %" if rx else "-", n(r["rcvbuf_drops"]) if rx else "-",
                 f"{r['machine_busy_cpus']:.2f}"])
table("Whole processes (flowmark mcast say --size 64 -> recv --stats --rcvbuf 64M; "
      "CPU = usr+sys of the process per datagram)",
      ["run", "sent", "wall s", "sent/s", "SAY ns/msg", "RECV ns/msg", "received", "lost",
       "loss", "rcvbuf drops", "busy CPUs"], rows)

iperf = {}
try:
    iperf = json.loads(open(out + "/iperf.json").read() or "{}")
except (OSError, ValueError):
    pass
if iperf:
    table("iperf2 (client: one write() per datagram on a connected socket; server: one "
          "read() per datagram; 64 bytes, unpaced; CPU per datagram)",
          ["sent pps", "client ns/msg", "received pps", "server ns/msg", "lost"],
          [[n(iperf.get("send_pps", 0)), n(iperf.get("client_cpu_ns", 0)),
            n(iperf.get("recv_pps", 0)), n(iperf.get("server_cpu_ns", 0)),
            f"{iperf.get('server_lost', 0):,} ({iperf.get('server_loss_pct', 0):.3f} %)"]])

rows = []
def target_rate(label, rate, loss_pct=None):
    if rate is None:
        return
    measured = n(rate) + "/s"
    if loss_pct:
        measured += f" (receiver lost {loss_pct:.2f} %)"
    rows.append([label, "≥ 1,000,000/s", measured, "met" if rate >= 1e6 else "NOT met"])
g = lambda k: bench.get(k, {}).get("items_per_second")
loss = lambda k: bench.get(k, {}).get("loss_pct")
target_rate("64 B sent from one core: Sender::send_batch, nobody listening", g("SAY/sendmmsg/64"))
target_rate("64 B sent from one core: Sender::send, nobody listening", g("SAY/sendto/64"))
target_rate("64 B sent from one core: Sender::send_batch, to a receiver", g("SAY_RECV/sendmmsg/64"),
            loss("SAY_RECV/sendmmsg/64"))
target_rate("64 B sent from one core: Sender::send, to a receiver", g("SAY_RECV/sendto/64"),
            loss("SAY_RECV/sendto/64"))
target_rate("64 B sent from one core: Sender::send_batch with GSO, to a receiver",
            g("SAY_RECV/sendmsg_gso/64"), loss("SAY_RECV/sendmsg_gso/64"))
if "unpaced_no_receiver" in cli:
    target_rate("64 B sent from one core: flowmark say, nobody listening",
                cli["unpaced_no_receiver"]["rate"])
if "unpaced" in cli:
    target_rate("64 B sent from one core: flowmark say, to flowmark recv", cli["unpaced"]["rate"],
                cli["unpaced"]["loss_pct"])
if "unpaced_gso_no_receiver" in cli:
    target_rate("64 B sent from one core: flowmark say --gso, nobody listening",
                cli["unpaced_gso_no_receiver"]["rate"])
if "unpaced_gso" in cli:
    target_rate("64 B sent from one core: flowmark say --gso, to flowmark recv",
                cli["unpaced_gso"]["rate"], cli["unpaced_gso"]["loss_pct"])
def target_loss(label, rate, lost, pct):
    if rate is None:
        return
    if lost == 0 and rate >= 0.95 * 500_000:
        verdict = "met"
    elif lost == 0:
        verdict = f"not tested: sender reached {rate / 5e3:.0f} % of 500,000/s"
    else:
        verdict = "NOT met"
    rows.append([label, "0 lost at 500,000/s", f"{lost:,} lost ({pct:.3f} %) at {n(rate)}/s", verdict])
b = bench.get("SAY_RECV_PACED/sendmmsg/64/500000_per_s")
if b:
    target_loss("receiver keeps up: library, paced 500,000/s",
                b["items_per_second"], round(b["loss_pct"] * b["iterations"] * 64 / 100),
                b["loss_pct"])
if "paced_500k" in cli:
    r = cli["paced_500k"]
    target_loss("receiver keeps up: flowmark recv, say paced 500,000/s", r["rate"], r["lost"],
                r["loss_pct"])
table("Targets (issue)", ["what", "target", "measured", "verdict"], rows)
print(f"\nBackground load before the runs: {background:.2f} of {ncpu} CPUs busy"
      + ("  <-- other processes were running: figures are low" if background > 0.1 else ""))
EOF

# ---- 5. firefly listen (its own namespace and summary) ----------------------------------
echo
"$(dirname "${BASH_SOURCE[0]}")/firefly_listen.sh" "$BUILD" ||
  echo "bench/run.sh: bench/firefly_listen.sh failed" >&2

# ---- 6. flowmarkd: pipe -> wire, firefly relay, idle and 100,000 live flows -----------------
echo
"$(dirname "${BASH_SOURCE[0]}")/flowmarkd_bench.sh" "$BUILD" ||
  echo "bench/run.sh: bench/flowmarkd_bench.sh failed" >&2

# ---- 7. flowmark observe vs peer flow meters (no namespace needed) ------------------------
echo
"$(dirname "${BASH_SOURCE[0]}")/observe_bench.sh" "$BUILD" ||
  echo "bench/run.sh: bench/observe_bench.sh failed" >&2

# ---- 7. the TC flow-label program (BPF_PROG_TEST_RUN; no namespace needed) ---------------
if [[ -x $BUILD/bench/bpf_flowlabel_bench ]]; then
  echo
  echo "== bpf_flowlabel_bench: TC flow-label program, ns/packet, 100,000 flows in the map" \
    "(target <= 100 ns)"
  "$BUILD/bench/bpf_flowlabel_bench" --repeat "${BPF_BENCH_REPEAT:-1000000}" ||
    echo "bench/run.sh: bpf_flowlabel_bench failed" >&2
fi
if [[ -x $BUILD/bench/bpf_flowlabel_bench && -n $IPERF ]]; then
  echo
  "$(dirname "${BASH_SOURCE[0]}")/bpf_veth_bench.sh" "$BUILD" ||
    echo "bench/run.sh: bench/bpf_veth_bench.sh failed" >&2
fi

# ---- 9. connect() -> start firefly: the kernel-events source vs polling ---------------------
if [[ -x $BUILD/bench/bpf_flowlabel_bench && -x $BUILD/flowmarkd ]]; then
  echo
  echo "== kevents_delay_bench: connect() -> start firefly, ${KEVENTS_BENCH_COUNT:-200}" \
    "connections on loopback (target <= 1 ms; flowd polls every 2 s)"
  python3 "$(dirname "${BASH_SOURCE[0]}")/kevents_delay_bench.py" "$BUILD" \
    --count "${KEVENTS_BENCH_COUNT:-200}" ||
    echo "bench/run.sh: bench/kevents_delay_bench.py failed" >&2
fi

# ---- 10. the kafka backend: alone, and flowmarkd end to end into librdkafka's mock cluster --
if [[ -x $BUILD/bench/kafka_backend_bench && -x $BUILD/tests/kafka_mock_broker ]]; then
  echo
  echo "== kafka: events/s into librdkafka's mock cluster, every message checked at the" \
    "brokers (target >= 500,000 fireflies/s end to end)"
  "$BUILD/bench/kafka_backend_bench" "${KAFKA_BENCH_EVENTS:-2000000}" fireflies ||
    echo "bench/run.sh: kafka_backend_bench failed" >&2
  "$BUILD/bench/kafka_backend_bench" "${KAFKA_BENCH_EVENTS:-2000000}" records ||
    echo "bench/run.sh: kafka_backend_bench failed" >&2
  python3 "$(dirname "${BASH_SOURCE[0]}")/kafka_bench.py" "$BUILD" \
    --events "${KAFKA_BENCH_EVENTS:-2000000}" ||
    echo "bench/run.sh: bench/kafka_bench.py failed" >&2
fi

# ---- 11. the collector's store: ingest end to end, and the report -------------------------
if [[ -x $BUILD/bench/store_bench && -x $BUILD/flowmarkd ]]; then
  echo
  echo "== store_bench ingest: fireflies -> flowmarkd -> SQLite, ${STORE_BENCH_FLOWS:-1000000}" \
    "flows (target >= 300,000 fireflies/s end to end)"
  "$BUILD/bench/store_bench" ingest --build "$BUILD" --flows "${STORE_BENCH_FLOWS:-1000000}" ||
    echo "bench/run.sh: store_bench ingest failed (or lost flows)" >&2
  echo
  echo "== store_bench report: flowmark report over ${STORE_REPORT_FLOWS:-10000000} flows" \
    "(target <= 2 s)"
  "$BUILD/bench/store_bench" report --build "$BUILD" --flows "${STORE_REPORT_FLOWS:-10000000}" ||
    echo "bench/run.sh: store_bench report failed" >&2
fi

# ---- 12. the collector: ingest, SQLite and memory per open flow, whole process -----------
echo
echo "== collector_bench: fireflies -> flowmarkd (ingest, into SQLite, memory per open flow)"
"$(dirname "${BASH_SOURCE[0]}")/collector_bench.sh" "$BUILD" ||
  echo "bench/run.sh: collector_bench.sh failed" >&2
