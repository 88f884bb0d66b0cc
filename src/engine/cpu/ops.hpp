// engine/cpu/ops.hpp: the element-wise and per-row operations of a decoder block, in fp32
// with the conventions of Hugging Face transformers' Llama/Qwen modelling code.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model.hpp"
#include "engine/model_config.hpp"

namespace macattn::engine::cpu {

/// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for rows r < n of `dim` values.
/// x, y: [n, dim] (y may alias x); weight: [dim] fp32.
void rms_norm(const float* x, std::int64_t n, std::int64_t dim, const float* weight, float eps, float* y);

/// gate[i] = silu(gate[i]) * up[i] for i < n (SwiGLU; silu(g) = g / (1 + exp(-g))).
void silu_mul(float* gate, const float* up, std::int64_t n);

/// y[i] += x[i] for i < n (the residual connection).
void add_inplace(float* y, const float* x, std::int64_t n);

/// out[dim] = embedding row `token` (any dtype) as fp32. Throws if token is out of range.
void embed_row(const WeightTensor& embed, std::int32_t token, float* out);

/// RoPE with HF's rotate_half convention: for i < D/2, angle = pos * inv_freq[i] (fp32),
///   x'[i] = x[i] cos - x[i + D/2] sin,  x'[i + D/2] = x[i + D/2] cos + x[i] sin.
class Rope {
 public:
  /// inv_freq from theta, head_dim and the scaling (none / linear / llama3 as transformers
  /// computes it). Throws macattn::Error for an odd head_dim.
  explicit Rope(const ModelConfig& config);
  /// cos and sin of every frequency at `pos`: [D/2] each.
  void angles(std::int64_t pos, float* cos_out, float* sin_out) const;
  /// Rotates `heads` vectors of D values (row-major [heads, D]) in place.
  void apply(float* x, std::int32_t heads, const float* cos, const float* sin) const;
  const std::vector<float>& inv_freq() const { return inv_freq_; }
  std::int32_t head_dim() const { return head_dim_; }

 private:
  std::int32_t head_dim_ = 0;
  std::vector<float> inv_freq_;  // [D/2]
};

}  // namespace macattn::engine::cpu
