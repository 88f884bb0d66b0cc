"""Bad inputs raise with the bad value named; the Meta kernels give the right shapes; the ops
work under torch.compile(fullgraph=True) and pass torch.library.opcheck."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import macattn_torch as mt
from reference import make_paged

ops = torch.ops.macattn


def setup_case(b=2, hq=8, hkv=2, d=64, window=8):
    pieces = make_paged([40, 19][:b], hkv, d, 16, seed=1)
    kv = mt.PagedKV(*pieces[:5])
    q, q_pre = torch.randn(b, hq, d), torch.randn(b, hq, d)
    state = mt.mac_state_alloc(b, window, hq, d, torch.float32)
    return kv, q, q_pre, state


def replace(kv, **kw):
    args = dict(k_pages=kv.k_pages, v_pages=kv.v_pages, indptr=kv.indptr, indices=kv.indices,
                last_page_len=kv.last_page_len, layout=kv.layout)
    args.update(kw)
    return mt.PagedKV(**args)


# --- bad inputs ----------------------------------------------------------------------------------

BAD_EXACT = [
    ("q int", lambda kv, q: (q.long(), kv), TypeError, "q has dtype Long"),
    ("q 2-D", lambda kv, q: (q[0], kv), ValueError, r"q must be 3-D"),
    ("q strided", lambda kv, q: (q.transpose(0, 1), kv), ValueError, "q must be contiguous"),
    ("head dim", lambda kv, q: (q[..., :32].contiguous(), kv), ValueError, "head dim 32 but the K/V pages have 64"),
    ("heads", lambda kv, q: (q[:, :3].contiguous(), kv), ValueError, "q has 3 heads"),
    ("layout", lambda kv, q: (q, replace(kv, layout="NDH")), ValueError, "kv_layout = 'NDH'"),
    ("indptr int64", lambda kv, q: (q, replace(kv, indptr=kv.indptr.long())), TypeError, "kv_indptr must be Int"),
    ("indptr size", lambda kv, q: (q, replace(kv, indptr=kv.indptr[:2])), ValueError, "kv_indptr has 2 entries"),
    ("last len", lambda kv, q: (q, replace(kv, last_page_len=kv.last_page_len[:1])), ValueError,
     "kv_last_page_len has 1 entries"),
    ("index range", lambda kv, q: (q, replace(kv, indices=kv.indices + 100)), ValueError,
     r"indices\[0\] = 10\d is outside \[0, num_pages = 8\)"),
    ("kv dtypes", lambda kv, q: (q, replace(kv, v_pages=kv.v_pages.half())), TypeError, "v_pages is Half"),
    ("kv 3-D", lambda kv, q: (q, replace(kv, k_pages=kv.k_pages[0], v_pages=kv.v_pages[0])), ValueError,
     "k_pages must be 4-D"),
    ("page not contiguous", lambda kv, q: (q, replace(kv, k_pages=kv.k_pages.transpose(1, 2),
                                                      v_pages=kv.v_pages.transpose(1, 2))), ValueError,
     "each page of k_pages must be contiguous"),
    ("device", lambda kv, q: (q, replace(kv, indices=kv.indices.to("meta"))), ValueError, "kv_indices is on meta"),
]


@pytest.mark.parametrize("name,mutate,exc,match", BAD_EXACT, ids=[c[0] for c in BAD_EXACT])
def test_exact_decode_rejects(name, mutate, exc, match):
    kv, q, _, _ = setup_case()
    q2, kv2 = mutate(kv, q)
    with pytest.raises(exc, match=match):
        mt.exact_decode(q2, kv2)


def test_mac_decode_rejects_bad_rings_and_config():
    kv, q, q_pre, state = setup_case()
    with pytest.raises(ValueError, match=r"qring has shape \[2, 8, 4, 64\]"):
        mt.mac_decode(q, q_pre, kv, state._replace(qring=state.qring[:, :, :4].contiguous()))
    with pytest.raises(TypeError, match="lring must be Float"):
        mt.mac_decode(q, q_pre, kv, state._replace(lring=state.lring.double()))
    with pytest.raises(TypeError, match="oring is Half but qring is Float"):
        mt.mac_decode(q, q_pre, kv, state._replace(oring=state.oring.half()))
    with pytest.raises(TypeError, match="position must be Long"):
        mt.mac_decode(q, q_pre, kv, state._replace(position=state.position.int()))
    with pytest.raises(ValueError, match="tau"):
        mt.mac_decode(q, q_pre, kv, state, mt.MacConfig(tau=1.5))
    with pytest.raises(ValueError, match="rect_offset"):
        mt.mac_decode(q, q_pre, kv, state, mt.MacConfig(rect_offset=0))
    with pytest.raises(TypeError, match="q_pre is BFloat16 but q is Float"):
        mt.mac_decode(q, q_pre.bfloat16(), kv, state)
    with pytest.raises(ValueError, match="q_pre has shape"):
        mt.mac_decode(q, q_pre[:1].contiguous(), kv, state)
    assert state.ready.sum() == 0  # nothing was written by the rejected calls


def test_prefill_and_alloc_reject():
    kv, q, q_pre, state = setup_case()
    with pytest.raises(ValueError, match="row_indptr has 2 entries"):
        mt.mac_prefill_init(q, q_pre, kv, torch.tensor([0, 2], dtype=torch.int32), state)
    with pytest.raises(ValueError, match="window = 0"):
        mt.mac_state_alloc(1, 0, 8, 64)
    with pytest.raises(TypeError, match="ring_dtype"):
        mt.mac_state_alloc(1, 8, 8, 64, torch.int8)
    with pytest.raises(ValueError, match="k_pages is on cpu but q is on meta"):
        ops.mac_prefill_init(q.to("meta"), q_pre.to("meta"), *kv.args(), torch.tensor([0, 1, 2], dtype=torch.int32),
                             *state)


# --- meta / fake ---------------------------------------------------------------------------------

def test_meta_kernels_give_shapes():
    kv, q, q_pre, state = setup_case()
    meta = lambda t: t.to("meta")  # noqa: E731
    kvm = mt.PagedKV(*map(meta, kv.args()))
    sm = mt.MacState(*map(meta, state))
    out, lse = mt.exact_decode(meta(q), kvm)
    assert out.device.type == "meta" and out.shape == q.shape and lse.shape == (2, 8) and lse.dtype == torch.float32
    out, lse, stats = mt.mac_decode(meta(q), meta(q_pre), kvm, sm, return_stats=True)
    assert out.shape == q.shape and stats.hit.shape == (2, 8) and stats.matched_position.dtype == torch.int64
    out, lse = mt.mac_decode(meta(q.bfloat16()), meta(q_pre.bfloat16()), kvm, sm)
    assert out.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="kv_layout"):
        mt.exact_decode(meta(q), replace(kvm, layout="bad"))


def test_fake_tensor_mode():
    kv, q, q_pre, state = setup_case()
    with FakeTensorMode() as mode:
        fq, fpre = mode.from_tensor(q), mode.from_tensor(q_pre)
        fkv = mt.PagedKV(*map(mode.from_tensor, kv.args()))
        fstate = mt.MacState(*map(mode.from_tensor, state))
        out, lse, stats = mt.mac_decode(fq, fpre, fkv, fstate, return_stats=True)
        assert out.shape == (2, 8, 64) and out.device.type == "cpu" and stats.band_len.shape == (2, 8)


@pytest.mark.parametrize("op", ["exact_decode", "mac_decode"])
def test_opcheck(op):
    kv, q, q_pre, state = setup_case()
    if op == "exact_decode":
        torch.library.opcheck(ops.exact_decode.default, (q, *kv.args()))
    else:
        torch.library.opcheck(ops.mac_decode.default, (q, q_pre, *kv.args(), *state),
                              {"min_context": 0, "rect_offset": 4, "return_stats": True})


# --- torch.compile -------------------------------------------------------------------------------

def step(q, q_pre, k, v, indptr, indices, last, qring, oring, lring, position, ready):
    kv = mt.PagedKV(k, v, indptr, indices, last)
    state = mt.MacState(qring, oring, lring, position, ready)
    exact_out, _ = mt.exact_decode(q, kv)
    mac_out, mac_lse = mt.mac_decode(q, q_pre, kv, state, mt.MacConfig(4, 0.45, 0, 0))
    return exact_out * 2 - mac_out, mac_lse


def test_torch_compile_fullgraph_matches_eager():
    kv, q, q_pre, state = setup_case()
    eager_state = mt.MacState(*(t.clone() for t in state))
    compiled = torch.compile(step, fullgraph=True)
    for i in range(3):  # the rings advance in place under both
        q_i, pre_i = q + i, q_pre + 0.01 * i
        got = compiled(q_i, pre_i, *kv.args(), *state)
        want = step(q_i, pre_i, *kv.args(), *eager_state)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-6)
        kv = replace(kv, last_page_len=kv.last_page_len)  # same cache; the sequence does not grow
        for g, w in zip(state, eager_state):
            torch.testing.assert_close(g, w, atol=0, rtol=0)
    assert state.ready.tolist() == [1, 1]


def test_torch_compile_dynamic_shapes():
    """Symbolic batch and length: the fake kernels must not specialise them."""
    compiled = torch.compile(lambda q, *kv: mt.exact_decode(q, mt.PagedKV(*kv))[0] + 1, fullgraph=True, dynamic=True)
    for b, lengths in ((2, [40, 19]), (3, [5, 70, 33])):
        pieces = make_paged(lengths, 2, 64, 16, seed=b)
        q = torch.randn(b, 8, 64)
        torch.testing.assert_close(compiled(q, *pieces[:5]), mt.exact_decode(q, mt.PagedKV(*pieces[:5]))[0] + 1)


def test_torch_compile_state_alloc():
    def fresh(b: int):
        return mt.mac_state_alloc(b, 4, 2, 32, torch.float32)

    state = torch.compile(fresh, fullgraph=True)(3)
    assert state.lring.shape == (3, 4, 2) and torch.all(state.lring == float("-inf")) and state.ready.sum() == 0
