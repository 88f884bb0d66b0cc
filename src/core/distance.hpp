// src/core/distance.hpp: the match distance, defined bit for bit so that every backend makes
// the same hit/miss decisions on the same inputs. Internal.
//
// d(q, r) = sum_i (q_i - r_i)^2 in fp32, summed in a fixed order that SIMD and GPU code can
// reproduce exactly: 16 lanes, lane l accumulates dims l, l+16, l+32, ... with a fused
// multiply-add, then the lanes are added pairwise (lane l += lane l+8, l+4, l+2, l+1).
// Every step adds a non-negative number, so any prefix of the dims (in whole 16-dim chunks)
// gives a lower bound of d: that is what makes early pruning exact.
#pragma once

#include <cmath>
#include <cstdint>

namespace macattn::detail {

inline constexpr int kDistanceLanes = 16;

/// Reduces 16 lane sums pairwise, in the fixed order above.
inline float reduce_distance_lanes(float lanes[kDistanceLanes]) {
  for (int width = kDistanceLanes / 2; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) lanes[l] = lanes[l] + lanes[l + width];
  return lanes[0];
}

/// Accumulates dims [begin, end) of (q - r)^2 into the lane sums; r read through `load(i)`.
template <typename LoadRow>
inline void accumulate_distance(const float* q, LoadRow load, std::int32_t begin, std::int32_t end,
                                float lanes[kDistanceLanes]) {
  for (std::int32_t i = begin; i < end; ++i) {
    const float diff = q[i] - load(i);
    lanes[i % kDistanceLanes] = std::fma(diff, diff, lanes[i % kDistanceLanes]);
  }
}

/// The full distance of the D-vectors q and r (r as fp32 here).
inline float match_distance(const float* q, const float* r, std::int32_t head_dim) {
  float lanes[kDistanceLanes] = {};
  accumulate_distance(q, [r](std::int32_t i) { return r[i]; }, 0, head_dim, lanes);
  return reduce_distance_lanes(lanes);
}

}  // namespace macattn::detail
