"""PyTorch ops for macattn: MAC-Attention (Match-Amend-Complete) decode attention.

The ops live in ``torch.ops.macattn`` (CPU through the library's fast CPU backend, CUDA
through macattn::cuda, Meta for torch.compile / FakeTensor); this module wraps them with
small Python types:

- :class:`PagedKV`: a paged K/V cache in FlashInfer's page table. Build one from FlashInfer's
  arguments (:func:`paged_kv_flashinfer`) or from vLLM's ``(num_blocks, 2, block_size, Hkv, D)``
  cache and block table (:func:`paged_kv_vllm`).
- :class:`MacState`: the batched MAC rings of one layer (:func:`mac_state_alloc`).
- :func:`exact_decode`, :func:`mac_decode`, :func:`mac_prefill_init`, :func:`mac_state_reset`.

Shapes: q, q_pre, out ``[B, Hq, D]``; lse ``[B, Hq]`` float32, natural log.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple, Union

import torch

from . import _C  # noqa: F401  (registers torch.ops.macattn)
from . import _fake  # noqa: F401  (fake kernels for torch.compile)

ops = torch.ops.macattn

__all__ = [
    "PagedKV", "MacConfig", "MacState", "MacStats", "paged_kv_flashinfer", "paged_kv_vllm",
    "exact_decode", "mac_decode", "mac_prefill_init", "mac_state_alloc", "mac_state_reset",
    "reserve_cuda_workspace", "build_info",
]


@dataclass(frozen=True)
class PagedKV:
    """A paged K/V cache with FlashInfer's page table.

    k_pages, v_pages: ``[num_pages, page_size, Hkv, D]`` (layout "NHD") or
    ``[num_pages, Hkv, page_size, D]`` ("HND"). Pages must be contiguous; the page stride may be a
    whole multiple of the page (vLLM's interleaved K/V blocks are views with stride 2 pages).
    indptr ``[B+1]``, indices ``[n]``, last_page_len ``[B]``: int32 on the cache's device;
    sequence b owns pages ``indices[indptr[b]:indptr[b+1]]``, all full but the last.
    """

    k_pages: torch.Tensor
    v_pages: torch.Tensor
    indptr: torch.Tensor
    indices: torch.Tensor
    last_page_len: torch.Tensor
    layout: str = "NHD"

    def args(self):
        return (self.k_pages, self.v_pages, self.indptr, self.indices, self.last_page_len)


@dataclass(frozen=True)
class MacConfig:
    """MAC parameters (MAC_ATTENTION.md §3); the window W is the rings' second dimension."""

    rect_offset: int = 256
    tau: float = 0.45
    front_sinks: int = 0
    min_context: int = 2048
    #: With return_stats: whether a miss reports its best row (matched_position) even when that
    #: row is at or over the match threshold, which needs every ring row scanned in full. False:
    #: such a miss reports -1, and the scan may drop rows that cannot be hits after their first
    #: dims, as it always does without stats. Hits, band_len and the output do not change.
    report_miss_matches: bool = True


class MacState(NamedTuple):
    """The MAC rings of B sequences of one layer (macattn::cuda::MacRingsDevice's layout):
    qring, oring ``[B, W, Hq, D]`` (ring dtype), lring ``[B, W, Hq]`` float32, position ``[B]``
    int64, ready ``[B]`` uint8."""

    qring: torch.Tensor
    oring: torch.Tensor
    lring: torch.Tensor
    position: torch.Tensor
    ready: torch.Tensor

    @property
    def window(self) -> int:
        return self.qring.shape[1]

    def invalidate(self) -> None:
        """Marks every ring stale: the next step wipes it and misses until it refills."""
        self.ready.zero_()


class MacStats(NamedTuple):
    """Per-head decisions of one MAC step, ``[B, Hq]`` each."""

    hit: torch.Tensor  # uint8, 1 = the ring entry was reused
    matched_position: torch.Tensor  # int64, best candidate position (-1 if none scanned)
    band_len: torch.Tensor  # int32, keys recomputed in the band (hits), 0 for misses


def paged_kv_flashinfer(paged_kv_cache: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]],
                        indptr: torch.Tensor, indices: torch.Tensor, last_page_len: torch.Tensor,
                        layout: str = "NHD") -> PagedKV:
    """FlashInfer's arguments: ``paged_kv_cache`` is a (k, v) tuple or one tensor
    ``[num_pages, 2, ...]`` (K at [:, 0], V at [:, 1])."""
    if isinstance(paged_kv_cache, torch.Tensor):
        if paged_kv_cache.dim() != 5 or paged_kv_cache.shape[1] != 2:
            raise ValueError("macattn: a single paged_kv_cache tensor must be [num_pages, 2, ...], got shape "
                             f"{tuple(paged_kv_cache.shape)}")
        k, v = paged_kv_cache[:, 0], paged_kv_cache[:, 1]
    else:
        k, v = paged_kv_cache
    return PagedKV(k, v, indptr, indices, last_page_len, layout)


def paged_kv_vllm(kv_cache: torch.Tensor, block_table: torch.Tensor, seq_lens: torch.Tensor) -> PagedKV:
    """vLLM's cache ``(num_blocks, 2, block_size, Hkv, D)`` with ``block_table [B, max_blocks]``
    and ``seq_lens [B]`` (tokens per sequence, including the current one).

    No copy of the cache: K and V are strided views (page stride 2 blocks), which the ops pass to
    the library as a page table of twice as many pages with the indices doubled. The page table
    is built with fixed-shape tensor ops on the cache's device (no host synchronisation, so it
    can be captured in a CUDA graph); ``indices`` keeps B*max_blocks entries, of which the first
    ``indptr[B]`` are used.
    """
    if kv_cache.dim() != 5 or kv_cache.shape[1] != 2:
        raise ValueError("macattn: vLLM kv_cache must be (num_blocks, 2, block_size, Hkv, D), got shape "
                         f"{tuple(kv_cache.shape)}")
    if block_table.dim() != 2 or seq_lens.dim() != 1 or seq_lens.shape[0] != block_table.shape[0]:
        raise ValueError(f"macattn: block_table {tuple(block_table.shape)} must be [B, max_blocks] and seq_lens "
                         f"{tuple(seq_lens.shape)} [B]")
    block_size = kv_cache.shape[2]
    b, max_blocks = block_table.shape
    dev = kv_cache.device
    seq_lens = seq_lens.to(device=dev, dtype=torch.int64)
    pages = (seq_lens + block_size - 1) // block_size
    indptr = torch.zeros(b + 1, dtype=torch.int64, device=dev)
    indptr[1:] = torch.cumsum(pages, 0)
    j = torch.arange(max_blocks, device=dev)
    dest = torch.where(j[None, :] < pages[:, None], indptr[:-1, None] + j[None, :], b * max_blocks)
    flat = torch.zeros(b * max_blocks + 1, dtype=torch.int32, device=dev)
    flat.scatter_(0, dest.reshape(-1), block_table.to(device=dev, dtype=torch.int32).reshape(-1))
    last = torch.where(pages > 0, seq_lens - (pages - 1) * block_size, torch.zeros_like(seq_lens))
    return PagedKV(kv_cache[:, 0], kv_cache[:, 1], indptr.to(torch.int32), flat[:-1], last.to(torch.int32), "NHD")


def exact_decode(q: torch.Tensor, kv: PagedKV, softmax_scale: float = 0.0,
                 max_seq_len: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact decode attention: returns (out ``[B, Hq, D]``, lse ``[B, Hq]``). softmax_scale 0
    means 1/sqrt(D). max_seq_len (CUDA only): a bound on every sequence length that sizes the
    split-KV grid; by default every listed page is assumed full."""
    return ops.exact_decode(q, *kv.args(), kv.layout, softmax_scale, max_seq_len)


def mac_decode(q: torch.Tensor, q_pre: torch.Tensor, kv: PagedKV, state: MacState,
               config: MacConfig = MacConfig(), softmax_scale: float = 0.0, return_stats: bool = False,
               max_seq_len: Optional[int] = None):
    """One MAC decode step (MAC_ATTENTION.md §5) on post-RoPE q and pre-RoPE q_pre; updates the
    rings in place. Returns (out, lse) or (out, lse, MacStats) with return_stats."""
    out, lse, hit, matched, band = ops.mac_decode(
        q, q_pre, *kv.args(), *state, kv.layout, softmax_scale, config.rect_offset, config.tau,
        config.front_sinks, config.min_context, return_stats, max_seq_len, config.report_miss_matches)
    return (out, lse, MacStats(hit, matched, band)) if return_stats else (out, lse)


def mac_prefill_init(q: torch.Tensor, q_pre: torch.Tensor, kv: PagedKV, row_indptr: torch.Tensor,
                     state: MacState, config: MacConfig = MacConfig(), softmax_scale: float = 0.0,
                     max_rows_per_seq: Optional[int] = None) -> None:
    """Writes the ring rows of the last W prompt positions (MAC_ATTENTION.md §6). q, q_pre:
    ``[row_indptr[B], Hq, D]``, sequence b's rows are the positions [P_b - n_b, P_b)."""
    ops.mac_prefill_init(q, q_pre, *kv.args(), row_indptr, *state, kv.layout, softmax_scale,
                         config.rect_offset, config.front_sinks, max_rows_per_seq)


def mac_state_alloc(batch_size: int, window: int, num_q_heads: int, head_dim: int,
                    ring_dtype: torch.dtype = torch.bfloat16, device="cpu") -> MacState:
    """Allocates wiped, not-ready rings (a step on them misses until they refill)."""
    return MacState(*ops.mac_state_alloc(batch_size, window, num_q_heads, head_dim, ring_dtype,
                                         torch.device(device)))


def mac_state_reset(state: MacState) -> None:
    """Wipes every ring: lring = -inf, qring = oring = 0, position = 0, ready = 0."""
    ops.mac_state_reset(*state)


def reserve_cuda_workspace(device: int, num_q_heads: int, num_kv_heads: int, head_dim: int,
                           batch_size: int, max_seq_len: int, window: int = 512) -> None:
    """Sizes the device's scratch for the largest call; required before CUDA-graph capture."""
    if not hasattr(ops, "reserve_cuda_workspace"):
        raise RuntimeError("macattn_torch was built without CUDA: " + ops.build_info())
    ops.reserve_cuda_workspace(device, num_q_heads, num_kv_heads, head_dim, batch_size, max_seq_len, window)


def build_info() -> str:
    """Library version, CPU ISA, and whether the CUDA kernels are in this build."""
    return ops.build_info()
