#!/bin/sh
# tools/fuzz.sh — run the libFuzzer harnesses of tests/fuzz/ for a while.
#
#   tools/fuzz.sh [SECONDS] [NAME...]   each harness (or the NAMEs, e.g.
#                                       mapper_frame mapper_pb) for SECONDS
#                                       (default 60), one at a time
#
# Builds them with clang, -fsanitize=fuzzer,address,undefined, in
# build-fuzz/ (KE_FUZZ=ON KE_SANITIZE=ON; installs clang if it is missing).
# Each run starts from tests/fuzz/corpus/<name>/ and writes new inputs to
# build-fuzz/fuzz-corpus/<name>/ (the repo's corpus is not touched); a crash
# is saved as build-fuzz/fuzz-artifacts/<name>/crash-* and fails the script:
# copy it into tests/fuzz/corpus/<name>/ once fixed, so every test run
# replays it. Prints executions and executions per second per harness.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
[ $# -gt 0 ] && shift
case $secs in *[!0-9]*|'') echo "usage: tools/fuzz.sh [SECONDS] [NAME...]" >&2; exit 2 ;; esac
if ! command -v clang >/dev/null 2>&1; then
  echo "==> Installing clang"
  sudo apt-get install -y clang >/dev/null
fi
names=${*:-$(for f in tests/fuzz/fuzz_*.c; do f=${f#tests/fuzz/fuzz_}; echo "${f%.c}"; done)}
build=build-fuzz
echo "==> Configuring $build/ (clang, KE_FUZZ=ON KE_SANITIZE=ON)"
CC=clang CXX=clang++ cmake -S . -B "$build" -DKE_FUZZ=ON -DKE_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=$(for n in $names; do printf 'fuzz_%s ' "$n"; done)
echo "==> Building $targets"
# shellcheck disable=SC2086 # a list of target names
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target $targets >/dev/null
status=0
for n in $names; do
  corpus=$build/fuzz-corpus/$n
  art=$build/fuzz-artifacts/$n
  mkdir -p "$corpus" "$art"
  log=$build/fuzz-$n.log
  echo "==> fuzz_$n for ${secs}s"
  if "$build/tests/fuzz/fuzz_$n" -max_total_time="$secs" -print_final_stats=1 \
       -artifact_prefix="$art/" "$corpus" "tests/fuzz/corpus/$n" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1)
    echo "    ok: $execs executions, $rate/s, $cov, corpus $(ls "$corpus" | wc -l) inputs"
  else
    echo "    FAILED: see $log and $art/" >&2
    tail -30 "$log" >&2
    status=1
  fi
done
exit $status
