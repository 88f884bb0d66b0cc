// engine/paged_kv_cache.hpp: one sequence's K/V cache for every layer, in the library's
// paged layout (FlashInfer page table, NHD pages), so decode hands it to exact_decode /
// mac_decode as it is.
//
// Memory: each layer's K and V live in one reserved (not committed) virtual range of
// capacity tokens; the OS commits pages as positions are written, so a large max_context
// costs address space, not RAM. Pages are used in order (page i holds positions
// [i*page_size, (i+1)*page_size)); the page table is shared by all layers.
#pragma once

#include <cstdint>
#include <vector>

#include "macattn/dtype.hpp"
#include "macattn/kv_cache.hpp"

namespace macattn::engine {

class PagedKVCache {
 public:
  /// Throws macattn::Error for non-positive sizes, capacity above 2^31 tokens, or when the
  /// address space cannot be reserved.
  PagedKVCache(std::int32_t num_layers, std::int32_t num_kv_heads, std::int32_t head_dim, std::int64_t capacity,
               std::int32_t page_size, DType dtype);
  PagedKVCache(PagedKVCache&&) noexcept;
  PagedKVCache& operator=(PagedKVCache&&) noexcept;
  PagedKVCache(const PagedKVCache&) = delete;
  PagedKVCache& operator=(const PagedKVCache&) = delete;
  ~PagedKVCache();

  /// Writes K and V rows of `n` positions starting at pos into `layer`: k, v: [n, Hkv, D]
  /// fp32, converted to the cache dtype. pos + n <= capacity.
  void write(std::int32_t layer, std::int64_t pos, std::int64_t n, const float* k, const float* v);
  /// A view of the first `length` positions of `layer` (valid until the next set_length
  /// that changes the page table, or destruction).
  KVCacheView view(std::int32_t layer, std::int64_t length);

  std::int64_t capacity() const { return capacity_; }
  DType dtype() const { return dtype_; }
  /// Bytes of K and V over all layers for `length` positions.
  std::size_t bytes_for(std::int64_t length) const;

 private:
  void release();
  std::int32_t num_layers_, num_kv_heads_, head_dim_, page_size_;
  std::int64_t capacity_, num_pages_;
  DType dtype_;
  std::size_t layer_bytes_ = 0;   // bytes of K (or V) of one layer
  std::uint8_t* base_ = nullptr;  // [layers][K, V][num_pages * page bytes]
  std::size_t mapped_bytes_ = 0;
  std::vector<std::int32_t> indices_;  // identity page table
  std::int32_t indptr_[2] = {0, 0};
  std::int32_t last_page_len_[1] = {0};
};

}  // namespace macattn::engine
