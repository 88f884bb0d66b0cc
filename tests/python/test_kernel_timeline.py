"""tools/cuda/kernel_timeline.py on traces made up here, where every expected number is known:
replays cut at a graph's first node, medians, overlaps (negative gaps), layer windows and
labels, and the tracer's demangled names (commas and '(anonymous namespace)' included)."""
import json

import pytest

import tool_script

SCRIPT = tool_script.ROOT / "tools" / "cuda" / "kernel_timeline.py"


def load_module():
    return tool_script.load(SCRIPT)


def write_trace(path, rows):
    with open(path, "w") as f:
        f.write("start_ns,end_ns,stream,graph,node,name\n")
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")


def run(args):
    return tool_script.run(SCRIPT, args)


def test_short_names():
    m = load_module()
    assert m.short_name("void macattn::cuda::detail::(anonymous namespace)::mac_scan_kernel<128, __nv_bfloat16, 1>"
                        "(macattn::cuda::detail::PagedKVArgs, void const*, int)") == "mac_scan_kernel"
    assert m.short_name("macattn::engine::gpu::(anonymous namespace)::rms_norm_kernel<2>(float const*, long)") == \
        "rms_norm_kernel"
    assert m.short_name("fill_kernel") == "fill_kernel"


def test_replays_medians_and_overlaps(tmp_path):
    # Graph 7, five replays 100 us apart; replay k's kernels shifted by k ns so medians are exact.
    # The complete kernel's name holds commas, as the tracer writes full names it cannot shorten.
    rows = [(50, 60, 9, 0, 0, "eager_kernel")]  # outside any graph: ignored
    for k in range(5):
        t0 = 1_000 + k * 100_000 + k
        rows += [
            (t0, t0 + 2_000, 1, 7, 11, "restore_kernel"),
            (t0 + 2_500, t0 + 9_000, 2, 7, 12, "void ns::complete_kernel<128, bf16>(Args, int)"),
            (t0 + 2_600, t0 + 7_000, 1, 7, 13, "scan_kernel"),
            (t0 + 3_600, t0 + 10_000, 1, 7, 14, "attend_kernel"),  # starts before scan ends: PDL
        ]
    trace = tmp_path / "t.csv"
    write_trace(trace, rows)
    out = tmp_path / "t.json"
    r = run([str(trace), "--skip", "1", "--json", str(out)])
    assert r.returncode == 0, r.stderr
    g = json.loads(out.read_text())["graphs"]
    assert len(g) == 1 and g[0]["graph"] == 7
    assert g[0]["kernels_per_replay"] == 4 and g[0]["replays"] == 4
    assert g[0]["span_us"] == pytest.approx(10.0)  # to the attend kernel's end
    assert g[0]["period_us"] == pytest.approx(100.001)  # replays 100 us + 1 ns apart
    ks = {k["name"]: k for k in g[0]["kernels"]}
    assert list(ks) == ["restore_kernel", "complete_kernel", "scan_kernel", "attend_kernel"]
    assert ks["complete_kernel"]["start_us"] == pytest.approx(2.5)
    assert ks["complete_kernel"]["gap_us"] is None  # first on its stream
    assert ks["scan_kernel"]["gap_us"] == pytest.approx(0.6)  # after restore_kernel on stream 1
    assert ks["attend_kernel"]["gap_us"] == pytest.approx(-3.4)  # overlaps the scan
    assert ks["attend_kernel"]["dur_us"] == pytest.approx(6.4)


def test_replays_of_another_length_are_dropped(tmp_path):
    # Three replays of three kernels, two of two and one of one: the median count (2.5) is no
    # replay's length; the most common one (3) is.
    rows = []
    for k, n in enumerate([3, 1, 3, 2, 3, 2]):
        t0 = 1_000 + k * 100_000
        for j in range(n):
            rows.append((t0 + j * 2_000, t0 + j * 2_000 + 1_000, 1, 4, j + 1, f"k{j}"))
    trace = tmp_path / "t.csv"
    write_trace(trace, rows)
    out = tmp_path / "t.json"
    r = run([str(trace), "--skip", "0", "--json", str(out)])
    assert r.returncode == 0, r.stderr
    g = json.loads(out.read_text())["graphs"][0]
    assert g["kernels_per_replay"] == 3 and g["replays"] == 3
    assert g["span_us"] == pytest.approx(5.0)


def test_layers_cut_at_norms(tmp_path):
    # Three replays of a two-layer step: [norm, gemm, norm, gemm] per layer, then a final norm.
    # Layer 0 is 30 us long, layer 1 40 us; the second gemm of each layer is labelled gemm#1.
    rows = []
    for k in range(3):
        t = 1_000_000 * (k + 1)
        node = 1
        for length in (30_000, 40_000):
            half = length // 2
            for j in range(2):
                rows.append((t + j * half, t + j * half + 1_000, 3, 5, node, "rms_norm_kernel"))
                rows.append((t + j * half + 1_000, t + (j + 1) * half, 3, 5, node + 1, "gemm_kernel"))
                node += 2
            t += length
        rows.append((t, t + 1_000, 3, 5, node, "rms_norm_kernel"))
    trace = tmp_path / "t.csv"
    write_trace(trace, rows)
    out = tmp_path / "t.json"
    r = run([str(trace), "--layers", "--skip", "0", "--json", str(out)])
    assert r.returncode == 0, r.stderr
    g = json.loads(out.read_text())["graphs"][0]
    assert g["layer_window_us"] == pytest.approx([30.0, 40.0])
    labels = [k["name"] for k in g["layer"]]
    assert labels == ["rms_norm_kernel#0", "gemm_kernel#0", "rms_norm_kernel#1", "gemm_kernel#1"]
    # Medians over both layers: the second norm starts at 15 us (layer 0) and 20 us (layer 1).
    assert g["layer"][2]["start_us"] == pytest.approx(17.5)


def test_bad_trace_is_reported(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    r = run([str(bad)])
    assert r.returncode != 0
    assert "cannot read" in r.stderr and "bad.csv" in r.stderr
    r = run([str(tmp_path / "missing.csv")])
    assert r.returncode != 0 and "cannot read" in r.stderr
