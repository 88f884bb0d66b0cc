// src/cpu/fast/rows.hpp: where the K/V rows of one sequence live, for the kernels. Internal.
#pragma once

#include <cstddef>
#include <cstdint>

#include "macattn/kv_cache.hpp"

namespace macattn::cpu {

/// Finds K/V rows by position: row(j) for KV head 0, plus head_bytes per KV head. Kernels
/// fetch a tile's 16 row pointers through it, so tiles follow key positions, not pages: a
/// paged cache and a contiguous one give bit-identical results.
class RowLocator {
 public:
  explicit RowLocator(const KVCacheView& kv, std::int32_t b) : kv_(kv), b_(b) {
    const std::size_t row_bytes = static_cast<std::size_t>(kv.head_dim()) * dtype_size(kv.dtype());
    paged_ = kv.storage() == KVCacheView::Storage::paged;
    const bool hnd = paged_ && kv.paged_kv().layout == KVLayout::HND;
    head_bytes_ = hnd ? row_bytes * static_cast<std::size_t>(kv.paged_kv().page_size) : row_bytes;
    if (!paged_ && kv.seq_len(b) > 0) {
      k0_ = static_cast<const unsigned char*>(kv.k_row(b, 0, 0));
      v0_ = static_cast<const unsigned char*>(kv.v_row(b, 0, 0));
      stride_ = row_bytes * static_cast<std::size_t>(kv.num_kv_heads());
    }
  }
  std::size_t head_bytes() const { return head_bytes_; }
  const unsigned char* k(std::int64_t j) const {
    return paged_ ? static_cast<const unsigned char*>(kv_.k_row(b_, j, 0)) : k0_ + static_cast<std::size_t>(j) * stride_;
  }
  const unsigned char* v(std::int64_t j) const {
    return paged_ ? static_cast<const unsigned char*>(kv_.v_row(b_, j, 0)) : v0_ + static_cast<std::size_t>(j) * stride_;
  }

 private:
  const KVCacheView& kv_;
  std::int32_t b_;
  bool paged_ = false;
  const unsigned char* k0_ = nullptr;
  const unsigned char* v0_ = nullptr;
  std::size_t stride_ = 0, head_bytes_ = 0;
};

}  // namespace macattn::cpu
