// Prefill ring initialisation: each kept row's entry is computed directly as exact attention
// over its prefix [min(F, E(p)), E(p)) -- no subtractive downdate (MAC_ATTENTION.md §6).
#include <algorithm>

#include "core/ring_row.hpp"
#include "cpu/reference/attend.hpp"
#include "cpu/reference/reference.hpp"

namespace macattn::reference {

void prefill_init(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv, ConstTensor q_post,
                  ConstTensor q_pre, std::span<const std::int32_t> row_indptr, std::span<const MacStateView> states) {
  const std::int32_t hq = shape.num_q_heads, d = shape.head_dim, group = shape.group_size();
  const std::int32_t w = config.window;
  std::vector<float> qpost(static_cast<std::size_t>(d)), qpre(static_cast<std::size_t>(d));
  for (std::int32_t b = 0; b < kv.batch_size(); ++b) {
    const MacStateView& ring = states[static_cast<std::size_t>(b)];
    const std::int64_t p_len = kv.seq_len(b);
    const std::int64_t rows = row_indptr[static_cast<std::size_t>(b) + 1] - row_indptr[static_cast<std::size_t>(b)];
    const std::int64_t first = p_len - rows;
    // Keep the previous chunk's rows only if the ring continues exactly where they stop.
    if (*ring.ready == 0 || *ring.position != first) mac_state_wipe(ring, first);
    for (std::int64_t p = std::max(first, p_len - w); p < p_len; ++p) {
      const std::int64_t e = entry_end(p, config.rect_offset);
      const std::int64_t begin = std::min<std::int64_t>(config.front_sinks, e);
      const std::size_t slot = static_cast<std::size_t>(p % w);
      const std::size_t in_row = static_cast<std::size_t>(row_indptr[static_cast<std::size_t>(b)] + (p - first));
      for (std::int32_t h = 0; h < hq; ++h) {
        const std::size_t qrow = in_row * static_cast<std::size_t>(hq) + static_cast<std::size_t>(h);
        load_row(q_post.data, q_post.dtype, qrow, d, qpost.data());
        load_row(q_pre.data, q_pre.dtype, qrow, d, qpre.data());
        const State st = attend(kv, b, h / group, qpost.data(), shape.scale(), begin, e);
        detail::write_ring_row(ring, detail::ring_row(ring, slot, static_cast<std::size_t>(h)), qpre.data(), st.o.data(),
                               st.lse);
      }
    }
    *ring.position = p_len;
    *ring.ready = 1;
  }
}

}  // namespace macattn::reference
