"""Fake (Meta / FakeTensor) kernels of the macattn ops: output shapes and dtypes only, written
with torch's symbolic shapes in mind, so the ops trace under torch.compile (also with dynamic
shapes). CUDA-graph capture itself needs no fake kernel: the CUDA kernels never sync the host.

They check what can be checked without data (ranks, matching dims, devices) with the messages
of the real kernels; the real kernels check everything again."""
import torch

LAYOUTS = ("NHD", "HND")


def _same_device(op, q, **tensors):
    for name, t in tensors.items():
        if t.device != q.device:
            raise ValueError(f"macattn.{op}: {name} is on {t.device} but q is on {q.device}")


def _check_common(op, q, k_pages, v_pages, kv_layout):
    if q.dim() != 3:
        raise ValueError(f"macattn.{op}: q must be 3-D [B, Hq, D], got shape {list(q.shape)}")
    if kv_layout not in LAYOUTS:
        raise ValueError(f"macattn.{op}: kv_layout = '{kv_layout}', must be 'NHD' or 'HND'")
    if k_pages.dim() != 4:
        raise ValueError(f"macattn.{op}: k_pages must be 4-D, got shape {list(k_pages.shape)}")
    hkv = k_pages.shape[2] if kv_layout == "NHD" else k_pages.shape[1]
    torch._check(q.shape[2] == k_pages.shape[3],
                 lambda: f"macattn.{op}: q has head dim {q.shape[2]} but the K/V pages have {k_pages.shape[3]}")
    torch._check(q.shape[1] % hkv == 0,
                 lambda: f"macattn.{op}: q has {q.shape[1]} heads, not a multiple of the cache's {hkv} KV heads")


def _outputs(q):
    return torch.empty_like(q, memory_format=torch.contiguous_format), \
        q.new_empty((q.shape[0], q.shape[1]), dtype=torch.float32)


@torch.library.register_fake("macattn::exact_decode")
def _exact_decode(q, k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len, kv_layout="NHD",
                  softmax_scale=0.0, max_seq_len=None):
    _check_common("exact_decode", q, k_pages, v_pages, kv_layout)
    _same_device("exact_decode", q, k_pages=k_pages, v_pages=v_pages, kv_indptr=kv_indptr, kv_indices=kv_indices,
                 kv_last_page_len=kv_last_page_len)
    return _outputs(q)


@torch.library.register_fake("macattn::mac_decode")
def _mac_decode(q, q_pre, k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len, qring, oring, lring, position,
                ready, kv_layout="NHD", softmax_scale=0.0, rect_offset=256, tau=0.45, front_sinks=0,
                min_context=2048, return_stats=False, max_seq_len=None, report_miss_matches=True):
    _check_common("mac_decode", q, k_pages, v_pages, kv_layout)
    _same_device("mac_decode", q, q_pre=q_pre, k_pages=k_pages, v_pages=v_pages, kv_indptr=kv_indptr,
                 kv_indices=kv_indices, kv_last_page_len=kv_last_page_len, qring=qring, oring=oring, lring=lring,
                 position=position, ready=ready)
    if q_pre.shape != q.shape:
        raise ValueError(f"macattn.mac_decode: q_pre has shape {list(q_pre.shape)}, q has {list(q.shape)}")
    out, lse = _outputs(q)
    stat_shape = (q.shape[0], q.shape[1]) if return_stats else (0,)
    return (out, lse, q.new_empty(stat_shape, dtype=torch.uint8), q.new_empty(stat_shape, dtype=torch.int64),
            q.new_empty(stat_shape, dtype=torch.int32))


@torch.library.register_fake("macattn::mac_prefill_init")
def _mac_prefill_init(q, q_pre, k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len, row_indptr, qring, oring,
                      lring, position, ready, kv_layout="NHD", softmax_scale=0.0, rect_offset=256, front_sinks=0,
                      max_rows_per_seq=None):
    _check_common("mac_prefill_init", q, k_pages, v_pages, kv_layout)
    _same_device("mac_prefill_init", q, q_pre=q_pre, k_pages=k_pages, v_pages=v_pages, kv_indptr=kv_indptr,
                 kv_indices=kv_indices, kv_last_page_len=kv_last_page_len, row_indptr=row_indptr, qring=qring,
                 oring=oring, lring=lring, position=position, ready=ready)
    return None


@torch.library.register_fake("macattn::mac_state_reset")
def _mac_state_reset(qring, oring, lring, position, ready):
    return None
