// MAC decode, one step per sequence, written to read like MAC_ATTENTION.md §5:
// match (scan the ring on pre-RoPE queries), amend (reuse + exact band, or exact prefix),
// ring write, complete (sinks + tail).
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/accounting.hpp"
#include "core/distance.hpp"
#include "core/merge.hpp"
#include "core/ring_row.hpp"
#include "cpu/reference/attend.hpp"
#include "cpu/reference/reference.hpp"

namespace macattn::reference {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Match {
  std::int64_t position = -1;  // best candidate, -1 if none was scanned
  float distance = kInf;
};

/// Best ring candidate of head h for step t: smallest squared L2 distance between q_pre and
/// the ring's pre-RoPE rows of positions [max(0, t-W), t) (core/distance.hpp fixes the fp32
/// summation order so every backend decides alike); a strict
/// '<' while walking from the oldest position keeps the oldest of equal distances.
Match scan_ring(const MacStateView& ring, std::int32_t h, const float* q_pre, std::int64_t t) {
  Match best;
  const std::int32_t d = ring.head_dim;
  std::vector<float> row(static_cast<std::size_t>(d));
  for (std::int64_t p = std::max<std::int64_t>(0, t - ring.window); p < t; ++p) {
    const std::size_t slot = static_cast<std::size_t>(p % ring.window);
    load_row(ring.qring, ring.ring_dtype, slot * static_cast<std::size_t>(ring.num_q_heads) + static_cast<std::size_t>(h),
             d, row.data());
    const float dist = detail::match_distance(q_pre, row.data(), d);
    if (dist < best.distance) best = {p, dist};
  }
  return best;
}

}  // namespace

void mac_decode(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv, ConstTensor q_post,
                ConstTensor q_pre, std::span<const MacStateView> states, Tensor out, float* lse,
                HeadStats* head_stats, StepStats* step_stats) {
  const std::int32_t hq = shape.num_q_heads, d = shape.head_dim, group = shape.group_size();
  const std::int32_t w = config.window, f = config.front_sinks;
  const float scale = shape.scale(), threshold = config.threshold(d);
  StepStats totals;
  std::vector<float> qpost(static_cast<std::size_t>(d)), qpre(static_cast<std::size_t>(d));
  State reused(d);

  for (std::int32_t b = 0; b < kv.batch_size(); ++b) {
    const MacStateView& ring = states[static_cast<std::size_t>(b)];
    const std::int64_t t = kv.seq_len(b) - 1;  // >= 0, checked by dispatch
    if (*ring.ready == 0 || *ring.position != t) {  // stale: start over, misses until it refills
      mac_state_wipe(ring, t);
      ++totals.ring_wipes;
    }
    const std::int64_t new_end = entry_end(t, config.rect_offset);
    const std::size_t write_slot = static_cast<std::size_t>(t % w);

    for (std::int32_t g = 0; g < shape.num_kv_heads; ++g) {
      std::vector<detail::HeadDecision> decisions(static_cast<std::size_t>(group));
      for (std::int32_t h = g * group; h < (g + 1) * group; ++h) {
        const std::size_t qrow = static_cast<std::size_t>(b) * static_cast<std::size_t>(hq) + static_cast<std::size_t>(h);
        load_row(q_post.data, q_post.dtype, qrow, d, qpost.data());
        load_row(q_pre.data, q_pre.dtype, qrow, d, qpre.data());

        // Match. The ring is read before this step writes slot t mod W (which may hold t-W).
        Match m;
        if (t >= config.min_context) m = scan_ring(ring, h, qpre.data(), t);
        if (!config.report_miss_matches && !(m.distance < threshold)) m = Match{};  // never a hit: not reported
        const std::size_t m_row =
            m.position < 0 ? 0 : detail::ring_row(ring, m.position % w, static_cast<std::size_t>(h));
        const bool hit =
            detail::is_hit(m.position, m.distance, m.position < 0 ? 0.0f : ring.lring[m_row], threshold, new_end, config);

        // Amend: entry(t) = reused prefix (+) exact band, or the exact prefix on a miss.
        std::int64_t start;  // first key of entry(t)
        State entry(d);
        if (hit) {
          start = entry_end(m.position, config.rect_offset);
          detail::read_ring_output(ring, m_row, reused.o.data());
          reused.lse = ring.lring[m_row];
          const State band = attend(kv, b, g, qpost.data(), scale, start, new_end);
          detail::merge_state(d, reused.o.data(), reused.lse, band.o.data(), band.lse, entry.o.data(), &entry.lse);
        } else {
          start = std::min<std::int64_t>(f, new_end);
          entry = attend(kv, b, g, qpost.data(), scale, start, new_end);
        }

        // Ring write, every step and head, before sinks and tail are added.
        detail::write_ring_row(ring, detail::ring_row(ring, write_slot, static_cast<std::size_t>(h)), qpre.data(),
                               entry.o.data(), entry.lse);

        // Complete: (+) sinks [0, min(F, start)) (+) tail [new_end, t+1).
        State result = entry;
        if (f > 0) {
          const State sink = attend(kv, b, g, qpost.data(), scale, 0, std::min<std::int64_t>(f, start));
          detail::merge_state(d, result.o.data(), result.lse, sink.o.data(), sink.lse, result.o.data(), &result.lse);
        }
        const State tail = attend(kv, b, g, qpost.data(), scale, new_end, t + 1);
        detail::merge_state(d, result.o.data(), result.lse, tail.o.data(), tail.lse, result.o.data(), &result.lse);
        store_row(out.data, out.dtype, qrow, d, result.o.data());
        if (lse) lse[qrow] = result.lse;
        decisions[static_cast<std::size_t>(h - g * group)] = {m.position, m.distance, hit, start};
      }
      const std::size_t first = static_cast<std::size_t>(b) * static_cast<std::size_t>(hq) + static_cast<std::size_t>(g * group);
      detail::account_group(decisions.data(), group, t, new_end, f, head_stats ? head_stats + first : nullptr, totals);
    }
    *ring.position = t + 1;
  }
  if (step_stats) *step_stats = totals;
}

}  // namespace macattn::reference
