// engine/cuda/cuda_gemv_check.hpp: test hooks that run the decode step's skinny GEMM
// (gpu::skinny_gemm / skinny_gemm_swiglu, engine/cuda/skinny_gemm_impl.cuh) and its fused
// q|k|v + RoPE form (gpu::skinny_gemm_rms_norm_qkv_rope) on host data, for the unit tests against
// fp64 host loops. No CUDA header here; without CUDA they throw.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace macattn::engine {

struct GemvCheck {
  std::int64_t n = 1;          ///< activation rows, 1..8
  std::int64_t out = 1;        ///< outputs (SwiGLU: I; the weight then has 2 * out rows)
  std::int64_t in = 1;         ///< the reduction dimension
  bool f32_input = false;      ///< fp32 activations (the kernel rounds them to bf16) instead of bf16
  bool accumulate = false;     ///< y += x W^T (cuBLAS beta = 1) instead of y = x W^T
  bool swiglu = false;         ///< y = bf16(silu(x Wg^T) * (x Wu^T)), W = [gate rows; up rows]
  bool force_scalar = false;   ///< the scalar kernel even where a 16-byte one applies
  bool fma = false;            ///< the fp32-FMA 16-byte kernel instead of the tensor-core one
  std::int64_t misalign = 0;   ///< W and x start this many elements past a 256-byte boundary
  bool rms_norm = false;       ///< fused RMSNorm (skinny_gemm_rms_norm / _swiglu_rms_norm), n <= 4
  float eps = 1e-5f;           ///< the norm's eps
  bool narrow = false;         ///< GemvLaunch::narrow (128-thread blocks at 1-2 rows, plain matmuls)
};

/// w: [(swiglu ? 2 : 1) * out, in] values (rounded to bf16 on upload); x: [n, in] (rounded to
/// bf16 on upload unless f32_input); y: [n, out], read first when accumulate, then the result
/// (SwiGLU: the bf16 results as floats); norm_weight: [in] when rms_norm (rounded to bf16, also
/// misaligned by `misalign` elements); y_bf16 (plain GEMM only): when given, the kernel also
/// writes bf16(y) and it is returned here. Synchronous. Returns whether a 16-byte kernel ran.
bool cuda_gemv_check(const GemvCheck& c, std::span<const float> w, std::span<const float> x, std::vector<float>& y,
                     std::span<const float> norm_weight = {}, std::vector<float>* y_bf16 = nullptr);

/// The q|k|v matmul with its input RMSNorm, RoPE and the K/V append (gpu::QkvParams, one layer's
/// pages of num_seqs sequences, page_size tokens per page, pages_per_seq pages each).
struct QkvRopeCheck {
  std::int64_t n = 1;  ///< activation rows (decode: one per sequence), 1..4
  std::int64_t in = 64;
  std::int32_t num_q_heads = 2, num_kv_heads = 1, head_dim = 16;
  std::int32_t page_size = 4;
  std::int64_t pages_per_seq = 4;
  std::int32_t num_seqs = 1;
  float eps = 1e-5f;
  bool fused = true;          ///< skinny_gemm_rms_norm_qkv_rope; false: skinny_gemm_rms_norm + qkv_rope_append
  std::int64_t misalign = 0;  ///< x, W and the norm weight start this many elements past a 256-byte boundary
};

/// What the step wrote. The device buffers start as all-ones bits (NaN), so what was not written
/// shows. K/V pages are the bf16 values as floats, [num_seqs * pages_per_seq, page_size, Hkv, D].
struct QkvRopeResult {
  std::vector<float> qkv, q, q_pre, k_pages, v_pages;
  bool fused = false;  ///< whether the fused kernel ran
};

/// w: [(Hq + 2 Hkv) D, in], x: [n, in], norm_weight: [in] (all rounded to bf16 on upload);
/// bias: [(Hq + 2 Hkv) D] or empty; inv_freq: [D / 2]; pos, seq: [n] (row r writes sequence
/// seq[r]'s position pos[r]). Synchronous.
QkvRopeResult cuda_qkv_rope_check(const QkvRopeCheck& c, std::span<const float> w, std::span<const float> x,
                                  std::span<const float> norm_weight, std::span<const float> bias,
                                  std::span<const float> inv_freq, std::span<const std::int64_t> pos,
                                  std::span<const std::int32_t> seq);

/// The lm_head matmul with its norm and the greedy tokens (gpu::skinny_gemm_rms_norm_argmax), twice
/// in a row on the same inputs (its keys must be re-zeroed after each call), against
/// skinny_gemm_rms_norm followed by argmax_rows. w: [out, in], x: [n, in], norm_weight: [in]
/// (rounded to bf16 on upload, starting `misalign` elements past a 256-byte boundary).
struct ArgmaxCheckResult {
  std::vector<float> logits, logits_separate;  ///< [n, out]
  std::vector<std::int32_t> tokens, tokens_again, tokens_separate, feed;  ///< [n] each
  bool fused = false;  ///< whether the fused kernel ran
};
ArgmaxCheckResult cuda_argmax_check(std::int64_t n, std::int64_t out, std::int64_t in, std::span<const float> w,
                                    std::span<const float> x, std::span<const float> norm_weight, float eps,
                                    std::int64_t misalign = 0);

}  // namespace macattn::engine
