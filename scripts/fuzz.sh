#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each over its corpus in tests/fuzz/corpus/<name>.
# New inputs go to a scratch directory; crashes are saved under BUILD/fuzz-artifacts and
# should be copied into the corpus once fixed.
set -euo pipefail
build=${1:?usage: fuzz.sh BUILD_DIR SECONDS}
seconds=${2:-20}
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build/fuzz-artifacts"
status=0
for bin in "$build"/tests/fuzz/fuzz_*; do
  [[ -x $bin ]] || continue
  name=${bin##*/fuzz_}
  scratch=$(mktemp -d)
  echo "fuzz: $name for ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$name-" "$scratch" "$top/tests/fuzz/corpus/$name" \
      >"$build/fuzz-artifacts/$name.log" 2>&1; then
    echo "fuzz: $name FAILED — see $build/fuzz-artifacts/$name.log"
    tail -n 40 "$build/fuzz-artifacts/$name.log"
    status=1
  else
    grep -E 'stat::number_of_executed_units' "$build/fuzz-artifacts/$name.log" || true
  fi
  rm -rf "$scratch"
done
exit $status
