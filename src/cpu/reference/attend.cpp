#include "cpu/reference/attend.hpp"

#include <cmath>
#include <limits>

namespace macattn::reference {

State::State(std::int32_t head_dim)
    : o(static_cast<std::size_t>(head_dim), 0.0f), lse(-std::numeric_limits<float>::infinity()) {}

void load_row(const void* data, DType dtype, std::size_t row, std::int32_t head_dim, float* dst) {
  const std::size_t base = row * static_cast<std::size_t>(head_dim);
  for (std::int32_t i = 0; i < head_dim; ++i) dst[i] = load_as_float(data, dtype, base + static_cast<std::size_t>(i));
}

void store_row(void* data, DType dtype, std::size_t row, std::int32_t head_dim, const float* src) {
  const std::size_t base = row * static_cast<std::size_t>(head_dim);
  for (std::int32_t i = 0; i < head_dim; ++i) store_from_float(data, dtype, base + static_cast<std::size_t>(i), src[i]);
}

State attend(const KVCacheView& kv, std::int32_t b, std::int32_t kv_head, const float* q, float scale,
             std::int64_t begin, std::int64_t end) {
  const std::int32_t d = kv.head_dim();
  State st(d);
  if (end <= begin) return st;
  const DType dt = kv.dtype();
  std::vector<float> s(static_cast<std::size_t>(end - begin));
  float m = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = begin; j < end; ++j) {
    const void* k = kv.k_row(b, j, kv_head);
    float dot = 0.0f;
    for (std::int32_t i = 0; i < d; ++i) dot += q[i] * load_as_float(k, dt, static_cast<std::size_t>(i));
    const float sj = scale * dot;
    s[static_cast<std::size_t>(j - begin)] = sj;
    m = std::fmax(m, sj);
  }
  float sum = 0.0f;
  for (std::int64_t j = begin; j < end; ++j) {
    const float w = std::exp(s[static_cast<std::size_t>(j - begin)] - m);
    sum += w;
    const void* v = kv.v_row(b, j, kv_head);
    for (std::int32_t i = 0; i < d; ++i) st.o[static_cast<std::size_t>(i)] += w * load_as_float(v, dt, static_cast<std::size_t>(i));
  }
  for (float& x : st.o) x /= sum;
  st.lse = m + std::log(sum);
  return st;
}

}  // namespace macattn::reference
