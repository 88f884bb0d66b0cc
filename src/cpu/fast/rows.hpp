// src/cpu/fast/rows.hpp: walks the K/V rows of one (sequence, KV head) over a key range as
// runs of evenly strided rows (one run for a contiguous cache, one per page when paged), so
// kernels index rows with a stride instead of a page lookup per key. Internal.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "macattn/kv_cache.hpp"

namespace macattn::cpu {

struct RowRun {
  const unsigned char* k;    ///< K row of key `first`, KV head 0
  const unsigned char* v;    ///< V row of key `first`, KV head 0
  std::int64_t first;        ///< position of the run's first key
  std::int64_t count;        ///< keys in the run
  std::size_t stride_bytes;  ///< bytes between consecutive keys' rows
  std::size_t head_bytes;    ///< bytes between KV head g and g+1 of one key
};

/// Calls f(RowRun) for consecutive runs covering keys [lo, hi) of sequence b.
template <typename F>
void for_each_row_run(const KVCacheView& kv, std::int32_t b, std::int64_t lo, std::int64_t hi, F&& f) {
  if (hi <= lo) return;
  const std::size_t row_bytes = static_cast<std::size_t>(kv.head_dim()) * dtype_size(kv.dtype());
  if (kv.storage() == KVCacheView::Storage::contiguous) {
    f(RowRun{static_cast<const unsigned char*>(kv.k_row(b, lo, 0)), static_cast<const unsigned char*>(kv.v_row(b, lo, 0)),
             lo, hi - lo, row_bytes * static_cast<std::size_t>(kv.num_kv_heads()), row_bytes});
    return;
  }
  const std::int64_t ps = kv.paged_kv().page_size;
  const bool nhd = kv.paged_kv().layout == KVLayout::NHD;
  const std::size_t stride = nhd ? row_bytes * static_cast<std::size_t>(kv.num_kv_heads()) : row_bytes;
  const std::size_t head = nhd ? row_bytes : row_bytes * static_cast<std::size_t>(ps);
  for (std::int64_t j = lo; j < hi;) {
    const std::int64_t end = std::min(hi, (j / ps + 1) * ps);
    f(RowRun{static_cast<const unsigned char*>(kv.k_row(b, j, 0)), static_cast<const unsigned char*>(kv.v_row(b, j, 0)), j,
             end - j, stride, head});
    j = end;
  }
}

}  // namespace macattn::cpu
