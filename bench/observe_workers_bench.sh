#!/bin/bash
# bench/observe_workers_bench.sh BUILD_DIR — issue 17's whole-process figures, in one run on
# the captures of bench/observe_bench.sh (made here with bench/observe_gen when missing):
#   - flowmark observe -r F --workers 1, 2 and 4 (records formatted as JSON lines to
#     /dev/null): wall and CPU seconds, the speed-up over one worker;
#   - flowmark observe -r F --workers 1 --ipfix FILE (records as IPFIX to a file in /tmp,
#     instead of JSON): the cost of IPFIX over JSON, and records/s written;
#   - the peers on the same file: softflowd -r F -c none -a -6 -m 2000000, nfpcapd -r F -l DIR;
#   - cat F > /dev/null, the floor.
# R rounds (WORKERS_BENCH_REPEAT, 3), alternated: odd rounds in the order above, even rounds
# reversed; each run after the file was read into the page cache. Medians and the spread
# (min..max) are printed. Not a test: other processes on the machine change the figures.
# Environment: WORKERS_BENCH_FLOWS ("10000 1000000"), WORKERS_BENCH_PACKETS (5000000),
#              WORKERS_BENCH_REPEAT (3), WORKERS_BENCH_PEERS ("softflowd nfpcapd").
set -euo pipefail
die() { echo "bench/observe_workers_bench.sh: $*" >&2; exit 1; }
[[ $# -eq 1 ]] || die "usage: bench/observe_workers_bench.sh BUILD_DIR"
BUILD=$(cd "$1" && pwd) || die "no build directory $1"
FLOWMARK=$BUILD/flowmark
GEN=$BUILD/bench/observe_gen
[[ -x $FLOWMARK && -x $GEN ]] || die "build first (flowmark and bench/observe_gen)"
TIME=/usr/bin/time
[[ -x $TIME ]] || die "GNU time ($TIME) is missing (make deps)"
PACKETS=${WORKERS_BENCH_PACKETS:-5000000}
FLOWS=${WORKERS_BENCH_FLOWS:-10000 1000000}
REPEAT=${WORKERS_BENCH_REPEAT:-3}
PEERS=${WORKERS_BENCH_PEERS-softflowd nfpcapd}
DATA=$BUILD/observe_bench
OUT=$(mktemp -d /tmp/fmwbench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
mkdir -p "$DATA"

echo "== machine: $(nproc) CPUs, $(uname -r)"
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
b0=$(busy); sleep 1; b1=$(busy)
echo "== background load before the runs: $(echo "scale=2; ($b1 - $b0) / $(getconf CLK_TCK)" | bc) CPUs busy"

# run NAME K CMD...: one timed run; appends "NAME K wall cpu" to $OUT/runs.
run() {
  local name=$1 k=$2 f
  shift 2
  f=$DATA/gen_${PACKETS}p_${k}f.pcap
  cat "$f" >/dev/null
  "$TIME" -f '%e %U %S' -o "$OUT/t" "$@" >/dev/null 2>"$OUT/err.$name.$k" ||
    die "$name on $k flows failed: $(tail -3 "$OUT/err.$name.$k")"
  read -r wall user sys <"$OUT/t"
  echo "$name $k $wall $(echo "$user + $sys" | bc)" >>"$OUT/runs"
}

for k in $FLOWS; do
  f=$DATA/gen_${PACKETS}p_${k}f.pcap
  if [[ ! -s $f || $GEN -nt $f ]]; then
    echo "== generating $f"
    "$GEN" --packets "$PACKETS" --flows "$k" "$f.tmp" >/dev/null
    mv "$f.tmp" "$f"
  fi
  order=(cat w1 w2 w4 ipfix $PEERS)
  for ((round = 1; round <= REPEAT; round++)); do
    list=("${order[@]}")
    if ((round % 2 == 0)); then
      list=()
      for ((i = ${#order[@]} - 1; i >= 0; i--)); do list+=("${order[i]}"); done
    fi
    for t in "${list[@]}"; do
      case $t in
        cat) run cat "$k" cat "$f" ;;
        w1 | w2 | w4) run "$t" "$k" "$FLOWMARK" observe -r "$f" --workers "${t#w}" --stats ;;
        ipfix) run ipfix "$k" "$FLOWMARK" observe -r "$f" --workers 1 --stats \
                 --ipfix "$OUT/records.ipfix" ;;
        softflowd) run softflowd "$k" softflowd -r "$f" -c none -a -6 -m 2000000 ;;
        nfpcapd) rm -rf "$OUT/nf"; mkdir -p "$OUT/nf"; run nfpcapd "$k" nfpcapd -r "$f" -l "$OUT/nf" ;;
      esac
    done
  done
  grep -h "records" "$OUT/err.w1.$k" | head -1 | sed 's/^/   w1 --stats: /' || true
done

python3 - "$OUT/runs" "$PACKETS" "$FLOWS" "$PEERS" <<'EOF'
import statistics, sys
runs, packets, flows, peers = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
t = {}
for line in open(runs):
    name, k, wall, cpu = line.split()
    t.setdefault((name, k), []).append((float(wall), float(cpu)))
def med(name, k, i=0):
    return statistics.median(x[i] for x in t[(name, k)])
def spread(name, k, i=0):
    v = [x[i] for x in t[(name, k)]]
    return f"{min(v):.2f}..{max(v):.2f}"
for k in flows:
    print(f"== {k} flows, {packets} frames: median (min..max) of {len(t[('w1', k)])} rounds")
    for name in ["cat", "w1", "w2", "w4", "ipfix"] + peers:
        if (name, k) not in t:
            continue
        w, c = med(name, k), med(name, k, 1)
        print(f"   {name:10s} wall {w:6.2f} s ({spread(name, k)})  cpu {c:6.2f} s "
              f"({spread(name, k, 1)})  {packets / w / 1e6:6.2f} Mpps")
    w1 = med("w1", k)
    for n in ("w2", "w4"):
        per = [a[0] / b[0] for a, b in zip(t[("w1", k)], t[(n, k)])]
        print(f"   speed-up {n} over w1: {w1 / med(n, k):.2f}x (per round "
              f"{min(per):.2f}..{max(per):.2f}; target w2: 1.7x at 1M flows, 1.5x at 10k)")
    for p in peers:
        if (p, k) in t:
            print(f"   {p} / flowmark wall: w1 {med(p, k) / w1:.2f}x, w2 {med(p, k) / med('w2', k):.2f}x,"
                  f" w4 {med(p, k) / med('w4', k):.2f}x")
    print(f"   w1 of cat's rate: {med('cat', k) / w1 * 100:.0f} %")
    ic, jc = med("ipfix", k, 1), med("w1", k, 1)
    print(f"   --ipfix FILE vs JSON (one worker): cpu {ic:.2f} s vs {jc:.2f} s "
          f"({(ic / jc - 1) * 100:+.1f} %; target <= +10 %), wall {med('ipfix', k):.2f} s vs "
          f"{w1:.2f} s")
EOF
