"""The macattn ops on CUDA (macattn::cuda): against SDPA, the fp64 model and the CPU ops, and
inside a CUDA graph. Skipped, with the reason, where there is no GPU or no CUDA build."""
import math

import pytest
import torch

import macattn_torch as mt
from reference import exact, mac_step, make_paged
from test_ops_cpu import forced_rings, ring_dict, sdpa_decode

HAVE_CUDA_OPS = "torch CUDA kernels registered" in mt.build_info()
pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False"),
    pytest.mark.skipif(not HAVE_CUDA_OPS, reason="macattn_torch was built without its CUDA kernels: "
                       + mt.build_info()),
]

DEV = "cuda"
CFG = mt.MacConfig(rect_offset=4, tau=0.45, front_sinks=0, min_context=0)


def to_dev(pieces):
    return mt.PagedKV(*(t.to(DEV) for t in pieces[:5]))


@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("page_size", [1, 16])
@pytest.mark.parametrize("hq,hkv,d", [(32, 8, 128), (8, 8, 64)])
def test_exact_decode_matches_sdpa_and_cpu(layout, page_size, hq, hkv, d):
    lengths = [1000, 1, 77]
    pieces = make_paged(lengths, hkv, d, page_size, layout, dtype=torch.bfloat16, seed=d + page_size)
    q = torch.randn(len(lengths), hq, d).bfloat16()
    kv = to_dev(pieces)
    kv = mt.PagedKV(*kv.args(), layout=layout)
    out, lse = mt.exact_decode(q.to(DEV), kv)
    want = sdpa_decode(q.float(), pieces[5], pieces[6])
    torch.testing.assert_close(out.float().cpu(), want, atol=2e-2, rtol=2e-2)
    _, cpu_lse = mt.exact_decode(q, mt.PagedKV(*pieces[:5], layout=layout))
    torch.testing.assert_close(lse.cpu(), cpu_lse, atol=2e-3, rtol=2e-3)


def test_vllm_layout_on_cuda():
    g = torch.Generator().manual_seed(3)
    cache = torch.randn(64, 2, 16, 8, 128, generator=g).bfloat16()
    seq_lens = torch.tensor([300, 17])
    table = torch.stack([torch.randperm(64, generator=g)[:20] for _ in range(2)]).int()
    q = torch.randn(2, 32, 128).bfloat16()
    out, _ = mt.exact_decode(q.to(DEV), mt.paged_kv_vllm(cache.to(DEV), table.to(DEV), seq_lens.to(DEV)))
    cpu_out, _ = mt.exact_decode(q, mt.paged_kv_vllm(cache, table, seq_lens))
    torch.testing.assert_close(out.cpu().float(), cpu_out.float(), atol=2e-2, rtol=2e-2)


def test_mac_forced_hits_match_model_and_cpu_decisions():
    lengths, hq, hkv, d, window = [600, 300], 32, 8, 128, 64
    pieces = make_paged(lengths, hkv, d, 16, dtype=torch.bfloat16, seed=8)
    q, q_pre = torch.randn(2, hq, d).bfloat16(), torch.randn(2, hq, d).bfloat16()
    hit_at = [[598] * 4 + [None] * 4 + [590] * 24, [None, 297] * 16]
    state = forced_rings(q_pre.float(), lengths, window, hit_at)
    rings = [ring_dict(state, b) for b in range(2)]
    cpu_state = mt.MacState(*(t.clone() for t in state))
    gpu_state = mt.MacState(*(t.to(DEV) for t in state))
    out, lse, stats = mt.mac_decode(q.to(DEV), q_pre.to(DEV), to_dev(pieces), gpu_state, CFG, return_stats=True)
    _, _, cpu_stats = mt.mac_decode(q, q_pre, mt.PagedKV(*pieces[:5]), cpu_state, CFG, return_stats=True)
    assert torch.equal(stats.hit.cpu(), cpu_stats.hit)
    assert torch.equal(stats.matched_position.cpu(), cpu_stats.matched_position)
    assert torch.equal(stats.band_len.cpu(), cpu_stats.band_len)
    for b in range(2):
        want = mac_step(q[b].double(), q_pre[b].double(), pieces[5][b], pieces[6][b], rings[b], window, 4, 0.45, 0, 0,
                        1 / math.sqrt(d))
        assert stats.hit[b].tolist() == want[2]
        torch.testing.assert_close(out[b].cpu().double(), want[0], atol=2e-2, rtol=2e-2)
        torch.testing.assert_close(lse[b].cpu().double(), want[1], atol=2e-3, rtol=2e-3)
    assert gpu_state.position.tolist() == lengths


def test_mac_all_misses_equal_exact():
    pieces = make_paged([4000, 2500], 8, 128, 16, dtype=torch.bfloat16, seed=1)
    kv = to_dev(pieces)
    q, q_pre = torch.randn(2, 32, 128, device=DEV).bfloat16(), torch.randn(2, 32, 128, device=DEV).bfloat16()
    state = mt.mac_state_alloc(2, 512, 32, 128, torch.bfloat16, DEV)
    out, _, stats = mt.mac_decode(q, q_pre, kv, state, CFG, return_stats=True)
    want, _ = mt.exact_decode(q, kv)
    assert stats.hit.sum() == 0
    torch.testing.assert_close(out.float(), want.float(), atol=1e-2, rtol=1e-2)


def test_prefill_init_matches_cpu():
    lengths, rows = [700, 90], [200, 90]
    pieces = make_paged(lengths, 8, 128, 16, dtype=torch.bfloat16, seed=6)
    q, q_pre = torch.randn(sum(rows), 32, 128).bfloat16(), torch.randn(sum(rows), 32, 128).bfloat16()
    row_indptr = torch.tensor([0, rows[0], sum(rows)], dtype=torch.int32)
    cfg = mt.MacConfig(rect_offset=16)
    cpu = mt.mac_state_alloc(2, 128, 32, 128, torch.float32)
    gpu = mt.mac_state_alloc(2, 128, 32, 128, torch.float32, DEV)
    mt.mac_prefill_init(q, q_pre, mt.PagedKV(*pieces[:5]), row_indptr, cpu, cfg)
    mt.mac_prefill_init(q.to(DEV), q_pre.to(DEV), to_dev(pieces), row_indptr.to(DEV), gpu, cfg)
    torch.testing.assert_close(gpu.qring.cpu(), cpu.qring, atol=0, rtol=0)
    torch.testing.assert_close(gpu.oring.cpu(), cpu.oring, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gpu.lring.cpu(), cpu.lring, atol=2e-3, rtol=2e-3)
    assert gpu.position.tolist() == lengths and gpu.ready.tolist() == [1, 1]
    mt.mac_state_reset(gpu)
    assert gpu.ready.sum() == 0 and torch.all(gpu.lring == float("-inf"))


def test_cuda_graph_replay_matches_eager():
    lengths, hq, hkv, d, window = [5000, 3000], 32, 8, 128, 256
    pieces = make_paged(lengths, hkv, d, 16, dtype=torch.bfloat16, seed=2)
    kv = to_dev(pieces)
    q_pre = torch.randn(2, hq, d).bfloat16()
    q = torch.randn(2, hq, d, device=DEV).bfloat16()
    hit_at = [[4998] * hq, [None] * hq]
    base = mt.MacState(*(t.to(DEV) for t in forced_rings(q_pre.float(), lengths, window, hit_at)))
    q_pre = q_pre.to(DEV)
    mt.reserve_cuda_workspace(0, hq, hkv, d, 2, max(lengths), window)
    state = mt.MacState(*(t.clone() for t in base))
    eager_out, _, eager_stats = mt.mac_decode(q, q_pre, kv, state, CFG, return_stats=True, max_seq_len=max(lengths))
    assert eager_stats.hit[0].sum() == hq and eager_stats.hit[1].sum() == 0

    state = mt.MacState(*(t.clone() for t in base))
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up outside the graph, then capture
        mt.mac_decode(q, q_pre, kv, state, CFG, max_seq_len=max(lengths))
        for dst, src in zip(state, base):
            dst.copy_(src)
        with torch.cuda.graph(graph, stream=stream):
            graph_out, _ = mt.mac_decode(q, q_pre, kv, state, CFG, max_seq_len=max(lengths))
    torch.cuda.current_stream().wait_stream(stream)
    for _ in range(3):  # each replay starts from the same rings
        for dst, src in zip(state, base):
            dst.copy_(src)
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(graph_out, eager_out, atol=0, rtol=0)
    assert state.position.tolist() == lengths


def test_workspace_cannot_grow_during_capture():
    pieces = make_paged([64], 8, 128, 16, dtype=torch.bfloat16, seed=0)
    kv = to_dev(pieces)
    q = torch.randn(1, 32, 128, device=DEV).bfloat16()
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(Exception, match="reserve_cuda_workspace"):
        with torch.cuda.graph(graph):
            mt.exact_decode(q, kv, max_seq_len=10_000_000)
