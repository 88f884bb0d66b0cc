// src/cpu/reference/attend.hpp: exact attention of one query over a key range, the building
// block of every reference path. Internal.
#pragma once

#include <cstdint>
#include <vector>

#include "macattn/dtype.hpp"
#include "macattn/kv_cache.hpp"

namespace macattn::reference {

/// A D-vector attention state: o normalised, lse natural log; the empty state is (0, -inf).
struct State {
  std::vector<float> o;
  float lse;
  explicit State(std::int32_t head_dim);
};

/// Attention of q (D floats, post-RoPE) over keys [begin, end) of sequence b, KV head g:
/// s_j = scale * q.k_j accumulated in fp32; two passes (max, then exp-sum and weighted V).
/// An empty range gives the empty state.
State attend(const KVCacheView& kv, std::int32_t b, std::int32_t kv_head, const float* q, float scale,
             std::int64_t begin, std::int64_t end);

/// Row i (D elements) of a [rows, D] buffer of dtype, converted to fp32.
void load_row(const void* data, DType dtype, std::size_t row, std::int32_t head_dim, float* dst);
/// Writes D floats into row i of a [rows, D] buffer of dtype (rounded to nearest even).
void store_row(void* data, DType dtype, std::size_t row, std::int32_t head_dim, const float* src);

}  // namespace macattn::reference
