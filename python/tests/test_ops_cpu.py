"""The macattn ops on CPU against independent references: PyTorch SDPA for exact decode, the
fp64 model of MAC_ATTENTION.md in reference.py for MAC decode and prefill."""
import math

import pytest
import torch
import torch.nn.functional as F

import macattn_torch as mt
from reference import NEG_INF, entry_end, exact, gather_pages, mac_step, make_paged, prefix_state

torch.manual_seed(0)


def paged_kv(pieces, layout="NHD"):
    return mt.PagedKV(*pieces[:5], layout=layout)


def sdpa_decode(q, k_seqs, v_seqs):
    """Exact decode through torch's SDPA, fp32, one sequence at a time (GQA by repeating K/V)."""
    outs = []
    for b, (k, v) in enumerate(zip(k_seqs, v_seqs)):
        g = q.shape[1] // k.shape[1]
        kk = k.float().repeat_interleave(g, dim=1).transpose(0, 1)[None]  # [1, Hq, L, D]
        vv = v.float().repeat_interleave(g, dim=1).transpose(0, 1)[None]
        outs.append(F.scaled_dot_product_attention(q[b].float()[None, :, None], kk, vv)[0, :, 0])
    return torch.stack(outs)


def ring_dict(state, b):
    return dict(qring=state.qring[b].double().clone(), oring=state.oring[b].double().clone(),
                lring=state.lring[b].double().clone(), position=int(state.position[b]), ready=int(state.ready[b]))


# --- exact decode ------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NHD", "HND"])
@pytest.mark.parametrize("hq,hkv,d", [(8, 2, 64), (4, 4, 128), (6, 1, 32)])
@pytest.mark.parametrize("page_size", [1, 5, 16])
def test_exact_decode_matches_sdpa(layout, hq, hkv, d, page_size):
    lengths = [37, 1, 130]
    pieces = make_paged(lengths, hkv, d, page_size, layout, seed=hq + d + page_size)
    q = torch.randn(len(lengths), hq, d)
    out, lse = mt.exact_decode(q, paged_kv(pieces, layout))
    want = sdpa_decode(q, pieces[5], pieces[6])
    torch.testing.assert_close(out, want, atol=2e-5, rtol=2e-5)
    for b in range(len(lengths)):
        _, want_lse = exact(q[b], pieces[5][b], pieces[6][b], 1 / math.sqrt(d))
        torch.testing.assert_close(lse[b].double(), want_lse, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_exact_decode_half_precision(dtype):
    pieces = make_paged([300, 77], 2, 128, 16, dtype=dtype, seed=3)
    q = torch.randn(2, 8, 128).to(dtype)
    out, _ = mt.exact_decode(q, paged_kv(pieces), softmax_scale=0.05)
    assert out.dtype == dtype
    want = torch.stack([exact(q[b].double(), pieces[5][b], pieces[6][b], 0.05)[0] for b in range(2)])
    torch.testing.assert_close(out.double(), want, atol=1e-2, rtol=1e-2)


def test_empty_sequence_gives_zero_and_neg_inf():
    pieces = make_paged([0, 9], 2, 64, 4)
    out, lse = mt.exact_decode(torch.randn(2, 4, 64), paged_kv(pieces))
    assert torch.all(out[0] == 0) and torch.all(lse[0] == NEG_INF)
    assert torch.all(torch.isfinite(lse[1]))


def test_vllm_and_flashinfer_combined_layouts_match_separate_pages():
    """vLLM's (num_blocks, 2, block_size, Hkv, D) through strided views, no copy."""
    g = torch.Generator().manual_seed(7)
    num_blocks, bs, hkv, d = 20, 8, 2, 64
    cache = torch.randn(num_blocks, 2, bs, hkv, d, generator=g)
    seq_lens = torch.tensor([17, 8, 1, 40])
    block_table = torch.stack([torch.randperm(num_blocks, generator=g)[:6] for _ in range(4)]).int()
    kv = mt.paged_kv_vllm(cache, block_table, seq_lens)
    assert kv.k_pages.stride(0) == 2 * bs * hkv * d  # a view, not a copy
    q = torch.randn(4, 8, d)
    out, lse = mt.exact_decode(q, kv)
    # The same cache, K and V copied apart, FlashInfer's page table built here by hand.
    pages = [(n + bs - 1) // bs for n in seq_lens.tolist()]
    indptr = torch.tensor([0] + list(torch.cumsum(torch.tensor(pages), 0)), dtype=torch.int32)
    indices = torch.cat([block_table[b, :p] for b, p in enumerate(pages)]).int()
    last = torch.tensor([n - (p - 1) * bs for n, p in zip(seq_lens.tolist(), pages)], dtype=torch.int32)
    k_sep, v_sep = cache[:, 0].contiguous(), cache[:, 1].contiguous()
    out2, lse2 = mt.exact_decode(q, mt.PagedKV(k_sep, v_sep, indptr, indices, last))
    torch.testing.assert_close(out, out2, atol=0, rtol=0)
    torch.testing.assert_close(lse, lse2, atol=0, rtol=0)
    want = sdpa_decode(q, gather_pages(k_sep, indptr, indices, last), gather_pages(v_sep, indptr, indices, last))
    torch.testing.assert_close(out, want, atol=2e-5, rtol=2e-5)
    # FlashInfer's single-tensor form [num_pages, 2, page_size, Hkv, D] is the same memory.
    out3, _ = mt.exact_decode(q, mt.paged_kv_flashinfer(cache, indptr, indices, last))
    torch.testing.assert_close(out, out3, atol=0, rtol=0)
    # MAC decode and prefill read the same strided view.
    q_pre = torch.randn(4, 8, d)
    rows = torch.tensor([0, 3, 6, 7, 10], dtype=torch.int32)
    results = []
    for cache_kv in (kv, mt.PagedKV(k_sep, v_sep, indptr, indices, last)):
        state = mt.mac_state_alloc(4, 4, 8, d, torch.float32)
        mt.mac_prefill_init(torch.randn(10, 8, d, generator=g), torch.randn(10, 8, d, generator=g), cache_kv, rows,
                            state, mt.MacConfig(rect_offset=2))
        g.manual_seed(11)
        results.append((mt.mac_decode(q, q_pre, cache_kv, state, mt.MacConfig(2, 0.45, 0, 0))[0], state))
        g.manual_seed(7)
    torch.testing.assert_close(results[0][0], results[1][0], atol=0, rtol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# --- MAC decode --------------------------------------------------------------------------------

CFG = dict(window=8, rect_offset=4, tau=0.45, front_sinks=0, min_context=0)


def run_mac(q, q_pre, pieces, state, cfg, ring_dtype_exact=True):
    """The op and the fp64 model on the same inputs; returns both results."""
    rings = [ring_dict(state, b) for b in range(q.shape[0])]
    out, lse, stats = mt.mac_decode(q, q_pre, paged_kv(pieces), state,
                                    mt.MacConfig(cfg["rect_offset"], cfg["tau"], cfg["front_sinks"],
                                                 cfg["min_context"]), return_stats=True)
    scale = 1 / math.sqrt(q.shape[-1])
    want = [mac_step(q[b], q_pre[b], pieces[5][b], pieces[6][b], rings[b], cfg["window"], cfg["rect_offset"],
                     cfg["tau"], cfg["front_sinks"], cfg["min_context"], scale) for b in range(q.shape[0])]
    return (out, lse, stats), want, rings


def test_mac_all_misses_equal_exact_decode():
    lengths = [50, 23]
    pieces = make_paged(lengths, 2, 64, 16, seed=11)
    q, q_pre = torch.randn(2, 8, 64), torch.randn(2, 8, 64)
    state = mt.mac_state_alloc(2, CFG["window"], 8, 64, torch.float32)  # not ready: every head misses
    (out, lse, stats), want, rings = run_mac(q, q_pre, pieces, state, CFG)
    exact_out, exact_lse = mt.exact_decode(q, paged_kv(pieces))
    torch.testing.assert_close(out, exact_out, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse, exact_lse, atol=2e-5, rtol=2e-5)
    assert stats.hit.sum() == 0
    assert state.position.tolist() == [50, 23] and state.ready.tolist() == [1, 1]
    for b, t in enumerate(n - 1 for n in lengths):  # the written row: q_pre and the prefix state
        torch.testing.assert_close(state.qring[b, t % CFG["window"]], q_pre[b], atol=0, rtol=0)
        torch.testing.assert_close(state.oring[b].double(), rings[b]["oring"], atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(state.lring[b].double(), rings[b]["lring"], atol=2e-5, rtol=2e-5)


def forced_rings(q_pre, lengths, window, hit_at, seed=0):
    """Rings at position t = len-1, ready, whose rows are q_pre + 3 per dim except where
    hit_at[b][h] = m: row of position m holds head h's own q_pre (a hit at m). Entries are random
    states with finite LSE (what the reused prefix 'was')."""
    g = torch.Generator().manual_seed(seed)
    b_, hq, d = q_pre.shape
    state = mt.mac_state_alloc(b_, window, hq, d, torch.float32)
    for b, n in enumerate(lengths):
        t = n - 1
        state.qring[b] = q_pre[b][None] + 3.0
        for h, m in enumerate(hit_at[b]):
            if m is not None:
                state.qring[b, m % window, h] = q_pre[b, h]
        state.oring[b] = torch.randn(window, hq, d, generator=g) * 0.1
        state.lring[b] = torch.rand(window, hq, generator=g) * 4 + 1
        state.position[b], state.ready[b] = t, 1
    return state


def forced_hit_case():
    """Two sequences (60 and 41 tokens, 8 query heads over 2 KV heads, D = 64): sequence 0 hits at
    t-1 on heads 0-3 (a whole KV group) and at t-5 on head 5; sequence 1 at t-2 on head 7."""
    lengths = [60, 41]
    pieces = make_paged(lengths, 2, 64, 16, seed=5)
    q, q_pre = torch.randn(2, 8, 64), torch.randn(2, 8, 64)
    hit_at = [[58, 58, 58, 58, None, 54, None, None], [None] * 7 + [38]]
    return lengths, pieces, q, q_pre, hit_at


@pytest.mark.parametrize("front_sinks", [0, 3])
def test_mac_forced_hits_reuse_the_entry_and_add_band_and_tail(front_sinks):
    cfg = dict(CFG, front_sinks=front_sinks)
    lengths, pieces, q, q_pre, hit_at = forced_hit_case()
    state = forced_rings(q_pre, lengths, cfg["window"], hit_at)
    (out, lse, stats), want, rings = run_mac(q, q_pre, pieces, state, cfg)
    for b in range(2):
        want_out, want_lse, want_hit, want_m = want[b]
        assert stats.hit[b].tolist() == want_hit == [int(m is not None) for m in hit_at[b]]
        for h, m in enumerate(hit_at[b]):
            if m is not None:
                assert stats.matched_position[b, h] == m
                t = lengths[b] - 1
                assert stats.band_len[b, h] == entry_end(t, cfg["rect_offset"]) - entry_end(m, cfg["rect_offset"])
        torch.testing.assert_close(out[b].double(), want_out, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(lse[b].double(), want_lse, atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(state.oring[b].double(), rings[b]["oring"], atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(state.lring[b].double(), rings[b]["lring"], atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(state.qring[b].double(), rings[b]["qring"], atol=0, rtol=0)
    # A hit really differs from exact attention (the reused entry is not the true prefix state).
    exact_out, _ = mt.exact_decode(q, paged_kv(pieces))
    assert (out[0, 0] - exact_out[0, 0]).abs().max() > 1e-3
    torch.testing.assert_close(out[0, 4], exact_out[0, 4], atol=2e-5, rtol=2e-5)


def test_mac_stats_without_miss_matches():
    """report_miss_matches=False: the same output, rings, hits and bands; a miss whose best row is
    at or over the threshold (every row here but the forced hits: q_pre + 3 per dim) reports -1."""
    lengths, pieces, q, q_pre, hit_at = forced_hit_case()
    full_state = forced_rings(q_pre, lengths, CFG["window"], hit_at)
    terse_state = mt.MacState(*(x.clone() for x in full_state))
    cfg = mt.MacConfig(CFG["rect_offset"], CFG["tau"], CFG["front_sinks"], CFG["min_context"])
    terse_cfg = mt.MacConfig(CFG["rect_offset"], CFG["tau"], CFG["front_sinks"], CFG["min_context"],
                             report_miss_matches=False)
    out, lse, stats = mt.mac_decode(q, q_pre, paged_kv(pieces), full_state, cfg, return_stats=True)
    t_out, t_lse, t_stats = mt.mac_decode(q, q_pre, paged_kv(pieces), terse_state, terse_cfg, return_stats=True)
    torch.testing.assert_close(t_out, out, atol=0, rtol=0)
    torch.testing.assert_close(t_lse, lse, atol=0, rtol=0)
    for a, b in zip(terse_state, full_state):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert torch.equal(t_stats.hit, stats.hit) and torch.equal(t_stats.band_len, stats.band_len)
    hit = stats.hit.bool()
    assert torch.equal(t_stats.matched_position[hit], stats.matched_position[hit])
    assert (stats.matched_position[~hit] >= 0).all()  # the full report names a row for every miss
    assert (t_stats.matched_position[~hit] == -1).all()


def test_mac_stale_ring_is_wiped_and_misses():
    lengths = [30]
    pieces = make_paged(lengths, 1, 64, 8, seed=2)
    q_pre = torch.randn(1, 2, 64)
    state = forced_rings(q_pre, lengths, 8, [[28, 28]])
    state.position[0] = 5  # not at t = 29: stale
    (out, lse, stats), want, _ = run_mac(torch.randn(1, 2, 64), q_pre, pieces, state, CFG)
    assert stats.hit.sum() == 0 and want[0][2] == [0, 0]
    torch.testing.assert_close(out[0].double(), want[0][0], atol=2e-5, rtol=2e-5)


def test_mac_multi_step_sequence_matches_the_model():
    """Ten decode steps of one growing sequence; q_pre repeats so later steps hit their own past."""
    d, hq, hkv, window, steps, start = 64, 4, 2, 6, 10, 20
    g = torch.Generator().manual_seed(9)
    k_all, v_all = torch.randn(start + steps, hkv, d, generator=g), torch.randn(start + steps, hkv, d, generator=g)
    pre = torch.randn(3, hq, d, generator=g)
    state = mt.mac_state_alloc(1, window, hq, d, torch.float32)
    ring = ring_dict(state, 0)
    hits = 0
    for i in range(steps):
        n = start + i + 1
        k_pages, v_pages = k_all[:n][:, None], v_all[:n][:, None]  # page size 1
        kv = mt.PagedKV(k_pages.contiguous(), v_pages.contiguous(), torch.tensor([0, n], dtype=torch.int32),
                        torch.arange(n, dtype=torch.int32), torch.tensor([1], dtype=torch.int32))
        q, q_pre = torch.randn(1, hq, d, generator=g), pre[i % 3][None] + 0.01 * torch.randn(1, hq, d, generator=g)
        out, lse, stats = mt.mac_decode(q, q_pre, kv, state, mt.MacConfig(4, 0.45, 0, 0), return_stats=True)
        want_out, want_lse, want_hit, want_m = mac_step(q[0], q_pre[0], k_all[:n], v_all[:n], ring, window, 4, 0.45,
                                                        0, 0, 1 / math.sqrt(d))
        assert stats.hit[0].tolist() == want_hit and stats.matched_position[0].tolist() == want_m
        torch.testing.assert_close(out[0].double(), want_out, atol=5e-5, rtol=5e-5)
        hits += sum(want_hit)
    assert hits >= 10  # the test exercises reuse, not only misses


# --- prefill ring init and state -------------------------------------------------------------

@pytest.mark.parametrize("front_sinks", [0, 2])
def test_prefill_init_writes_prefix_states(front_sinks):
    lengths, rows = [40, 5], [12, 5]
    hq, d, window, s = 4, 64, 8, 3
    pieces = make_paged(lengths, 2, d, 16, seed=4)
    q, q_pre = torch.randn(sum(rows), hq, d), torch.randn(sum(rows), hq, d)
    row_indptr = torch.tensor([0, rows[0], sum(rows)], dtype=torch.int32)
    state = mt.mac_state_alloc(2, window, hq, d, torch.float32)
    mt.mac_prefill_init(q, q_pre, paged_kv(pieces), row_indptr, state, mt.MacConfig(s, 0.45, front_sinks, 0))
    assert state.position.tolist() == lengths and state.ready.tolist() == [1, 1]
    scale = 1 / math.sqrt(d)
    for b, (n, r) in enumerate(zip(lengths, rows)):
        for p in range(max(0, n - window), n):
            row = int(row_indptr[b]) + p - (n - r)
            slot = p % window
            torch.testing.assert_close(state.qring[b, slot], q_pre[row], atol=0, rtol=0)
            for h in range(hq):
                o, l = prefix_state(q[row, h], pieces[5][b][:, h // 2], pieces[6][b][:, h // 2], p, s, front_sinks,
                                    scale)
                assert (l == NEG_INF and state.lring[b, slot, h] == NEG_INF) or \
                    abs(float(state.lring[b, slot, h]) - l) < 2e-5
                torch.testing.assert_close(state.oring[b, slot, h].double(), o, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("ring_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_state_alloc_and_reset(ring_dtype):
    state = mt.mac_state_alloc(3, 16, 8, 64, ring_dtype)
    assert state.qring.shape == state.oring.shape == (3, 16, 8, 64) and state.qring.dtype == ring_dtype
    assert state.lring.shape == (3, 16, 8) and state.lring.dtype == torch.float32
    assert state.position.dtype == torch.int64 and state.ready.dtype == torch.uint8
    assert torch.all(state.lring == NEG_INF) and torch.all(state.qring == 0) and state.ready.sum() == 0
    state.qring.fill_(1)
    state.lring.fill_(2)
    state.position.fill_(7)
    state.ready.fill_(1)
    mt.mac_state_reset(state)
    assert torch.all(state.lring == NEG_INF) and torch.all(state.qring == 0) and torch.all(state.oring == 0)
    assert state.position.sum() == 0 and state.ready.sum() == 0
