#!/usr/bin/env python3
"""What a header-only library costs its users: the compile time and peak memory of translation units that
use airl (bench/compile_time/*.cpp), each compiled several times with the same flags, medians printed.

    bench/compile_time.py [--cxx g++] [--flags "-std=c++20 -O2"] [--runs 5] [--baseline OTHER/include]

The include-only TU is the floor: what any user pays for #include <airl/airl.hpp>. With --baseline (the
include/ folder of another checkout, e.g. `git worktree add /tmp/old <commit>`), each unit is compiled
against both, runs interleaved, and the ratios are printed: a shared machine's noise hits both alike."""
import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
UNITS = ["include_only_tu.cpp", "rate_limiter_tu.cpp", "multi_tier_tu.cpp"]


def compile_once(cxx, flags, include, source, out):
    """CPU seconds (user + system) and peak resident memory (MB) of one compile."""
    proc = subprocess.Popen([cxx, *flags, "-I", include, "-c", source, "-o", out])
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"compile_time: {source} did not compile against {include}")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cxx", default=os.environ.get("CXX", "g++"))
    parser.add_argument("--flags", default="-std=c++20 -O2")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--include", default=os.path.join(HERE, "..", "include"))
    parser.add_argument("--baseline", help="another include/ folder to compare with, in the same run")
    args = parser.parse_args()
    flags = shlex.split(args.flags)
    trees = [("airl", args.include)] + ([("baseline", args.baseline)] if args.baseline else [])
    print(f"{args.cxx} {args.flags}: CPU seconds and peak MB, medians of {args.runs} interleaved runs")
    header = f"{'translation unit':<22}" + "".join(f" {name + ' s':>11} {name + ' MB':>12}" for name, _ in trees)
    if args.baseline:
        header += f" {'time ratio':>10} {'memory ratio':>12}"
    print(header)
    with tempfile.TemporaryDirectory() as scratch:
        for unit in UNITS:
            source = os.path.join(HERE, "compile_time", unit)
            runs = {name: [] for name, _ in trees}
            for _ in range(args.runs):
                for name, include in trees:
                    runs[name].append(compile_once(args.cxx, flags, include, source, os.path.join(scratch, "x.o")))
            medians = {name: (statistics.median(r[0] for r in runs[name]), statistics.median(r[1] for r in runs[name]))
                       for name, _ in trees}
            line = f"{unit:<22}" + "".join(f" {medians[name][0]:>11.2f} {medians[name][1]:>12.0f}" for name, _ in trees)
            if args.baseline:
                line += (f" {medians['airl'][0] / medians['baseline'][0]:>10.2f}"
                         f" {medians['airl'][1] / medians['baseline'][1]:>12.2f}")
            print(line)


if __name__ == "__main__":
    main()
