#!/usr/bin/env bash
# make lint: clang-format (check only) and clang-tidy over our sources, using the
# compile_commands.json of BUILD_DIR. clang-19 tools: clang-14 cannot parse std::expected.
set -euo pipefail
build=${1:?usage: lint.sh BUILD_DIR}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
mapfile -t files < <(git ls-files '*.cpp' '*.hpp' '*.h' | grep -v '^tests/fuzz/corpus/')
echo "lint: clang-format on ${#files[@]} files"
clang-format-19 --dry-run --Werror "${files[@]}"
mapfile -t sources < <(git ls-files 'src/*.cpp' 'apps/*.cpp')
echo "lint: clang-tidy on ${#sources[@]} files"
printf '%s\n' "${sources[@]}" |
  xargs -P "$(nproc)" -n 1 clang-tidy-19 -p "$build" --quiet 2>/dev/null
echo "lint: clean"
