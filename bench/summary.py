#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Summary of airl's in-memory benchmarks: the ratios of the benchmark issue's target table.

Runs build/bench/airl_bench and airl_bench_memory (Google Benchmark JSON, medians of N repetitions), or reads
JSON files they wrote, and prints each ratio next to its target with MET / NOT MET. Every ratio divides two
figures from the same binary and run. Times are CPU time per decision; thread scaling is aggregate
items_per_second in real time. Memory figures are exact counts of requested bytes (one run suffices).

  bench/summary.py --build build/bench                 # run both binaries, 5 repetitions
  bench/summary.py --build build/bench --repetitions 3 --min-time 0.1 --save out/
  bench/summary.py --json out/airl_bench.json out/airl_bench_memory.json
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def run_binary(path, repetitions, min_time, extra):
    """Runs one Google Benchmark binary; console output goes to stderr, JSON is returned."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        out_path = out.name
    try:
        command = [path, f"--benchmark_out={out_path}", "--benchmark_out_format=json"]
        if repetitions > 1:
            command += [f"--benchmark_repetitions={repetitions}", "--benchmark_report_aggregates_only=true",
                        "--benchmark_enable_random_interleaving=true"]  # noise spreads over every subject alike
        if min_time is not None:
            command.append(f"--benchmark_min_time={min_time}")
        command += extra
        print("$ " + " ".join(command), file=sys.stderr, flush=True)
        subprocess.run(command, stdout=sys.stderr, check=True)
        with open(out_path, encoding="utf-8") as f:
            return json.load(f)
    finally:
        os.unlink(out_path)


def index(documents):
    """run_name -> record: the median aggregate when there is one, else the (single) iteration run."""
    medians, singles = {}, {}
    for doc in documents:
        for b in doc.get("benchmarks", []):
            name = re.sub(r"/iterations:\d+$", "", b.get("run_name", b["name"]))
            if b.get("run_type") == "aggregate":
                if b.get("aggregate_name") == "median":
                    medians[name] = b
            else:
                singles.setdefault(name, b)
    return {**singles, **medians}


class Table:
    def __init__(self, records):
        self.records = records
        self.rows = []

    def value(self, name, field):
        record = self.records.get(name)
        if record is None or field not in record:
            return None
        return float(record[field])

    def add(self, what, value, target, op):
        if value is None:
            self.rows.append((what, "missing", target_text(target, op), "NOT RUN"))
            return
        met = value <= target if op == "<=" else (value >= target if op == ">=" else value == target)
        self.rows.append((what, f"{value:.3g}" if op != "==" else f"{value:g}", target_text(target, op),
                          "MET" if met else "NOT MET"))

    def ratio(self, what, numerator, denominator, field, target, op):
        a, b = self.value(numerator, field), self.value(denominator, field)
        self.add(what, a / b if a is not None and b else None, target, op)

    def info(self, what, value, unit=""):
        self.rows.append((what, "missing" if value is None else f"{value:.4g}{unit}", "-", "info"))

    def print(self):
        headers = ("what", "measured", "target", "status")
        widths = [max(len(str(row[i])) for row in self.rows + [headers]) for i in range(4)]
        line = lambda row: "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |"
        print(line(headers))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in self.rows:
            print(line(row))


def target_text(target, op):
    return f"{op} {target:g}" if op != "==" else f"{target:g}"


def build_table(records):
    t = Table(records)
    # Issue 18's targets: against the straightforward port, one thread and two, and what a request id costs.
    for ids in ("short", "uuid"):
        t.ratio(f"hot key, 1 thread, {ids} ids: RateLimiter / naive port",
                f"keys/hot/{ids}/airl", f"keys/hot/{ids}/naive", "cpu_time", 1.0, "<=")
    for ids in ("short", "uuid"):
        t.ratio(f"10k keys round-robin, {ids} ids: naive port / RateLimiter",
                f"keys/rr10k/{ids}/naive", f"keys/rr10k/{ids}/airl", "cpu_time", 1.5, ">=")
    t.ratio("2 threads, distinct keys: RateLimiter aggregate / naive port aggregate",
            "threads/distinct/airl/real_time/threads:2", "threads/distinct/naive/real_time/threads:2",
            "items_per_second", 2, ">=")
    t.ratio("request ids, 1k keys, all admitted: decision with a 36-char id / without",
            "keys/ids1k/short/airl_id", "keys/ids1k/short/airl_no_id", "cpu_time", 1.5, "<=")
    t.add("request ids, steady state: RateLimiter allocations per decision with a unique id",
          t.value("decision_allocs/request_ids/airl", "allocs_per_decision"), 0, "==")
    for limiter, label in (("airl", "RateLimiter"), ("airl_multi3", "MultiTier (3 tiers)")):
        for ids in ("short", "uuid"):
            t.ratio(f"hot key, 1 thread, {ids} ids: {label} / floor",
                    f"keys/hot/{ids}/{limiter}", f"keys/hot/{ids}/floor", "cpu_time", 1.5, "<=")
    for limiter, label in (("airl", "RateLimiter"), ("airl_multi3", "MultiTier (3 tiers)")):
        for keys, keys_label in (("rr10k", "10k"), ("rr1m", "1M")):
            for ids in ("short", "uuid"):
                t.ratio(f"{keys_label} keys round-robin, {ids} ids: naive / {label}",
                        f"keys/{keys}/{ids}/naive", f"keys/{keys}/{ids}/{limiter}", "cpu_time", 2, ">=")
    for scenario, label, target in (("distinct", "2 threads, distinct keys", 1.7), ("hot", "2 threads, one hot key", 0.8)):
        for limiter, name in (("airl", "RateLimiter"), ("airl_multi3", "MultiTier (3 tiers)"), ("floor", "floor"),
                              ("naive", "naive")):
            t.ratio(f"{label}: {name} aggregate / 1 thread",
                    f"threads/{scenario}/{limiter}/real_time/threads:2",
                    f"threads/{scenario}/{limiter}/real_time/threads:1", "items_per_second", target, ">=")
    for limiter, label in (("airl", "RateLimiter"), ("airl_multi3", "MultiTier (3 tiers)")):
        for keys, keys_label in (("hot", "1 hot key"), ("rr10k", "10k keys")):
            t.ratio(f"weighted, {keys_label}: {label} cost 4000 / cost 1",
                    f"weighted/{keys}/cost4000/{limiter}", f"weighted/{keys}/cost1/{limiter}", "cpu_time", 1.1, "<=")
    for limiter, label in (("airl", "RateLimiter"), ("airl_multi3", "MultiTier (3 tiers)"), ("naive", "naive")):
        t.add(f"36-char UUID ids, existing keys: {label} allocations per decision",
              t.value(f"decision_allocs/uuid/{limiter}", "allocs_per_decision"), 0, "==")
    for ids in ("short", "uuid"):
        t.add(f"bytes per key, 100k keys x 10 entries, {ids} ids: RateLimiter",
              t.value(f"memory/{ids}/airl", "bytes_per_key"), 160, "<=")
    for ids in ("short", "uuid"):
        t.info(f"bytes per key, 100k keys x 10 entries spread over the 60 s window, {ids} ids: RateLimiter",
               t.value(f"memory_spread/{ids}/airl", "bytes_per_key"))
    for ids in ("short", "uuid"):
        t.info(f"bytes per key, 100k keys x 10 entries, {ids} ids: MultiTier (2 buckets per key + 1 global)",
               t.value(f"memory/{ids}/airl_multi3", "bytes_per_key"))
    for ids in ("short", "uuid"):
        t.info(f"bytes per key, 100k keys x 10 entries, {ids} ids: naive", t.value(f"memory/{ids}/naive", "bytes_per_key"))
    ok = lambda x: x is not None
    for limiter, label in (("airl", "RateLimiter"), ("airl_multi3", "MultiTier (3 tiers)")):
        mine = [t.value(f"threads/distinct/{limiter}/real_time/threads:{n}", "items_per_second") for n in (1, 2)]
        floor = [t.value(f"threads/distinct/floor/real_time/threads:{n}", "items_per_second") for n in (1, 2)]
        t.info(f"2 threads, distinct keys: {label} scaling / floor scaling (what this machine allows)",
               (mine[1] / mine[0]) / (floor[1] / floor[0]) if all(map(ok, mine + floor)) else None)
    for ids in ("short", "uuid"):
        exact, floor, mine = (t.value(f"keys/hot/{ids}/{s}", "cpu_time") for s in ("minimal_exact", "floor", "airl"))
        t.info(f"hot key, {ids} ids: minimal exact limiter / floor (what exactness alone costs)",
               exact / floor if exact and floor else None)
        t.info(f"hot key, {ids} ids: RateLimiter / minimal exact limiter (what airl's features cost)",
               mine / exact if mine and exact else None)
    t.info("hot key, 1 thread, short ids: floor (ns per call)", t.value("keys/hot/short/floor", "cpu_time"), " ns")
    t.info("hot key, 1 thread, short ids: RateLimiter (ns per decision)", t.value("keys/hot/short/airl", "cpu_time"), " ns")
    t.info("hot key, 1 thread, short ids: naive (ns per decision)", t.value("keys/hot/short/naive", "cpu_time"), " ns")
    for keys, keys_label in (("hot", "hot key"), ("rr10k", "10k keys")):
        coarse, steady = t.value(f"keys/{keys}/short/airl_coarse", "cpu_time"), t.value(f"keys/{keys}/short/airl", "cpu_time")
        t.info(f"coarse clock, {keys_label}: RateLimiter on CoarseSteadyClock / on SteadyClock",
               coarse / steady if coarse and steady else None)
        mine, floor = coarse, t.value(f"keys/{keys}/short/floor_coarse", "cpu_time")
        t.info(f"coarse clock, {keys_label}: RateLimiter / floor, both on CoarseSteadyClock",
               mine / floor if mine and floor else None)
    return t


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--build", help="directory holding airl_bench and airl_bench_memory (e.g. build/bench/bench)")
    source.add_argument("--json", nargs="+", help="Google Benchmark JSON files to read instead of running")
    parser.add_argument("--repetitions", type=int, default=5, help="repetitions of each timing case (default 5)")
    parser.add_argument("--min-time", type=float, default=None, help="--benchmark_min_time in seconds")
    parser.add_argument("--filter", default=None, help="--benchmark_filter for the timing binary")
    parser.add_argument("--save", default=None, help="directory to write the JSON of this run into")
    args = parser.parse_args()

    if args.json:
        documents = []
        for path in args.json:
            with open(path, encoding="utf-8") as f:
                documents.append(json.load(f))
    else:
        extra = [f"--benchmark_filter={args.filter}"] if args.filter else []
        timing = run_binary(os.path.join(args.build, "airl_bench"), args.repetitions, args.min_time, extra)
        # Exact counts: one repetition is enough.
        memory = run_binary(os.path.join(args.build, "airl_bench_memory"), 1, None, [])
        documents = [timing, memory]
        if args.save:
            os.makedirs(args.save, exist_ok=True)
            for doc, name in ((timing, "airl_bench.json"), (memory, "airl_bench_memory.json")):
                with open(os.path.join(args.save, name), "w", encoding="utf-8") as f:
                    json.dump(doc, f, indent=1)

    context = documents[0].get("context", {})
    print(f"\nairl in-memory benchmark summary ({context.get('num_cpus', '?')} CPUs, "
          f"{context.get('library_build_type', '?')} Google Benchmark library, medians of "
          f"{args.repetitions if not args.json else 'the stored'} repetitions)\n")
    build_table(index(documents)).print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
