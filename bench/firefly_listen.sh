#!/usr/bin/env bash
# bench/firefly_listen.sh BUILD_DIR — whole-process throughput of `flowmark firefly listen`.
#
# In a private network namespace, on loopback: `flowmark firefly send --repeat N` blasts N
# copies of one valid firefly (sendmmsg, 64 a call) at a `firefly listen --bind 127.0.0.1
# --stats --format json` pinned to another core, which decodes and validates every one and
# prints it as one JSON line. Runs:
#   paced_300k          sender paced at 300,000/s, listener output to /dev/null
#   unpaced             sender as fast as it can, listener output to /dev/null
#   paced_300k_piped    paced, listener output through a pipe (its own stats line is read
#                       back: received / accepted / rejected as the listener counted them)
# For the /dev/null runs, received = the namespace's UDP InDatagrams (datagrams read by the
# only UDP reader there) and lost = its RcvbufErrors (the only place loopback drops). CPU
# per firefly = usr+sys of the process / fireflies it handled. Nothing is asserted.
#
# Needs root (ip netns), taskset, GNU time and python3.
# Environment: FIREFLY_BENCH_COUNT  fireflies per run (1000000)
#              FIREFLY_BENCH_RATE   paced rate (300000)
#              FIREFLY_BENCH_KEEP=1 keep the raw outputs (their directory is printed)
set -euo pipefail

die() { echo "bench/firefly_listen.sh: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: bench/firefly_listen.sh BUILD_DIR"
BUILD=$(cd "$1" && pwd) || die "no build directory $1"
FLOWMARK=$BUILD/flowmark
[[ -x $FLOWMARK ]] || die "$FLOWMARK is missing: build first (make build)"
[[ $(id -u) -eq 0 ]] || die "needs root to create a network namespace"
for tool in ip taskset python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (make deps)"
done
TIME=/usr/bin/time
[[ -x $TIME ]] || die "GNU time ($TIME) is missing (make deps)"

COUNT=${FIREFLY_BENCH_COUNT:-1000000}
RATE=${FIREFLY_BENCH_RATE:-300000}
PORT=10514
NCPU=$(nproc)
TX_CPU=0
RX_CPU=$((NCPU > 1 ? 1 : 0))
((NCPU > 1)) || echo "bench/firefly_listen.sh: one CPU only: sender and listener share it" >&2
FLOW=(start tcp 192.0.2.1 2345 192.0.2.2 5777 atlas perfSONAR)

NS=fmffbench-$$-$RANDOM
OUT=$(mktemp -d /tmp/fmffbench.XXXXXX)
BG_PIDS=()
cleanup() {
  local p
  for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  if [[ ${FIREFLY_BENCH_KEEP:-0} == 1 ]]; then
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
in_ns() { ip netns exec "$NS" "$@"; }

udp_counter() {  # udp_counter NAME: a field of the Udp: line of /proc/net/snmp in the namespace
  in_ns awk -v name="$1" '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == name) c = i; h = 1 }
                                    else print $c }' /proc/net/snmp
}
wait_bound() {  # until something in the namespace listens on UDP $PORT
  local i
  for ((i = 0; i < 500; i++)); do
    in_ns ss -Hulpn "sport = :$PORT" | grep -q . && { sleep 0.05; return 0; }
    sleep 0.01
  done
  die "the listener did not bind port $PORT"
}
now_ns() { date +%s%N; }

# The size of the datagram the sender repeats (one sent to a plain socket).
SIZE=$(in_ns python3 - "$FLOWMARK" "$PORT" "${FLOW[@]}" <<'EOF'
import socket, subprocess, sys
flowmark, port, flow = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", port))
s.settimeout(5)
subprocess.run([flowmark, "firefly", "send", "--hostname", "bench.example.org",
                "--to", f"127.0.0.1:{port}", *flow], check=True)
print(len(s.recv(65536)))
EOF
)

echo "== firefly listen: $COUNT fireflies of $SIZE bytes on loopback; send on CPU $TX_CPU, listen on CPU $RX_CPU ($NCPU CPUs, $(uname -r))"
# Other processes on the two cores take CPU from the pinned sender and listener: say so.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
b0=$(busy_ticks); sleep 1; b1=$(busy_ticks)
BACKGROUND=$(python3 -c "print(f'{($b1 - $b0) / $(getconf CLK_TCK):.2f}')")
echo "== background load before the runs: $BACKGROUND CPUs busy (of $NCPU)"
if python3 -c "import sys; sys.exit(0 if $BACKGROUND > 0.1 else 1)"; then
  echo "   WARNING: other processes are using the CPUs; expect lower rates and some loss." >&2
fi
: >"$OUT/runs.jsonl"

# run NAME RATE SINK: one send of $COUNT fireflies (RATE 0: unpaced) to a listener whose
# stdout goes to /dev/null (SINK=null) or through a pipe to `tail -n 1` (SINK=pipe).
run() {
  local name=$1 rate=$2 sink=$3
  local in0 in1 drop0 drop1 t0 t1 rx_pid
  in0=$(udp_counter InDatagrams)
  drop0=$(udp_counter RcvbufErrors)
  local listen=(taskset -c "$RX_CPU" "$TIME" -f '%e %U %S' -o "$OUT/$name.listen.time"
                "$FLOWMARK" firefly listen --bind 127.0.0.1 --port "$PORT" --stats --format json
                --count "$COUNT" --timeout 2 --rcvbuf 67108864)
  # Not through in_ns: $! must be the process itself (ip netns exec execs it).
  if [[ $sink == null ]]; then
    ip netns exec "$NS" "${listen[@]}" >/dev/null 2>"$OUT/$name.listen.err" &
    rx_pid=$!
  else
    ip netns exec "$NS" bash -c '"$@" 2>"'"$OUT/$name.listen.err"'" | tail -n 1' _ "${listen[@]}" \
      >"$OUT/$name.stats.json" &
    rx_pid=$!
  fi
  BG_PIDS+=("$rx_pid")
  wait_bound
  local send=("$FLOWMARK" firefly send --hostname bench.example.org --to "127.0.0.1:$PORT"
              --repeat "$COUNT" --rate "$rate" "${FLOW[@]}")
  echo "-- $name: ${send[*]#"$BUILD/"}"
  t0=$(now_ns)
  in_ns taskset -c "$TX_CPU" "$TIME" -f '%e %U %S' -o "$OUT/$name.send.time" "${send[@]}" \
    2>"$OUT/$name.send.err" || die "$name: send failed: $(cat "$OUT/$name.send.err")"
  t1=$(now_ns)
  wait "$rx_pid" || die "$name: listen failed: $(cat "$OUT/$name.listen.err")"
  in1=$(udp_counter InDatagrams)
  drop1=$(udp_counter RcvbufErrors)
  python3 - "$name" "$COUNT" "$rate" "$sink" "$((t1 - t0))" "$((in1 - in0))" \
    "$((drop1 - drop0))" "$OUT/$name" >>"$OUT/runs.jsonl" <<'EOF'
import json, os, sys
name, count, rate, sink, wall_ns, read, drops, base = sys.argv[1:]
count, read, drops, wall = int(count), int(read), int(drops), int(wall_ns) / 1e9
def cpu(path):
    e, u, s = (float(x) for x in open(path).read().split()[-3:])
    return e, u, s
_, su, ss = cpu(base + ".send.time")
le, lu, ls = cpu(base + ".listen.time")
r = {"name": name, "sent": count, "rate_asked": float(rate), "output": sink, "wall_s": wall,
     "send_rate": count / wall, "send_ns": (su + ss) * 1e9 / count, "received": read,
     "rcvbuf_drops": drops}
if sink == "pipe" and os.path.getsize(base + ".stats.json"):
    st = json.loads(open(base + ".stats.json").read())
    r.update(received=st["received"], accepted=st["accepted"],
             rejected=sum(st["rejected"].values()))
r["lost"] = count - r["received"]
r["listen_ns"] = (lu + ls) * 1e9 / max(r["received"], 1)
r["listen_usr_ns"] = lu * 1e9 / max(r["received"], 1)
r["listen_sys_ns"] = ls * 1e9 / max(r["received"], 1)
print(json.dumps(r))
EOF
  python3 - "$OUT/runs.jsonl" <<'EOF'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
acc = f", accepted {r['accepted']:,}, rejected {r['rejected']:,}" if "accepted" in r else ""
print(f"   sent {r['sent']:,} in {r['wall_s']:.3f} s = {r['send_rate']:,.0f}/s "
      f"(send CPU {r['send_ns']:.0f} ns each)")
print(f"   listener received {r['received']:,}{acc}, lost {r['lost']:,} "
      f"({100.0 * r['lost'] / r['sent']:.3f} %, rcvbuf drops {r['rcvbuf_drops']:,}); "
      f"CPU {r['listen_ns']:.0f} ns per firefly (usr {r['listen_usr_ns']:.0f}, "
      f"sys {r['listen_sys_ns']:.0f}) = {1e9 / max(r['listen_ns'], 1):,.0f} fireflies/s per core")
EOF
}

run paced_300k "$RATE" null
run unpaced 0 null
run paced_300k_piped "$RATE" pipe

python3 - "$OUT/runs.jsonl" "$RATE" "$SIZE" "$BACKGROUND" <<'EOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rate, size, background = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
head = ["run", "output", "sent", "sent/s", "received", "accepted", "lost", "listen ns/ff",
        "send ns/ff"]
n = lambda v: f"{v:,.0f}"
rows = [[r["name"], r["output"], n(r["sent"]), n(r["send_rate"]), n(r["received"]),
         n(r["accepted"]) if "accepted" in r else "-",
         f"{r['lost']:,} ({100.0 * r['lost'] / r['sent']:.2f} %)", n(r["listen_ns"]),
         n(r["send_ns"])] for r in runs]
w = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
line = "+-" + "-+-".join("-" * x for x in w) + "-+"
print(f"\nfirefly listen ({size}-byte fireflies, --format json, CPU = usr+sys per firefly)")
print(line)
print("| " + " | ".join(h.ljust(x) for h, x in zip(head, w)) + " |")
print(line)
for r in rows:
    print("| " + " | ".join(c.ljust(x) if i < 2 else c.rjust(x)
                            for i, (c, x) in enumerate(zip(r, w))) + " |")
print(line)
paced = next((r for r in runs if r["name"] == "paced_300k"), None)
if paced:
    ok = paced["lost"] == 0 and paced["send_rate"] >= 0.95 * rate
    print(f"target: sustain {rate:,}/s without loss: "
          + ("met" if ok else f"NOT met ({paced['lost']:,} lost at {paced['send_rate']:,.0f}/s)"))
print(f"background load before the runs: {background:.2f} CPUs busy"
      + ("  <-- other processes were running: figures are low" if background > 0.1 else ""))
EOF
