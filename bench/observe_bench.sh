#!/usr/bin/env bash
# bench/observe_bench.sh BUILD_DIR — whole-process throughput of `flowmark observe -r` and of
# the peer flow meters Debian packages, on the same synthetic captures.
#
#   1. bench/observe_gen writes two captures of N frames (5,000,000): one with 10,000
#      concurrent flows, one with 1,000,000 (mixed sizes, TCP/UDP, IPv4/IPv6: see the top of
#      observe_gen.cpp). They are cached in BUILD_DIR/observe_bench/ and made again only
#      when missing or older than the generator.
#   2. Before each run the capture is read once (cat > /dev/null) so that it is in the page
#      cache; every tool then runs once on it, whole process, timed by GNU time (wall, user,
#      system, peak RSS). Packets/s = N / wall seconds.
#        flowmark   flowmark observe -r F --stats > /dev/null   (records formatted, discarded;
#                   a regular file is read by flowmark's own memory-mapped pcap/pcapng
#                   reader, in batches, not through libpcap)
#        flowmark --max-flows K: the same with the flow table bounded at the capture's K flows
#                   (the default bound is 1,048,576; either way the table starts at 4,096
#                   flows and doubles as flows arrive)
#        pcap_read_loop F: a bare libpcap read loop (bench/pcap_read_loop.cpp), for reference:
#                   what reading the file through libpcap alone costs
#        softflowd  softflowd -r F -c none -a -6 -m 2000000    (statistics only: no collector;
#                   -c none: no control socket to wait on; -a: pcap time; -6: IPv6 too;
#                   -m: track every flow, default 8192)
#        nfpcapd    nfpcapd -r F -l DIR                         (writes nfcapd files)
#        argus      argus -X -r F -w FILE, then racluster -r FILE -w FILE2 (argus writes
#                   status records; racluster merges them into flows: both are timed, and
#                   the pair is what is compared)
#        ndpiReader ndpiReader -i F -q                          (flows + DPI)
#        tshark     tshark -n -r F -q -z conv,tcp -z conv,udp   (conversation tables)
#   3. A table: wall, CPU, peak RSS, packets/s and flowmark's ratio to each peer; flowmark's
#      bytes per active flow = (peak RSS with 1M flows - peak RSS with 10k) / 990,000, for the
#      default runs and for the runs with the bound set to the flows (the table grows with
#      the traffic, so both say what a flow costs; the mapped capture is given back every
#      16 MiB behind the reader, so the file itself adds the same few MiB to both RSS);
#      the targets (≥ 15 Mpps with 10k flows, ≥ 5 Mpps with 1M, ≥ 10× the fastest peer,
#      ≤ 200 B per active flow) are reported, not asserted.
#
# A missing peer is skipped (scripts/install-deps.sh installs them). Needs GNU time.
# Environment: OBSERVE_BENCH_PACKETS      frames per capture (5000000)
#              OBSERVE_BENCH_FLOWS        the flow counts, space-separated ("10000 1000000";
#                                         the bytes-per-flow figure needs 10000 and 1000000)
#              OBSERVE_BENCH_PEERS        the peers to run ("softflowd nfpcapd argus ndpiReader
#                                         tshark"; "" for flowmark only)
#              OBSERVE_BENCH_PEER_TIMEOUT seconds before a peer run is stopped (900)
#              OBSERVE_BENCH_KEEP=1       keep the peers' outputs and the raw timings
set -euo pipefail

die() { echo "bench/observe_bench.sh: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: bench/observe_bench.sh BUILD_DIR"
BUILD=$(cd "$1" && pwd) || die "no build directory $1"
FLOWMARK=$BUILD/flowmark
GEN=$BUILD/bench/observe_gen
[[ -x $FLOWMARK ]] || die "$FLOWMARK is missing: build first (make build)"
[[ -x $GEN ]] || die "$GEN is missing: configure with FLOWMARK_BENCH=ON and build"
FLOOR=$BUILD/bench/pcap_read_loop
TIME=/usr/bin/time
[[ -x $TIME ]] || die "GNU time ($TIME) is missing (make deps)"
command -v python3 >/dev/null || die "python3 is missing (make deps)"

PACKETS=${OBSERVE_BENCH_PACKETS:-5000000}
FLOW_COUNTS=${OBSERVE_BENCH_FLOWS:-10000 1000000}
PEERS=${OBSERVE_BENCH_PEERS-softflowd nfpcapd argus ndpiReader tshark}
PEER_TIMEOUT=${OBSERVE_BENCH_PEER_TIMEOUT:-900}
DATA=$BUILD/observe_bench
mkdir -p "$DATA"
OUT=$(mktemp -d /tmp/fmobench.XXXXXX)
cleanup() {
  if [[ ${OBSERVE_BENCH_KEEP:-0} == 1 ]]; then
    echo "raw outputs kept in $OUT"
  else
    rm -rf "$OUT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 1. captures ---------------------------------------------------------------------
capture_for() { echo "$DATA/gen_${PACKETS}p_${1}f.pcap"; }
for k in $FLOW_COUNTS; do
  f=$(capture_for "$k")
  if [[ ! -s $f || $GEN -nt $f ]]; then
    echo "== generating $f"
    "$GEN" --packets "$PACKETS" --flows "$k" "$f.tmp"
    mv "$f.tmp" "$f"
  fi
done

echo "== machine: $(nproc) CPUs, $(uname -r), $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo)"
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
b0=$(busy_ticks); sleep 1; b1=$(busy_ticks)
BACKGROUND=$(python3 -c "print(f'{($b1 - $b0) / $(getconf CLK_TCK):.2f}')")
echo "== background load before the runs: $BACKGROUND CPUs busy"

# ---- 2. runs -------------------------------------------------------------------------
# timed TOOL K CMD...: one run of CMD on the capture with K flows (page cache warmed first);
# appends "TOOL K rc wall user sys maxrss_kb" to $OUT/runs.txt.
timed() {
  local tool=$1 k=$2
  shift 2
  local f
  f=$(capture_for "$k")
  cat "$f" >/dev/null
  local rc=0
  timeout "$PEER_TIMEOUT" "$TIME" -f '%e %U %S %M' -o "$OUT/$tool.$k.time" "$@" \
    >"$OUT/$tool.$k.out" 2>"$OUT/$tool.$k.err" || rc=$?
  local t
  t=$(tail -n 1 "$OUT/$tool.$k.time" 2>/dev/null || echo "0 0 0 0")
  [[ $t =~ ^[0-9.]+\ [0-9.]+\ [0-9.]+\ [0-9]+$ ]] || t="0 0 0 0"
  echo "$tool $k $rc $t" >>"$OUT/runs.txt"
  printf '   %-12s %8s flows: rc %s, wall/user/sys/maxRSS(kB) %s\n' "$tool" "$k" "$rc" "$t"
}
# A pipeline's second stage: its times are added to the first's under the same name.
timed_more() {
  local tool=$1 k=$2
  shift 2
  local rc=0
  timeout "$PEER_TIMEOUT" "$TIME" -f '%e %U %S %M' -o "$OUT/$tool.$k.time2" "$@" \
    >>"$OUT/$tool.$k.out" 2>>"$OUT/$tool.$k.err" || rc=$?
  local t
  t=$(tail -n 1 "$OUT/$tool.$k.time2" 2>/dev/null || echo "0 0 0 0")
  [[ $t =~ ^[0-9.]+\ [0-9.]+\ [0-9.]+\ [0-9]+$ ]] || t="0 0 0 0"
  echo "$tool+ $k $rc $t" >>"$OUT/runs.txt"
  printf '   %-12s %8s flows: rc %s, wall/user/sys/maxRSS(kB) %s\n' "($tool 2nd)" "$k" "$rc" "$t"
}

: >"$OUT/runs.txt"
for k in $FLOW_COUNTS; do
  f=$(capture_for "$k")
  echo
  echo "== $f ($(du -h "$f" | cut -f1)): $PACKETS frames, $k flows"
  timed flowmark "$k" "$FLOWMARK" observe -r "$f" --stats
  # flowmark's own count, to be sure it read everything.
  grep -E "^flowmark observe: [0-9]+ packets" "$OUT/flowmark.$k.err" | sed 's/^/   /' || true
  timed flowmark_sized "$k" "$FLOWMARK" observe -r "$f" --max-flows "$k"
  if [[ -x $FLOOR ]]; then timed pcap_read_loop "$k" "$FLOOR" "$f"; fi
  for peer in $PEERS; do
    case $peer in
      softflowd)
        command -v softflowd >/dev/null || { echo "   softflowd: not installed"; continue; }
        timed softflowd "$k" softflowd -r "$f" -c none -a -6 -m 2000000 ;;
      nfpcapd)
        command -v nfpcapd >/dev/null || { echo "   nfpcapd: not installed"; continue; }
        rm -rf "$OUT/nf.$k"; mkdir -p "$OUT/nf.$k"
        timed nfpcapd "$k" nfpcapd -r "$f" -l "$OUT/nf.$k"
        rm -rf "$OUT/nf.$k" ;;
      argus)
        { command -v argus && command -v racluster; } >/dev/null ||
          { echo "   argus/racluster: not installed"; continue; }
        rm -f "$OUT/argus.$k.argus" "$OUT/argus.$k.merged"
        timed argus "$k" argus -X -r "$f" -w "$OUT/argus.$k.argus"
        timed_more argus "$k" racluster -r "$OUT/argus.$k.argus" -w "$OUT/argus.$k.merged"
        rm -f "$OUT/argus.$k.argus" "$OUT/argus.$k.merged" ;;
      ndpiReader)
        command -v ndpiReader >/dev/null || { echo "   ndpiReader: not installed"; continue; }
        timed ndpiReader "$k" ndpiReader -i "$f" -q ;;
      tshark)
        command -v tshark >/dev/null || { echo "   tshark: not installed"; continue; }
        timed tshark "$k" tshark -n -r "$f" -q -z conv,tcp -z conv,udp ;;
      *) echo "   $peer: unknown peer (skipped)" ;;
    esac
  done
done

# ---- 3. summary ----------------------------------------------------------------------
python3 - "$OUT/runs.txt" "$PACKETS" "$BACKGROUND" <<'EOF'
import sys
runs_path, packets, background = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
runs = {}
for line in open(runs_path):
    tool, k, rc, wall, user, sys_, rss = line.split()
    k = int(k)
    if tool.endswith("+"):  # the second stage of a pipeline: added to the first
        prev = runs[(tool[:-1], k)]
        prev.update(wall=prev["wall"] + float(wall), user=prev["user"] + float(user),
                    sys=prev["sys"] + float(sys_), rss=max(prev["rss"], int(rss)),
                    rc=prev["rc"] or int(rc))
        continue
    runs[(tool, k)] = dict(rc=int(rc), wall=float(wall), user=float(user), sys=float(sys_),
                           rss=int(rss))

def pps(r):
    return packets / r["wall"] if r["rc"] == 0 and r["wall"] > 0 else None

def table(title, head, rows):
    print(f"\n{title}")
    w = [max(len(str(c)) for c in col) for col in zip(*([head] + rows))]
    line = "+-" + "-+-".join("-" * x for x in w) + "-+"
    print(line)
    print("| " + " | ".join(str(h).ljust(x) for h, x in zip(head, w)) + " |")
    print(line)
    for r in rows:
        print("| " + " | ".join(str(c).ljust(x) if i == 0 else str(c).rjust(x)
                                for i, (c, x) in enumerate(zip(r, w))) + " |")
    print(line)

names = {"argus": "argus + racluster", "flowmark_sized": "flowmark --max-flows FLOWS",
         "pcap_read_loop": "libpcap read loop (reference)"}
ours = ("flowmark", "flowmark_sized", "pcap_read_loop")
ks = sorted({k for _, k in runs})
rows = []
fastest = {}
for k in ks:
    fm = runs.get(("flowmark", k))
    for (tool, kk), r in runs.items():
        if kk != k:
            continue
        rate = pps(r)
        ratio = "-"
        if tool != "flowmark" and rate and fm and pps(fm):
            ratio = f"{pps(fm) / rate:.2f}x" if tool in ours else f"{pps(fm) / rate:.1f}x"
            if tool not in ours and (fastest.get(k) is None or rate > fastest[k][1]):
                fastest[k] = (tool, rate)
        status = "" if r["rc"] == 0 else (" (timed out)" if r["rc"] == 124 else f" (exit {r['rc']})")
        rows.append([names.get(tool, tool) + status, f"{k:,}", f"{r['wall']:.2f}",
                     f"{r['user'] + r['sys']:.2f}", f"{r['rss'] / 1024:,.0f}",
                     f"{rate / 1e6:.2f}" if rate else "-", ratio])
table(f"Whole processes on {packets:,}-frame captures (page cache warm, one run each)",
      ["tool", "flows", "wall s", "CPU s", "peak RSS MB", "Mpps", "flowmark ×"], rows)

targets = []
def verdict(ok):
    return "met" if ok else "NOT met"
for k, target in [(10_000, 15e6), (1_000_000, 5e6)]:
    r = runs.get(("flowmark", k))
    if r and pps(r):
        targets.append([f"flowmark observe, {k:,} concurrent flows", f"≥ {target / 1e6:.0f} Mpps",
                        f"{pps(r) / 1e6:.2f} Mpps", verdict(pps(r) >= target)])
for k in ks:
    r = runs.get(("flowmark", k))
    if k in fastest and r and pps(r):
        tool, rate = fastest[k]
        ratio = pps(r) / rate
        targets.append([f"vs the fastest peer, {k:,} flows ({names.get(tool, tool)}, "
                        f"{rate / 1e6:.2f} Mpps)", "≥ 10×", f"{ratio:.1f}×", verdict(ratio >= 10)])
for tool, label in [("flowmark", "default table"), ("flowmark_sized", "table sized to the flows")]:
    small, big = runs.get((tool, 10_000)), runs.get((tool, 1_000_000))
    if small and big and small["rc"] == 0 and big["rc"] == 0:
        per_flow = (big["rss"] - small["rss"]) * 1024 / 990_000
        targets.append([f"memory per active flow: (RSS 1M - RSS 10k) / 990,000, {label}",
                        "≤ 200 B", f"{per_flow:.0f} B", verdict(per_flow <= 200)])
if targets:
    table("Targets (reported, not asserted)", ["what", "target", "measured", "verdict"], targets)
print(f"\nBackground load before the runs: {background:.2f} CPUs busy"
      + ("  <-- other processes were running: figures are low" if background > 0.1 else ""))
EOF
