// src/cpu/fast/partial.hpp: unnormalised attention partials (m, l, o) as the kernels leave
// them, and their conversion to and merge with normalised (o, lse) states. Internal.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace macattn::cpu {

/// n partial states of dimension D: m = running max score, l = sum exp(s - m),
/// o = sum exp(s - m) v. Empty: m = -inf, l = 0, o = 0.
struct Partials {
  std::int32_t d = 0;
  std::vector<float> m, l, o;
  Partials(std::size_t n, std::int32_t head_dim)
      : d(head_dim),
        m(n, -std::numeric_limits<float>::infinity()),
        l(n, 0.0f),
        o(n * static_cast<std::size_t>(head_dim), 0.0f) {}
  float* o_at(std::size_t i) { return o.data() + i * static_cast<std::size_t>(d); }
  /// n empty states of dimension head_dim, reusing the storage already held.
  void reset(std::size_t n, std::int32_t head_dim) {
    d = head_dim;
    m.assign(n, -std::numeric_limits<float>::infinity());
    l.assign(n, 0.0f);
    o.assign(n * static_cast<std::size_t>(head_dim), 0.0f);
  }
};

/// Adds partial src (one state) into partial dst, exactly as two online-softmax passes would.
inline void combine_partial(std::int32_t d, float& m, float& l, float* o, float sm, float sl, const float* so) {
  if (sl == 0.0f) return;
  if (l == 0.0f) {
    m = sm;
    l = sl;
    for (std::int32_t i = 0; i < d; ++i) o[i] = so[i];
    return;
  }
  const float mn = std::fmax(m, sm);
  const float a = std::exp(m - mn), b = std::exp(sm - mn);
  for (std::int32_t i = 0; i < d; ++i) o[i] = o[i] * a + so[i] * b;
  l = l * a + sl * b;
  m = mn;
}

/// Normalises a partial into (o, lse): o /= l, lse = m + ln l. Empty gives (0, -inf).
inline void finish_partial(std::int32_t d, float m, float l, const float* o, float* o_out, float* lse_out) {
  if (l == 0.0f) {
    for (std::int32_t i = 0; i < d; ++i) o_out[i] = 0.0f;
    *lse_out = -std::numeric_limits<float>::infinity();
    return;
  }
  const float inv = 1.0f / l;
  for (std::int32_t i = 0; i < d; ++i) o_out[i] = o[i] * inv;
  *lse_out = m + std::log(l);
}

}  // namespace macattn::cpu
