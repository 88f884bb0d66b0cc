// python/csrc/common.hpp: argument checks shared by the CPU, CUDA and Meta kernels of the
// macattn torch ops, and the conversion of torch tensors into the library's views.
//
// Every check raises with the op's name, the argument's name and the bad value
// ("macattn.exact_decode: q must be 3-D [B, Hq, D], got shape [2, 32]").
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstdint>
#include <string>
#include <vector>

#include "macattn/attention.hpp"
#include "macattn/error.hpp"

namespace macattn_torch {

/// f32 / f16 / bf16 tensors map to the library's DType; anything else raises TypeError.
macattn::DType to_dtype(const char* op, const char* name, const at::Tensor& t);
at::ScalarType to_scalar_type(macattn::DType dtype);

/// Raises unless t is defined, has `dim` dimensions, lives on `device` and is contiguous.
void check_tensor(const char* op, const char* name, const at::Tensor& t, int64_t dim, const at::Device& device);
void check_scalar_type(const char* op, const char* name, const at::Tensor& t, at::ScalarType want);
/// q (and q_pre when non-null, same shape and dtype): [B, Hq, D] on q's device; returns q's dtype.
macattn::DType check_queries(const char* op, const at::Tensor& q, const at::Tensor* q_pre);

/// A paged K/V cache in FlashInfer's page table, from torch tensors.
///
/// k_pages, v_pages: [num_pages, page_size, Hkv, D] (NHD) or [num_pages, Hkv, page_size, D] (HND).
/// Each page must be contiguous; the page stride may be any whole multiple s of the page size,
/// the same for K and V. s > 1 covers caches whose pages interleave with other data, e.g. vLLM's
/// `(num_blocks, 2, block_size, Hkv, D)` passed as k = cache[:, 0], v = cache[:, 1] (s = 2): the
/// library's page table then sees s times as many pages of the plain size, and page i of the
/// caller is page i*s there (the indices are scaled by one elementwise op on their device).
/// kv_indptr: [B+1] int32, kv_indices: [n] int32, kv_last_page_len: [B] int32, all on `device`
/// (a meta device checks shapes only).
struct PagedArgs {
  macattn::PagedKV paged;  // pointers on q's device
  macattn::DType dtype = macattn::DType::bf16;
  int32_t batch_size = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t page_size = 0;
  int64_t page_stride_factor = 1;  // s above
  int64_t caller_indices = 0;      // kv_indices.numel() as the caller passed it
  at::Tensor indices;              // the (possibly scaled) indices the view points into
};
PagedArgs parse_paged(const char* op, const at::Device& device, int64_t batch, const at::Tensor& k_pages,
                      const at::Tensor& v_pages, const at::Tensor& kv_indptr, const at::Tensor& kv_indices,
                      const at::Tensor& kv_last_page_len, const std::string& kv_layout);

/// The attention shape of q [B, Hq, D] over the cache; raises on a head-dim mismatch.
macattn::AttentionShape make_shape(const char* op, const at::Tensor& q, const PagedArgs& kv, double softmax_scale);

/// Checks the batched MAC rings (the layout of macattn::cuda::MacRingsDevice):
///   qring, oring: [B, W, Hq, D] of one ring dtype (f32/f16/bf16); lring: [B, W, Hq] f32;
///   position: [B] int64; ready: [B] uint8; all contiguous, on `device`.
/// Returns W.
int32_t check_rings(const char* op, const at::Tensor& qring, const at::Tensor& oring, const at::Tensor& lring,
                    const at::Tensor& position, const at::Tensor& ready, int64_t batch, int64_t num_q_heads,
                    int64_t head_dim, const at::Device& device);

/// Per-sequence views into the batched rings (each sequence's rows are one [W, Hq, D] slice).
std::vector<macattn::MacStateView> ring_views(const at::Tensor& qring, const at::Tensor& oring, at::Tensor& lring,
                                              at::Tensor& position, at::Tensor& ready);

macattn::MacConfig make_config(const char* op, int64_t window, int64_t rect_offset, double tau, int64_t front_sinks,
                               int64_t min_context);

/// Runs f, turning a macattn::Error into a ValueError prefixed with the op's name.
template <class F>
auto call_library(const char* op, F&& f) {
  try {
    return f();
  } catch (const macattn::Error& e) {
    TORCH_CHECK_VALUE(false, "macattn.", op, ": ", e.what());
  }
}

/// The MAC decode outputs: out, lse, and (when stats are asked for) hit [B, Hq] uint8,
/// matched_position [B, Hq] int64, band_len [B, Hq] int32; empty [0] tensors otherwise.
using MacOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
MacOutputs empty_mac_outputs(const at::Tensor& q, bool return_stats);

}  // namespace macattn_torch
