#include "engine/cpu/ops.hpp"

#include <cmath>
#include <cstring>
#include <numbers>
#include <string>

#include "macattn/error.hpp"

namespace macattn::engine::cpu {

void rms_norm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps, float* y) {
  for (std::int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double ss = 0.0;  // double: the mean of squares is the one reduction here that loses digits
    for (std::int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + static_cast<double>(eps)));
    for (std::int64_t i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv);
  }
}

void silu_mul(float* gate, const float* up, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add_inplace(float* y, const float* x, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void embed_row(const WeightTensor& embed, std::int32_t token, float* out) {
  if (token < 0 || token >= embed.rows)
    throw Error("embedding: token id " + std::to_string(token) + " is out of range [0, " + std::to_string(embed.rows) +
                ")");
  const std::size_t es = dtype_size(embed.dtype);
  const auto* row = static_cast<const std::uint8_t*>(embed.data) + static_cast<std::size_t>(token) * embed.cols * es;
  for (std::int64_t i = 0; i < embed.cols; ++i) {
    std::uint8_t tmp[4];
    std::memcpy(tmp, row + i * es, es);
    out[i] = load_as_float(tmp, embed.dtype, 0);
  }
}

Rope::Rope(const ModelConfig& c) : head_dim_(c.head_dim) {
  if (c.head_dim < 2 || c.head_dim % 2 != 0)
    throw Error("Rope: head_dim = " + std::to_string(c.head_dim) + " must be even");
  const std::int32_t half = c.head_dim / 2;
  inv_freq_.resize(half);
  const RopeScaling& s = c.rope_scaling;
  for (std::int32_t i = 0; i < half; ++i) {
    // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in fp32.
    const float expo = static_cast<float>(2 * i) / static_cast<float>(c.head_dim);
    double f = static_cast<double>(1.0f / std::pow(static_cast<float>(c.rope_theta), expo));
    if (s.type == RopeScaling::Type::linear) {
      f /= s.factor;
    } else if (s.type == RopeScaling::Type::llama3) {
      // Llama 3.1: long wavelengths divided by factor, short ones kept, a smooth blend between.
      const double old_len = static_cast<double>(s.original_max_position_embeddings);
      const double low_wavelen = old_len / s.low_freq_factor;
      const double high_wavelen = old_len / s.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1.0 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv_freq_[i] = static_cast<float>(f);
  }
}

void Rope::angles(std::int64_t pos, float* cos_out, float* sin_out) const {
  const float p = static_cast<float>(pos);
  for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
    const float a = p * inv_freq_[i];  // one fp32 rounding, as transformers' fp32 product
    cos_out[i] = static_cast<float>(std::cos(static_cast<double>(a)));
    sin_out[i] = static_cast<float>(std::sin(static_cast<double>(a)));
  }
}

void Rope::apply(float* x, std::int32_t heads, const float* cos, const float* sin) const {
  const std::int32_t half = head_dim_ / 2;
  for (std::int32_t h = 0; h < heads; ++h) {
    float* v = x + static_cast<std::int64_t>(h) * head_dim_;
    for (std::int32_t i = 0; i < half; ++i) {
      const float a = v[i], b = v[i + half];
      v[i] = a * cos[i] - b * sin[i];
      v[i + half] = b * cos[i] + a * sin[i];
    }
  }
}

}  // namespace macattn::engine::cpu
