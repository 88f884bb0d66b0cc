// src/core/accounting.hpp: per-head stats and per-step totals from MAC decisions, shared by
// every backend so that they count alike. Internal.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "macattn/attention.hpp"

namespace macattn::detail {

/// What one query head decided in one step.
struct HeadDecision {
  std::int64_t matched_position = -1;  ///< best candidate, -1 if none was scanned
  float distance = std::numeric_limits<float>::infinity();
  bool hit = false;
  std::int64_t start = 0;  ///< first key of entry(t): E(m) on a hit, min(F, new_end) on a miss
};

/// Records one GQA group (decisions of its `group` heads, in order) of a sequence at decode
/// position t: fills head_stats[0 .. group) when non-null and adds to totals. A group whose
/// heads all hit reads [min start, t] plus the sinks below it; any miss reads all t+1 keys.
inline void account_group(const HeadDecision* heads, std::int32_t group, std::int64_t t, std::int64_t new_end,
                          std::int32_t front_sinks, HeadStats* head_stats, StepStats& totals) {
  bool all_hit = true;
  std::int64_t min_start = new_end;
  for (std::int32_t i = 0; i < group; ++i) {
    const HeadDecision& x = heads[i];
    if (head_stats) {
      HeadStats& hs = head_stats[i];
      hs.hit = x.hit ? 1 : 0;
      hs.matched_position = x.matched_position;
      hs.match_distance = x.distance;
      hs.band_len = x.hit ? static_cast<std::int32_t>(new_end - x.start) : 0;
      hs.kv_tokens_read = x.hit ? (t + 1 - x.start) + std::min<std::int64_t>(front_sinks, x.start) : t + 1;
    }
    totals.heads += 1;
    totals.heads_hit += x.hit ? 1 : 0;
    all_hit = all_hit && x.hit;
    if (x.hit) min_start = std::min(min_start, x.start);
  }
  totals.groups += 1;
  totals.kv_tokens_exact += t + 1;
  totals.groups_all_hit += all_hit ? 1 : 0;
  totals.kv_tokens_read += all_hit ? (t + 1 - min_start) + std::min<std::int64_t>(front_sinks, min_start) : t + 1;
}

/// The hit rule of MAC_ATTENTION.md §5 once the best candidate m is known (distance d, ring
/// LSE l_m): d < threshold (strict), l_m finite, E(m) >= F when F > 0, 0 <= new_end - E(m) <= W.
inline bool is_hit(std::int64_t m, float d, float l_m, float threshold, std::int64_t new_end, const MacConfig& config) {
  if (m < 0 || !(d < threshold) || !std::isfinite(l_m)) return false;
  const std::int64_t e_m = entry_end(m, config.rect_offset);
  return (config.front_sinks == 0 || e_m >= config.front_sinks) && new_end - e_m >= 0 && new_end - e_m <= config.window;
}

}  // namespace macattn::detail
