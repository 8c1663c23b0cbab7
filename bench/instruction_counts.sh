#!/usr/bin/env bash
# Instructions per operation (callgrind) for the paths of bench/instruction_counts.cpp: each path runs with
# n and 2n operations and the difference is divided by n, so start-up and warm-up cancel out; the median of
# `runs` such measurements is printed (each run draws other hash seeds).
#   bench/instruction_counts.sh <instruction_counts binary> [n] [runs]
set -euo pipefail
binary=$1
n=${2:-20000}
runs=${3:-5}
count() {  # total instructions of one run
  local out
  out=$(mktemp)
  valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" "$1" "$2" >/dev/null 2>&1
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
  rm -f "$out"
}
printf '%-10s %14s   %s\n' path instructions/op "(each run)"
for path in ${PATHS:-hot_key hot_denied keys_10k no_id with_id rpm_tpm settle cap}; do
  each=()
  for ((r = 0; r < runs; r++)); do
    one=$(count "$path" "$n")
    two=$(count "$path" $((2 * n)))
    each+=($(( (two - one) / n )))
  done
  median=$(printf '%s\n' "${each[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  printf '%-10s %14d   %s\n' "$path" "$median" "${each[*]}"
done
