#!/usr/bin/env python3
"""Markdown summary of a `macattn bench --csv` file: exact decode bandwidth per (batch, context),
and MAC speedup by hit rate for each miss pattern.

    python3 tools/bench/summarize.py docs/benchmarks/cpu.csv
"""
import csv
import statistics
import sys
from collections import defaultdict


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"summarize.py: {sys.argv[1]} has no rows", file=sys.stderr)
        return 1
    ctxs = sorted({int(r["context"]) for r in rows})
    batches = sorted({int(r["batch"]) for r in rows})
    # Exact decode is timed again beside every MAC row (in alternation), each time with the
    # streaming read measured next to it: report the median over a configuration's rows and the
    # range of its % of bandwidth (the host's bandwidth moves by up to 2x within a run).
    exact = defaultdict(list)
    for r in rows:
        exact[(int(r["batch"]), int(r["context"]))].append(
            (float(r["exact_us"]), float(r["exact_gbps"]), float(r["exact_bw_fraction"]), float(r["stream_read_gbps"])))
    streams = sorted(float(r["stream_read_gbps"]) for r in rows)
    print("Exact decode (cells: median time and GB/s of K/V over the configuration's timings; % of the streaming"
          f" read measured next to each timing, lowest-highest; those reads ranged {streams[0]:.1f}-{streams[-1]:.1f}"
          " GB/s in this run)\n")
    print("| batch | " + " | ".join(f"{c // 1024}K" for c in ctxs) + " |")
    print("|---|" + "---|" * len(ctxs))
    for b in batches:
        cells = []
        for c in ctxs:
            xs = exact[(b, c)]
            us = statistics.median(x[0] for x in xs)
            gbps = statistics.median(x[1] for x in xs)
            fr = [x[2] for x in xs]
            cells.append(f"{us / 1000:.2f} ms, {gbps:.1f} GB/s ({100 * min(fr):.0f}-{100 * max(fr):.0f}%)")
        print(f"| {b} | " + " | ".join(cells) + " |")
    speed = defaultdict(dict)
    rates = sorted({float(r["target_hit_rate"]) for r in rows})
    for r in rows:
        rate = float(r["target_hit_rate"])
        pats = ["packed", "independent"] if rate in (0.0, 1.0) else [r["miss_pattern"]]
        for p in pats:
            speed[(p, int(r["batch"]), int(r["context"]))][rate] = (float(r["speedup"]), float(r["measured_hit_rate"]),
                                                                   float(r["all_hit_group_fraction"]))
    for p in ("packed", "independent"):
        print(f"\nMAC speedup over exact, misses {p} (cells: speedup; measured head hit rate / all-hit group fraction)\n")
        print("| batch | context | " + " | ".join(f"{x:g}" for x in rates) + " |")
        print("|---|---|" + "---|" * len(rates))
        for b in batches:
            for c in ctxs:
                d = speed.get((p, b, c), {})
                cells = [f"{d[x][0]:.2f}x ({d[x][1]:.2f}/{d[x][2]:.2f})" if x in d else "" for x in rates]
                print(f"| {b} | {c // 1024}K | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
