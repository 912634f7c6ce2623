#!/usr/bin/env bash
# bench/bpf_veth_bench.sh BUILD_DIR — throughput over a veth pair without and with the TC
# flow-label hook (100,000 flows in the map, the measured flow among them), with iperf2:
# IPv6 TCP (GSO-sized packets) and IPv6 UDP of 64-byte datagrams (per-packet cost).
#
# Needs root, iperf (iperf2) and the bpf_flowlabel_bench program (FLOWMARK_BPF=ON).
# Environment: IPERF_SECONDS  length of each run (3)
set -euo pipefail

die() { echo "bench/bpf_veth_bench.sh: $*" >&2; exit 1; }
[[ $# -eq 1 ]] || die "usage: bench/bpf_veth_bench.sh BUILD_DIR"
BUILD=$(cd "$1" && pwd) || die "no build directory $1"
BENCH=$BUILD/bench/bpf_flowlabel_bench
[[ -x $BENCH ]] || die "$BENCH is missing: build with FLOWMARK_BPF=ON"
[[ $(id -u) -eq 0 ]] || die "needs root (namespaces, BPF)"
IPERF=$(command -v iperf) || die "iperf (iperf2) is missing (make deps)"
SECONDS_PER_RUN=${IPERF_SECONDS:-3}

A=fmvethA-$$ B=fmvethB-$$
A_ADDR=fd00::1 B_ADDR=fd00::2
HOLDER=""
cleanup() {
  if [[ -n $HOLDER ]]; then kill "$HOLDER" 2>/dev/null || true; wait "$HOLDER" 2>/dev/null || true; fi
  ip netns pids "$B" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add vethA type veth peer name vethB netns "$B"
ip -n "$A" -6 addr add "$A_ADDR/64" dev vethA nodad
ip -n "$B" -6 addr add "$B_ADDR/64" dev vethB nodad
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set vethA up
ip -n "$B" link set vethB up
ip netns exec "$B" "$IPERF" -s -V -p 5201 >/dev/null 2>&1 &
ip netns exec "$B" "$IPERF" -s -V -u -p 5202 -l 64 >/dev/null 2>&1 &
sleep 0.5

OUT=$(mktemp -d /tmp/fmvethbench.XXXXXX)
trap 'cleanup; rm -rf "$OUT"' EXIT

# sport_of PROTO DPORT: the source port of A's socket to B:DPORT, once it exists.
sport_of() {
  local i local_ep
  for ((i = 0; i < 200; i++)); do
    local_ep=$(ip netns exec "$A" ss -H"$1"n dst "[$B_ADDR]:$2" |
      awk -v a="[$A_ADDR]:" 'NR == 1 { for (i = 1; i <= NF; i++) if (index($i, a) == 1) print $i }')
    if [[ -n $local_ep ]]; then echo "${local_ep##*:}"; return 0; fi
    sleep 0.01
  done
  return 1
}

# mark PROTO DPORT: tell the hook to mark A's flow to B:DPORT (the map lookup then hits).
mark() {
  local sport reply
  sport=$(sport_of "$1" "$2") || die "no $1 socket to port $2"
  echo "$([[ $1 == t ]] && echo tcp || echo udp),$A_ADDR,$sport,$B_ADDR,$2" >&"${HOLD[1]}"
  read -r reply <&"${HOLD[0]}"
  [[ $reply == ok ]] || die "marking: $reply"
}

# run NAME MARK: one TCP and one UDP run; MARK=1 puts their flows in the map.
run() {
  local name=$1 with_mark=$2 pid tcp udp
  ip netns exec "$A" "$IPERF" -c "$B_ADDR" -V -p 5201 -t "$SECONDS_PER_RUN" -f m \
    >"$OUT/tcp.txt" 2>&1 &
  pid=$!
  if ((with_mark)); then mark t 5201; fi
  wait "$pid" || true
  tcp=$(awk '/Mbits\/sec/ { r = $(NF - 1) } END { print r }' "$OUT/tcp.txt")
  ip netns exec "$A" "$IPERF" -c "$B_ADDR" -V -u -p 5202 -l 64 -b 10G -t "$SECONDS_PER_RUN" -e \
    >"$OUT/udp.txt" 2>&1 &
  pid=$!
  if ((with_mark)); then mark u 5202; fi
  wait "$pid" || true
  udp=$(awk '/pps/ { for (i = 1; i < NF; i++) if ($(i + 1) == "pps") p = $i } END { print p }' \
    "$OUT/udp.txt")
  printf '  %-30s TCP %8s Mbit/s   UDP 64 B %10s packets/s sent\n' "$name" "${tcp:-?}" \
    "${udp:-?}"
}

echo "== veth pair, IPv6, iperf2, ${SECONDS_PER_RUN}s per run; hook: 100,000 flows in the map"
run "no hook" 0
coproc HOLD { ip netns exec "$A" "$BENCH" --attach vethA --flows 100000; }
HOLDER=$HOLD_PID
read -r line <&"${HOLD[0]}" || die "bpf_flowlabel_bench --attach failed"
[[ $line == attached ]] || die "bpf_flowlabel_bench: $line"
run "hook, flows in the map" 1
run "hook, flows not in the map" 0
exec {HOLD[1]}>&-
while read -r line <&"${HOLD[0]}"; do echo "  hook $line"; done
wait "$HOLDER" || true
HOLDER=""
run "no hook again" 0
