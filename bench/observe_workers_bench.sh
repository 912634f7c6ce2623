#!/bin/bash
# flowmark observe --workers 1, 2, 4 on the same capture files: wall and CPU seconds (GNU
# time), records written to /dev/null, and the wall speed-up over one worker in the same run.
#   bench/observe_workers_bench.sh BUILD_DIR CAPTURE...   (e.g. build/release/observe_bench/*.pcap)
# Not a test: it measures and prints. Other processes on the machine change the figures.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR CAPTURE...}
shift
bin="$build/flowmark"
for cap in "$@"; do
  echo "== $(basename "$cap")"
  base=""
  for w in 1 2 4; do
    t=$( { /usr/bin/time -f "%e %U %S" "$bin" observe -r "$cap" --workers "$w" >/dev/null; } 2>&1 | tail -1)
    read -r wall user sys <<<"$t"
    [ -z "$base" ] && base=$wall
    echo "workers $w: wall ${wall}s cpu $(echo "$user + $sys" | bc)s speed-up $(echo "scale=2; $base / $wall" | bc)x"
  done
done
