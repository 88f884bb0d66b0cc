// Fast MAC decode (MAC_ATTENTION.md §5) in five phases:
//   1. match: (sequence, range of heads) tasks scan the ring in memory order (kernels.scan,
//      exact pruning);
//   2. one pass of exact attention per group over the union of its heads' bands (a group
//      with a miss streams its whole prefix once; hit heads are masked to their own band),
//      together with the tail and the sinks, in one parallel region;
//   3. ring write: entry(t) = reused (+) band (or the exact prefix), stored with q_pre;
//   4. complete: entry (+) tail (+) sinks;
//   5. stats.
// Decisions are those of the reference backend bit for bit (same distance order, same rule).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/accounting.hpp"
#include "core/merge.hpp"
#include "core/ring_row.hpp"
#include "cpu/fast/attend_groups.hpp"
#include "cpu/fast/fast.hpp"
#include "cpu/fast/isa.hpp"
#include "cpu/fast/queries.hpp"
#include "cpu/reference/reference.hpp"

namespace macattn::cpu {

void mac_decode(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv, ConstTensor q_post,
                ConstTensor q_pre, std::span<const MacStateView> states, Tensor out, float* lse,
                HeadStats* head_stats, StepStats* step_stats) {
  const KernelTable& kernels = active_kernels();
  if (!kernels.supports(kv.dtype(), shape.head_dim))
    return reference::mac_decode(shape, config, kv, q_post, q_pre, states, out, lse, head_stats, step_stats);
  const std::int32_t hq = shape.num_q_heads, d = shape.head_dim, group = shape.group_size();
  const std::int32_t w = config.window, f = config.front_sinks;
  const std::int32_t batch = kv.batch_size();
  const std::size_t n_heads = static_cast<std::size_t>(batch) * static_cast<std::size_t>(hq);
  const auto du = static_cast<std::size_t>(d);
  const std::vector<float> qpost = widen(q_post, n_heads * du);
  const std::vector<float> qpre = widen(q_pre, n_heads * du);
  const float threshold = config.threshold(d);
  const int threads = thread_count();

  StepStats totals;
  std::vector<std::int64_t> t_of(static_cast<std::size_t>(batch)), new_end_of(t_of.size());
  for (std::int32_t b = 0; b < batch; ++b) {
    const std::int64_t t = kv.seq_len(b) - 1;
    const MacStateView& ring = states[static_cast<std::size_t>(b)];
    if (*ring.ready == 0 || *ring.position != t) {
      mac_state_wipe(ring, t);
      ++totals.ring_wipes;
    }
    t_of[static_cast<std::size_t>(b)] = t;
    new_end_of[static_cast<std::size_t>(b)] = entry_end(t, config.rect_offset);
  }

  // 1. Match: tasks of (sequence, range of positions), each walking its slots newest first with
  // every head inside (the ring in memory order). At batch 1 the positions are split so that
  // both threads have work: split by heads instead, each thread read part of every slot, and
  // two threads scanned a ring more slowly than one (110-128 us vs 141-155 us for a bf16 ring
  // of W = 512 and 32 heads, scratch harness, cold ring); split by positions each reads whole
  // slots.
  // Without per-head stats (or with report_miss_matches false) nobody sees the best row of a
  // miss, so rows that cannot be hits (distance >= threshold) stop after their first dims: a
  // miss then costs a fraction of a full scan. The hit/miss decision, the matched row of a hit
  // and the output do not change.
  const float scan_bound =
      head_stats && config.report_miss_matches ? std::numeric_limits<float>::infinity() : threshold;
  const std::int32_t parts = std::clamp<std::int32_t>((2 * threads + batch - 1) / batch, 1, 8);
  // Part k's best rows at found[k * n_heads ...]; part 0 holds the newest positions.
  std::vector<ScanResult> found(static_cast<std::size_t>(parts) * n_heads,
                                ScanResult{-1, std::numeric_limits<float>::infinity()});
  const std::int64_t n_tasks = static_cast<std::int64_t>(batch) * parts;
  const bool parallel_scan = threads > 1 && n_tasks > 1 && n_heads * static_cast<std::size_t>(w) >= 8192;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel_scan)
  for (std::int64_t task = 0; task < n_tasks; ++task) {
    const auto b = static_cast<std::size_t>(task / parts);
    const auto part = static_cast<std::int32_t>(task % parts);
    const std::int64_t t = t_of[b];
    if (t < config.min_context) continue;
    const std::int64_t first = std::max<std::int64_t>(0, t - w), len = (t - first + parts - 1) / parts;
    const std::int64_t hi = std::max(first, t - len * part), lo = std::max(first, t - len * (part + 1));
    kernels.scan({states[b].qring, states[b].ring_dtype, w, hq, d, 0, hq, qpre.data() + b * static_cast<std::size_t>(hq) * du,
                  lo, hi, scan_bound,
                  found.data() + static_cast<std::size_t>(part) * n_heads + b * static_cast<std::size_t>(hq)});
  }
  // The parts' bests, newest part first: an older part's row replaces the best when it is at
  // least as close, as in one walk newest first ('<=' keeps the oldest of equals). Every part
  // reports only rows under the bound, and its pruning against its own best never drops a row
  // that is at least as close as every row of its part, so this is the walk's result exactly.
  for (std::int32_t k = 1; k < parts; ++k)
    for (std::size_t i = 0; i < n_heads; ++i) {
      const ScanResult& older = found[static_cast<std::size_t>(k) * n_heads + i];
      if (older.position >= 0 && older.distance <= found[i].distance) found[i] = older;
    }
  std::vector<detail::HeadDecision> dec(n_heads);
  for (std::size_t i = 0; i < n_heads; ++i) {
    const std::size_t b = i / static_cast<std::size_t>(hq), h = i % static_cast<std::size_t>(hq);
    detail::HeadDecision& x = dec[i];
    x.matched_position = found[i].position;
    x.distance = found[i].distance;
    const float l_m = x.matched_position < 0
                          ? 0.0f
                          : states[b].lring[detail::ring_row(states[b], x.matched_position % w, h)];
    x.hit = detail::is_hit(x.matched_position, x.distance, l_m, threshold, new_end_of[b], config);
    x.start = x.hit ? entry_end(x.matched_position, config.rect_offset) : std::min<std::int64_t>(f, new_end_of[b]);
  }

  // 2. One pass of exact attention for everything the step needs, so that all of it shares
  // one parallel region and one split into key chunks: per group, the entry range (bands of
  // hit heads, the prefix of miss heads), the tail [new_end, t+1) and the sinks [0, min(F,
  // start)). States: entry at [0, n), tail at [n, 2n), sinks at [2n, 3n).
  enum Part : std::size_t { kEntry = 0, kTail = 1, kSinks = 2 };
  std::vector<std::int64_t> begin(3 * n_heads), end(3 * n_heads);
  for (std::size_t i = 0; i < n_heads; ++i) {
    const std::size_t b = i / static_cast<std::size_t>(hq);
    begin[kEntry * n_heads + i] = dec[i].start;
    end[kEntry * n_heads + i] = new_end_of[b];
    begin[kTail * n_heads + i] = new_end_of[b];
    end[kTail * n_heads + i] = t_of[b] + 1;
    begin[kSinks * n_heads + i] = 0;
    end[kSinks * n_heads + i] = std::min<std::int64_t>(f, dec[i].start);
  }
  std::vector<GroupWork> works;
  for (const std::size_t part : {kEntry, kTail, kSinks})
    for (std::int32_t b = 0; b < batch; ++b)
      for (std::int32_t g = 0; g < shape.num_kv_heads; ++g) {
        const std::size_t head0 = static_cast<std::size_t>(b) * static_cast<std::size_t>(hq) + static_cast<std::size_t>(g * group);
        const std::size_t first = part * n_heads + head0;
        std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = 0;
        for (std::size_t i = first; i < first + static_cast<std::size_t>(group); ++i) {
          lo = std::min(lo, begin[i]);
          hi = std::max(hi, end[i]);
        }
        if (hi > lo)
          works.push_back({b, g, qpost.data() + head0 * du, group, begin.data() + first, end.data() + first, lo, hi, first});
      }
  Partials pieces(3 * n_heads, d);
  attend_groups(kernels, kv, works, shape.scale(), pieces);

  // 3. entry(t) = reused (+) band, or the exact prefix; the ring write.
  std::vector<float> entry_o(n_heads * du), entry_lse(n_heads);
  std::vector<float> reused(du);
  for (std::size_t iu = 0; iu < n_heads; ++iu) {
    const auto b = iu / static_cast<std::size_t>(hq);
    const auto h = iu % static_cast<std::size_t>(hq);
    const MacStateView& ring = states[b];
    float* eo = entry_o.data() + iu * du;
    finish_partial(d, pieces.m[iu], pieces.l[iu], pieces.o_at(iu), eo, &entry_lse[iu]);
    if (dec[iu].hit) {
      const std::size_t m_row = detail::ring_row(ring, dec[iu].matched_position % w, h);
      detail::read_ring_output(ring, m_row, reused.data());
      detail::merge_state(d, reused.data(), ring.lring[m_row], eo, entry_lse[iu], eo, &entry_lse[iu]);
    }
    detail::write_ring_row(ring, detail::ring_row(ring, t_of[b] % w, h), qpre.data() + iu * du, eo, entry_lse[iu]);
  }

  // 4. Complete: entry (+) tail (+) sinks.
  std::vector<float> row(du);
  for (std::size_t i = 0; i < n_heads; ++i) {
    const std::size_t tail = kTail * n_heads + i, sinks = kSinks * n_heads + i;
    combine_partial(d, pieces.m[tail], pieces.l[tail], pieces.o_at(tail), pieces.m[sinks], pieces.l[sinks], pieces.o_at(sinks));
    float rest_lse, out_lse;
    finish_partial(d, pieces.m[tail], pieces.l[tail], pieces.o_at(tail), row.data(), &rest_lse);
    detail::merge_state(d, entry_o.data() + i * du, entry_lse[i], row.data(), rest_lse, row.data(), &out_lse);
    narrow(out, i * du, row.data(), du);
    if (lse) lse[i] = out_lse;
  }

  // 5. Stats and positions.
  for (std::int32_t b = 0; b < batch; ++b) {
    const auto bu = static_cast<std::size_t>(b);
    for (std::int32_t g = 0; g < shape.num_kv_heads; ++g) {
      const std::size_t first = bu * static_cast<std::size_t>(hq) + static_cast<std::size_t>(g * group);
      detail::account_group(dec.data() + first, group, t_of[bu], new_end_of[bu], f,
                            head_stats ? head_stats + first : nullptr, totals);
    }
    *states[bu].position = t_of[bu] + 1;
  }
  if (step_stats) *step_stats = totals;
}

}  // namespace macattn::cpu
