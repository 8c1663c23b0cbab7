#!/usr/bin/env bash
# Runs the libFuzzer targets of a build (cmake -DAIRL_BUILD_FUZZ=ON, target airl_fuzzers) one after another,
# each for SECONDS, on a scratch copy of its committed corpus (tests/fuzz/corpus/<name>), which it never
# writes unless FUZZ_MERGE=1: then the inputs that reached new coverage are merged into it (libFuzzer -merge=1
# keeps every file already there). Fails when any target found something; the reproducer is then in
# <build>/fuzz-work/<name>/artifacts/ (add it to the corpus as regress-<what> once fixed).
#
#   usage: tests/fuzz/run_fuzzers.sh BUILD_DIR SECONDS [TARGET...]     (default: every target built)
set -euo pipefail

if [ "$#" -lt 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
  exit 2
fi
build=$1
seconds=$2
shift 2
source_dir=$(cd "$(dirname "$0")" && pwd)

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  for corpus in "$source_dir"/corpus/*/; do
    name=$(basename "$corpus")
    [ -x "$build/tests/fuzz/${name}_fuzzer" ] && targets+=("$name")
  done
fi
if [ "${#targets[@]}" -eq 0 ]; then
  echo "run_fuzzers: no fuzzer built in $build/tests/fuzz" >&2
  exit 1
fi

failed=()
for name in "${targets[@]}"; do
  fuzzer=$build/tests/fuzz/${name}_fuzzer
  if [ ! -x "$fuzzer" ]; then
    echo "=== $name: not built ($fuzzer)" >&2
    failed+=("$name")
    continue
  fi
  work=$build/fuzz-work/$name
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp -R "$source_dir/corpus/$name/." "$work/corpus/"
  echo "=== $name: ${seconds}s on a copy of $(ls "$work/corpus" | wc -l) inputs"
  # -timeout: one input taking 10 s is a finding (a hang); -rss_limit_mb: so is a runaway allocation.
  if "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/" "$work/corpus" > "$work/log" 2>&1; then
    executed=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
    echo "    ok: ${executed:-?} inputs run, corpus now $(ls "$work/corpus" | wc -l) files (log: $work/log)"
  else
    failed+=("$name")
    tail -n 40 "$work/log"
    echo "    FINDING in $name: reproducer(s): $(ls "$work/artifacts")"
  fi
  if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    "$fuzzer" -merge=1 "$source_dir/corpus/$name" "$work/corpus" > "$work/merge.log" 2>&1
    echo "    merged: corpus/$name has $(ls "$source_dir/corpus/$name" | wc -l) files"
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "run_fuzzers: findings (or missing fuzzers) in: ${failed[*]}" >&2
  exit 1
fi
echo "run_fuzzers: ${#targets[@]} targets, ${seconds}s each, no finding"
