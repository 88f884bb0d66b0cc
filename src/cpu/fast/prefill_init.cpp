// Fast prefill ring initialisation: the kept rows' prefix states, computed directly. The
// rows of one KV head are batched (16 positions x G heads per work) so each K/V row is read
// once per work rather than once per query; per-query masks give each row its own prefix
// [min(F, E(p)), E(p)).
#include <algorithm>
#include <vector>

#include "core/ring_row.hpp"
#include "cpu/fast/attend_groups.hpp"
#include "cpu/fast/fast.hpp"
#include "cpu/fast/isa.hpp"
#include "cpu/reference/reference.hpp"

namespace macattn::cpu {

namespace {
constexpr std::int64_t kRowsPerWork = 16;
}

void prefill_init(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv, ConstTensor q_post,
                  ConstTensor q_pre, std::span<const std::int32_t> row_indptr, std::span<const MacStateView> states) {
  const KernelTable& kernels = active_kernels();
  if (!kernels.supports(kv.dtype(), shape.head_dim))
    return reference::prefill_init(shape, config, kv, q_post, q_pre, row_indptr, states);
  const std::int32_t hq = shape.num_q_heads, d = shape.head_dim, group = shape.group_size();
  const std::int32_t w = config.window;
  const auto du = static_cast<std::size_t>(d);

  // Queries of every kept row, regrouped as [b][g][row][head in group][D] so that a work's
  // queries are contiguous; in_row[k] remembers each state's input row and position.
  struct Slot {
    std::size_t in_row;  // row of q_post/q_pre
    std::int32_t h;
    std::int64_t p;
  };
  std::vector<Slot> slots;
  std::vector<float> q;
  std::vector<std::int64_t> begin, end;
  struct Span {
    std::int32_t b, g;
    std::size_t first;
    std::int64_t rows;
  };
  std::vector<Span> spans;
  for (std::int32_t b = 0; b < kv.batch_size(); ++b) {
    const MacStateView& ring = states[static_cast<std::size_t>(b)];
    const std::int64_t p_len = kv.seq_len(b);
    const std::int64_t first = p_len - (row_indptr[static_cast<std::size_t>(b) + 1] - row_indptr[static_cast<std::size_t>(b)]);
    if (*ring.ready == 0 || *ring.position != first) mac_state_wipe(ring, first);
    const std::int64_t lo = std::max(first, p_len - w);
    for (std::int32_t g = 0; g < shape.num_kv_heads; ++g) {
      spans.push_back({b, g, slots.size(), p_len - lo});
      for (std::int64_t p = lo; p < p_len; ++p) {
        const std::int64_t e = entry_end(p, config.rect_offset);
        const auto in_row = static_cast<std::size_t>(row_indptr[static_cast<std::size_t>(b)] + (p - first));
        for (std::int32_t h = g * group; h < (g + 1) * group; ++h) {
          slots.push_back({in_row, h, p});
          begin.push_back(std::min<std::int64_t>(config.front_sinks, e));
          end.push_back(e);
          const std::size_t src = (in_row * static_cast<std::size_t>(hq) + static_cast<std::size_t>(h)) * du;
          for (std::size_t k = 0; k < du; ++k) q.push_back(load_as_float(q_post.data, q_post.dtype, src + k));
        }
      }
    }
  }

  std::vector<GroupWork> works;
  for (const Span& s : spans) {
    for (std::int64_t r = 0; r < s.rows; r += kRowsPerWork) {
      const std::size_t first = s.first + static_cast<std::size_t>(r * group);
      const auto nq = static_cast<std::int32_t>(std::min(kRowsPerWork, s.rows - r) * group);
      std::int64_t lo = begin[first], hi = 0;
      for (std::size_t i = first; i < first + static_cast<std::size_t>(nq); ++i) {
        lo = std::min(lo, begin[i]);
        hi = std::max(hi, end[i]);
      }
      if (hi > lo) works.push_back({s.b, s.g, q.data() + first * du, nq, begin.data() + first, end.data() + first, lo, hi, first});
    }
  }
  Partials acc(slots.size(), d);
  attend_groups(kernels, kv, works, shape.scale(), acc);

  std::vector<float> row(du), pre(du);
  std::size_t k = 0;
  for (const Span& s : spans) {
    const MacStateView& ring = states[static_cast<std::size_t>(s.b)];
    for (std::int64_t r = 0; r < s.rows * group; ++r, ++k) {
      const Slot& x = slots[k];
      float row_lse;
      finish_partial(d, acc.m[k], acc.l[k], acc.o_at(k), row.data(), &row_lse);
      const std::size_t src = (x.in_row * static_cast<std::size_t>(hq) + static_cast<std::size_t>(x.h)) * du;
      for (std::size_t i = 0; i < du; ++i) pre[i] = load_as_float(q_pre.data, q_pre.dtype, src + i);
      detail::write_ring_row(ring, detail::ring_row(ring, x.p % w, static_cast<std::size_t>(x.h)), pre.data(), row.data(),
                             row_lse);
    }
  }
  for (std::int32_t b = 0; b < kv.batch_size(); ++b) {
    *states[static_cast<std::size_t>(b)].position = kv.seq_len(b);
    *states[static_cast<std::size_t>(b)].ready = 1;
  }
}

}  // namespace macattn::cpu
