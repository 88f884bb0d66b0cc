// src/core/merge.hpp: the exact merge of two attention states (MAC_ATTENTION.md §2). Internal.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace macattn::detail {

/// (o, lse) = merge((o1, l1), (o2, l2)) over disjoint key sets; natural-log LSE, D-vectors.
/// An lse of -inf is the empty state; two empty states give (0, -inf). o may alias o1 or o2.
inline void merge_state(std::int32_t d, const float* o1, float l1, const float* o2, float l2, float* o, float* l) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (l1 == kNegInf && l2 == kNegInf) {
    for (std::int32_t i = 0; i < d; ++i) o[i] = 0.0f;
    *l = kNegInf;
    return;
  }
  if (l2 == kNegInf) {  // result is side 1
    for (std::int32_t i = 0; i < d; ++i) o[i] = o1[i];
    *l = l1;
    return;
  }
  if (l1 == kNegInf) {
    for (std::int32_t i = 0; i < d; ++i) o[i] = o2[i];
    *l = l2;
    return;
  }
  const float m = std::fmax(l1, l2);
  const float w1 = std::exp(l1 - m);
  const float w2 = std::exp(l2 - m);
  const float inv = 1.0f / (w1 + w2);
  for (std::int32_t i = 0; i < d; ++i) o[i] = (w1 * o1[i] + w2 * o2[i]) * inv;
  *l = m + std::log(w1 + w2);
}

}  // namespace macattn::detail
