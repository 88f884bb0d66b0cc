#!/usr/bin/env python3
"""Plots MAC speedup over exact decode against hit rate, one line per context length, one
panel per (batch, miss pattern), from the CSV that `macattn bench --csv` writes.

    python3 tools/bench/plot_speedup.py docs/benchmarks/cpu.csv docs/benchmarks/cpu_speedup

writes cpu_speedup.png and cpu_speedup.svg. Needs matplotlib (pip install matplotlib).
"""
import csv
import sys
from collections import defaultdict


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, out = sys.argv[1], sys.argv[2]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_speedup.py: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 1
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        print(f"plot_speedup.py: {src} has no rows", file=sys.stderr)
        return 1
    # Rows at hit rate 0 and 1 are measured once (packed); they belong to both patterns' lines.
    panels = defaultdict(lambda: defaultdict(list))
    for r in rows:
        patterns = ["packed", "independent"] if float(r["target_hit_rate"]) in (0.0, 1.0) else [r["miss_pattern"]]
        for p in patterns:
            key = (r["shape"], r["kv_dtype"], int(r["batch"]), p)
            # x is the hit rate the real scan measured (at batch 1 a packed target of 0.95 is
            # 8 of 8 KV groups hitting, i.e. 1.0).
            panels[key][int(r["context"])].append((float(r["measured_hit_rate"]), float(r["speedup"])))
    keys = sorted(panels)
    cols = 2 if len(keys) > 1 else 1
    nrows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.0 * cols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        shape, dtype, batch, pattern = key
        for ctx in sorted(panels[key]):
            pts = sorted(panels[key][ctx])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{ctx // 1024}K")
        ax.set_yscale("log")
        ax.set_xlabel("measured hit rate (fraction of query heads)")
        ax.set_ylabel("speedup over exact decode (x)")
        ax.set_title(f"{shape} {dtype}, batch {batch}, misses {pattern}")
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="context")
    r0 = rows[0]
    fig.suptitle(f"MAC vs exact decode, {r0['threads']} threads, commit {r0['commit']}", fontsize=10)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(f"{out}.{ext}", dpi=110)
    print(f"wrote {out}.png and {out}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
