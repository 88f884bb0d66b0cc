#!/usr/bin/env python3
"""Read a kernel trace written by libmacattn_kernel_trace.so (tools/cuda/kernel_trace.cpp) and
print where the time of a replayed CUDA graph goes.

For every graph with at least --min-kernels kernels per replay: the replays are cut at the graph's
first node, the first --skip replays dropped, and each node's start and end (relative to its
replay's first kernel) taken as the median over the rest. Printed per graph:

  - the replay's span (first kernel's start to last kernel's end) and the median time from one
    replay's first kernel to the next one's (the span plus the gap between replays);
  - with --layers (the engine's decode step): each layer's window, from one input RMSNorm's start
    to the next, and the kernels of a typical layer: each kernel's start and end in the window,
    as the median over the layers (a layer's kernels are labelled name#k by their order in it);
  - otherwise every kernel of the replay in start order.

Times are in microseconds. `gap` is a kernel's start less the latest end of the kernels before it
on the same stream: negative when it overlaps them (programmatic dependent launch).

  python3 tools/cuda/kernel_timeline.py trace.csv [--layers] [--json out.json]
"""
import argparse
import json
import statistics
import sys
from collections import defaultdict


def short_name(name):
    """'void ns::(anonymous namespace)::kernel<128, bf16>(Args, int)' -> 'kernel' (the tracer writes
    demangled names whole)."""
    name = name.replace("(anonymous namespace)", "")
    out, depth = [], 0
    for c in name:
        if c == "<":
            depth += 1
        if depth == 0 and c == "(":
            break
        if depth == 0:
            out.append(c)
        if c == ">":
            depth = max(0, depth - 1)
    s = "".join(out)
    if s.startswith("void "):
        s = s[5:]
    return s.rsplit("::", 1)[-1] or name


def load(path):
    """Rows of (start, end, stream, graph, node, short name). The name is the last column and holds
    commas (demangled template arguments and parameters), so each line is split five times only."""
    rows = []
    with open(path) as f:
        header = f.readline().strip().split(",")
        if header != ["start_ns", "end_ns", "stream", "graph", "node", "name"]:
            raise ValueError(f"unexpected header {header}")
        for line in f:
            s, e, stream, graph, node, name = line.rstrip("\n").split(",", 5)
            rows.append((int(s), int(e), int(stream), int(graph), int(node), short_name(name)))
    return rows


def replays_of(records):
    """Cut one graph's records (sorted by start) into replays at its first node."""
    anchor = records[0][4]
    out, cur = [], []
    for r in records:
        if r[4] == anchor and cur:
            out.append(cur)
            cur = []
        cur.append(r)
    if cur:
        out.append(cur)
    return out


def median_timeline(replays):
    """node -> (median start, median end, stream, name), relative to each replay's first start."""
    starts, ends, info = defaultdict(list), defaultdict(list), {}
    for rep in replays:
        t0 = rep[0][0]
        for s, e, stream, _, node, name in rep:
            starts[node].append((s - t0) / 1e3)
            ends[node].append((e - t0) / 1e3)
            info[node] = (stream, name)
    out = [(statistics.median(starts[n]), statistics.median(ends[n]), info[n][0], info[n][1]) for n in starts]
    out.sort()
    return out


def with_gaps(timeline):
    last_end = defaultdict(lambda: None)
    rows = []
    for s, e, stream, name in timeline:
        prev = last_end[stream]
        rows.append({"name": name, "start_us": s, "end_us": e, "dur_us": e - s, "stream": stream,
                     "gap_us": None if prev is None else s - prev})
        last_end[stream] = e if prev is None else max(prev, e)
    return rows


def print_rows(rows):
    print(f"    {'kernel':<34} {'start':>8} {'end':>8} {'dur':>7} {'gap':>7} stream")
    for r in rows:
        gap = "" if r["gap_us"] is None else f"{r['gap_us']:7.2f}"
        print(f"    {r['name'][:34]:<34} {r['start_us']:8.2f} {r['end_us']:8.2f} {r['dur_us']:7.2f} "
              f"{gap:>7} {r['stream']}")


def layer_view(replays, norm_name, per_layer):
    """Per-layer windows of each replay, cut at every per_layer-th marker kernel (by default every
    other RMSNorm: the input norms)."""
    periods = defaultdict(list)
    per_label = defaultdict(lambda: ([], [], None))
    for rep in replays:
        norms = [r for r in rep if norm_name in r[5]]
        starts = [r[0] for r in norms[0::per_layer]]  # e.g. each layer's input norm (then the final norm)
        for li in range(len(starts) - 1):
            a, b = starts[li], starts[li + 1]
            periods[li].append((b - a) / 1e3)
            counts = defaultdict(int)
            for s, e, stream, _, _, name in rep:
                if a <= s < b:
                    label = f"{name}#{counts[name]}"
                    counts[name] += 1
                    st, en, _ = per_label[label]
                    st.append((s - a) / 1e3)
                    en.append((e - a) / 1e3)
                    per_label[label] = (st, en, stream)
    layer = sorted(((statistics.median(st), statistics.median(en), stream, label)
                    for label, (st, en, stream) in per_label.items()))
    return {li: statistics.median(v) for li, v in periods.items()}, layer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace", help="CSV written by libmacattn_kernel_trace.so")
    ap.add_argument("--min-kernels", type=int, default=3, help="graphs with fewer kernels per replay are skipped")
    ap.add_argument("--skip", type=int, default=3, help="first replays of each graph left out (warm-up)")
    ap.add_argument("--layers", action="store_true", help="cut replays into layers at the input RMSNorms")
    ap.add_argument("--norm-name", default="rms_norm", help="name (a substring) of the kernel that marks layers")
    ap.add_argument("--marks-per-layer", type=int, default=2, help="marker kernels per layer (2 RMSNorms)")
    ap.add_argument("--json", help="also write the medians as JSON to this file")
    a = ap.parse_args()
    try:
        records = load(a.trace)
    except (OSError, KeyError, ValueError) as e:
        sys.exit(f"kernel_timeline: cannot read {a.trace}: {e}")
    by_graph = defaultdict(list)
    for r in records:
        if r[3] != 0:
            by_graph[r[3]].append(r)
    print(f"{a.trace}: {len(records)} kernels, {len(by_graph)} graphs")
    out = []
    for g in sorted(by_graph):
        recs = sorted(by_graph[g])
        reps = replays_of(recs)
        per = statistics.mode(len(r) for r in reps)  # replays of another length (cut short) are dropped
        if per < a.min_kernels or len(reps) <= a.skip:
            continue
        reps = [r for r in reps[a.skip:] if len(r) == per]
        spans = [(max(x[1] for x in r) - r[0][0]) / 1e3 for r in reps]
        # Start to start of consecutive replays (what a loop of graph launches takes per replay):
        # the span plus the gap before the next replay's first kernel.
        periods = [(b[0][0] - a[0][0]) / 1e3 for a, b in zip(reps, reps[1:])]
        entry = {"graph": g, "kernels_per_replay": per, "replays": len(reps), "span_us": statistics.median(spans),
                 "period_us": statistics.median(periods) if periods else None}
        print(f"\ngraph {g}: {per} kernels per replay, {len(reps)} replays, span {entry['span_us']:.2f} us "
              f"(min {min(spans):.2f}, max {max(spans):.2f})" +
              (f", start to start {entry['period_us']:.2f} us" if periods else ""))
        if a.layers:
            periods, layer = layer_view(reps, a.norm_name, a.marks_per_layer)
            if not periods:
                print(f"  no '{a.norm_name}' kernels: no layers")
            else:
                vals = [periods[k] for k in sorted(periods)]
                print(f"  {len(vals)} layers, window median {statistics.median(vals):.2f} us (min {min(vals):.2f}, "
                      f"max {max(vals):.2f}); first layers: " + ", ".join(f"{v:.2f}" for v in vals[:4]))
                rows = with_gaps(layer)
                print("  a layer's kernels (median over layers and replays):")
                print_rows(rows)
                entry["layer_window_us"] = vals
                entry["layer"] = rows
        else:
            rows = with_gaps(median_timeline(reps))
            print_rows(rows)
            entry["kernels"] = rows
        out.append(entry)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"trace": a.trace, "graphs": out}, f, indent=1)


if __name__ == "__main__":
    main()
