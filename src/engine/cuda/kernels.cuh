// engine/cuda/kernels.cuh (internal): the engine's own kernels around the matmuls and the
// attention, with their launchers. Activations are fp32 [rows, features] row-major; matmul
// inputs bf16; every launcher takes the stream and checks the launch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "macattn/attention.hpp"

namespace macattn::engine::gpu {

using bf16 = __nv_bfloat16;

/// x[r] = float(embed[tokens[r]]), r < n. embed: [vocab, H] bf16. A token outside [0, vocab)
/// (the host validates; this only guards memory) gives a zero row. x_bf16 (optional): the same
/// rows in bf16 (exact: they are bf16 values).
void embed_rows(const std::int32_t* tokens, std::int64_t n, const bf16* embed, std::int64_t vocab, std::int64_t H,
                float* x, cudaStream_t s, bf16* x_bf16 = nullptr);

/// y[r] = bf16(w * x[r] / sqrt(mean(x[r]^2) + eps)), rows r < n of H values.
void rms_norm_bf16(const float* x, std::int64_t n, std::int64_t H, const float* w, float eps, bf16* y, cudaStream_t s);

/// What qkv_rope_append needs to know about the model and the cache.
struct QkvParams {
  std::int32_t num_q_heads = 0, num_kv_heads = 0, head_dim = 0;
  const float* bias = nullptr;    ///< [(Hq + 2 Hkv) D] or null
  const float* q_norm = nullptr;  ///< [D] or null (Qwen3 q/k RMSNorm)
  const float* k_norm = nullptr;
  float eps = 1e-6f;
  const float* inv_freq = nullptr;  ///< [D/2] (cpu::Rope's table: scaling applied)
  // The layer's K/V pages: NHD [num_pages, page_size, Hkv, D] bf16; sequence b owns pages
  // [b * pages_per_seq, (b + 1) * pages_per_seq) in position order.
  bf16* k_pages = nullptr;
  bf16* v_pages = nullptr;
  std::int32_t page_size = 0;
  std::int64_t pages_per_seq = 0;
};

/// For each row r (sequence row_seq[r], position row_pos[r]) of qkv [n, (Hq + 2 Hkv) D] fp32
/// (the fused projection): adds the bias, applies q/k-norm, writes q_pre [n, Hq, D] (before
/// RoPE; may be null), applies RoPE (HF rotate_half, angle = fp32(pos * inv_freq), cos/sin
/// in double as cpu::Rope), writes q [n, Hq, D] fp32, and appends K (rotated) and V to the
/// sequence's pages at the position.
void qkv_rope_append(const float* qkv, std::int64_t n, const std::int64_t* row_pos, const std::int32_t* row_seq,
                     const QkvParams& p, float* q, float* q_pre, cudaStream_t s);

/// The kernel behind skinny_gemm*: `mma`, tensor cores (mma.sync bf16 -> fp32, 16 weight rows
/// per block; compute capability 8.0 or later: skinny_gemm_mma_supported); `fma`, fp32 FMAs on
/// CUDA cores (4 weight rows per block); `scalar`, element loads, any alignment; `automatic`,
/// fma up to kGemvFmaMaxRows rows and mma above (where the device has it). The first two need
/// in % 8 == 0 and 16-byte aligned W and x; where they do not hold, `scalar` runs.
/// Measured on the H200 (whole llama3-8b decode steps, 4K context): fma is faster at 1 row
/// (4.61 vs 5.22 ms) and at 4 (5.67 vs 5.74), mma at 8 (5.88 vs 7.91; cuBLAS 6.13).
enum class GemvKernel { automatic, mma, fma, scalar };
constexpr std::int64_t kGemvFmaMaxRows = 4;
/// How a skinny GEMM launches: which kernel, and whether with programmatic dependent launch
/// (compute capability 9.0: skinny_gemm_pdl_supported), so that it starts streaming weights
/// while the kernel before it in the stream finishes (it waits for that kernel before reading
/// x or touching y). Measured: 0.10-0.19 ms of a 4.6-6.4 ms llama3-8b decode step (1-8 rows).
struct GemvLaunch {
  GemvKernel kernel = GemvKernel::automatic;
  bool pdl = false;
  /// The FMA kernel at 1-2 rows with 128 threads per block instead of 256 (plain matmuls only;
  /// ignored elsewhere): twice the blocks resident per SM, for matmuls of about one wave.
  bool narrow = false;
  /// The kernel's preferred split of L1 and shared memory
  /// (cudaFuncAttributePreferredSharedMemoryCarveout, -1..100: -1 the driver's choice, 0 the most
  /// L1), set before the launch where it differs from what was last set. Why 0 by default: an SM
  /// splits L1 and shared memory anew only while idle, and MAC's kernels ask for the most shared
  /// memory (28 KB of L1 left). A matmul block that prefers the most L1 waits for an SM that has
  /// drained instead of landing beside MAC's blocks, so the MLP matmuls after a MAC layer get
  /// their L1 without a launch that lets every SM go idle (the session's idle point).
  int carveout = 0;
};
bool skinny_gemm_mma_supported();
bool skinny_gemm_pdl_supported();

/// The decode matmuls with few rows (skinny_gemm_impl.cuh): row-major
/// y[r, o] = sum_k x[r, k] W[o, k] (y[r, o] + that when accumulate: cuBLAS beta = 1), r < n,
/// o < out; W bf16 [out, in], x bf16 or fp32 [n, in] (fp32 is rounded to bf16 first, as
/// to_bf16 before a bf16 GEMM), y fp32 [n, out], fp32 accumulation. n in [1, kSkinnyGemmMaxRows].
/// Returns the kernel that ran. Deterministic, and identical rows of x give bit-identical rows
/// of y (the summation order depends on the kernel and n only). y_bf16 [n, out] (optional):
/// also written, bf16(y) after the update (the input of a fused norm, skinny_gemm_rms_norm).
constexpr std::int64_t kSkinnyGemmMaxRows = 8;
GemvKernel skinny_gemm(const bf16* x, std::int64_t n, const bf16* w, std::int64_t out, std::int64_t in, float* y,
                       bool accumulate, cudaStream_t s, GemvLaunch how, bf16* y_bf16 = nullptr);
GemvKernel skinny_gemm(const float* x, std::int64_t n, const bf16* w, std::int64_t out, std::int64_t in, float* y,
                       bool accumulate, cudaStream_t s, GemvLaunch how, bf16* y_bf16 = nullptr);
/// The fused gate|up matmul with SwiGLU: w_gate_up bf16 [2I, in] (gate rows then up rows),
/// act[r, i] = bf16(silu(g) * u) with g, u the fp32 products of rows i and I + i (what the
/// GEMM into gu followed by silu_mul_bf16 computes). act [n, I].
GemvKernel skinny_gemm_swiglu(const bf16* x, std::int64_t n, const bf16* w_gate_up, std::int64_t I,
                              std::int64_t in, bf16* act, cudaStream_t s, GemvLaunch how);

/// RMSNorm fused into the matmul after it (decode, n in [1, kGemvFmaMaxRows]): x bf16 [n, in]
/// is the residual stream rounded to bf16 (the y_bf16 copy of the kernel that wrote it),
/// norm_weight bf16 [in], and, in fp32,
/// y[r, o] = inv_r * sum_k W[o, k] (norm_weight[k] x[r, k]), inv_r = 1 / sqrt(mean_k x[r, k]^2 + eps):
/// W times rms_norm_bf16's output up to where the roundings fall (here x and the weight, there the
/// normalised row). The fp32-FMA or scalar kernel runs (how.kernel mma is refused). Saves the norm
/// kernel between two matmuls of a decode step (docs/benchmarks/e2e_cuda.md).
GemvKernel skinny_gemm_rms_norm(const bf16* x, std::int64_t n, const bf16* norm_weight, float eps, const bf16* w,
                                std::int64_t out, std::int64_t in, float* y, cudaStream_t s, GemvLaunch how);
/// A decode step's q|k|v matmul with its input RMSNorm, then RoPE and the K/V append:
/// skinny_gemm_rms_norm(x, n, norm_weight, eps, w_qkv, out = (Hq + 2 Hkv) D, in, qkv) followed by
/// qkv_rope_append(qkv, n, row_pos, row_seq, p, q, q_pre), in one kernel where n is in
/// [1, kGemvFmaMaxRows], the model has no q/k-norm, head_dim is a multiple of 8 in [8, 256],
/// how.kernel is automatic or fma, and w_qkv, x and norm_weight are 16-byte aligned with
/// in % 8 == 0 (otherwise it launches the two). Every output (qkv, q, q_pre, the K/V pages) is the same bits either way; fused, the
/// attention after it starts one kernel earlier. Returns whether it fused.
bool skinny_gemm_rms_norm_qkv_rope(const bf16* x, std::int64_t n, const bf16* norm_weight, float eps, const bf16* w_qkv,
                                   std::int64_t in, float* qkv, const std::int64_t* row_pos,
                                   const std::int32_t* row_seq, const QkvParams& p, float* q, float* q_pre,
                                   cudaStream_t s, GemvLaunch how);
/// A decode step's lm_head with its final RMSNorm and the greedy tokens:
/// skinny_gemm_rms_norm(x, n, norm_weight, eps, w, out, in, y) followed by
/// argmax_rows(y, n, out, tokens, feed), with the argmax folded into the matmul where n is in
/// [1, kGemvFmaMaxRows], how.kernel is automatic or fma and w, x and norm_weight are 16-byte
/// aligned with in % 8 == 0 (otherwise it launches the two). Each block folds its largest logit
/// per row into best[r] (device, [n], all zero before the first call; a small kernel after the
/// matmul reads and re-zeroes it), which saves argmax_rows' pass over the logits (20 us a step at
/// llama3's 128256). The logits and tokens are the same either way. Returns whether it fused.
bool skinny_gemm_rms_norm_argmax(const bf16* x, std::int64_t n, const bf16* norm_weight, float eps, const bf16* w,
                                 std::int64_t out, std::int64_t in, float* y, unsigned long long* best,
                                 std::int32_t* tokens, std::int32_t* feed, cudaStream_t s, GemvLaunch how);
/// The same for the gate|up matmul with SwiGLU (as skinny_gemm_swiglu): act [n, I].
GemvKernel skinny_gemm_swiglu_rms_norm(const bf16* x, std::int64_t n, const bf16* norm_weight, float eps,
                                       const bf16* w_gate_up, std::int64_t I, std::int64_t in, bf16* act,
                                       cudaStream_t s, GemvLaunch how);

/// act[r, i] = bf16(silu(gu[r, i]) * gu[r, I + i]): gu [n, 2I] is the fused gate|up product.
void silu_mul_bf16(const float* gu, std::int64_t n, std::int64_t I, bf16* act, cudaStream_t s);

/// y = bf16(x), n values.
void to_bf16(const float* x, std::int64_t n, bf16* y, cudaStream_t s);

/// x[r, c] += bias[c], rows r < n of `cols` values.
/// x_bf16 (optional): also written, bf16 of the updated x.
void add_bias_rows(float* x, std::int64_t n, std::int64_t cols, const float* bias, cudaStream_t s,
                   bf16* x_bf16 = nullptr);

/// out[r] = argmax of logits[r] ([n, vocab]; the first of equal maxima, NaN ignored);
/// when feed != null, also feed[r] = out[r] (the next step's token).
void argmax_rows(const float* logits, std::int64_t n, std::int64_t vocab, std::int32_t* out, std::int32_t* feed,
                 cudaStream_t s);

/// The decode step's page table from the positions: sequence b holds pos[b] + 1 tokens;
/// indptr [B+1], indices (pages b * pages_per_seq + i in order), last_page_len [B].
void build_page_table(const std::int64_t* pos, std::int32_t B, std::int32_t page_size, std::int64_t pages_per_seq,
                      std::int32_t* indptr, std::int32_t* indices, std::int32_t* last_page_len, cudaStream_t s);

/// pos[b] += 1 for b < B (the end of a decode step).
void advance_positions(std::int64_t* pos, std::int32_t B, cudaStream_t s);

/// Per-layer stats accumulators: acc [L, 6] int64 = heads, heads_hit, groups, groups_all_hit,
/// kv_tokens_read, kv_tokens_exact, summed over steps. head_stats [L, B, Hq] (read for MAC
/// layers, mac_layer[l] = 1); t_b = pos[b]. A group whose heads all hit reads the longest of
/// its heads' reads (the bands end at the same E(t)); otherwise t + 1 tokens, as the library.
void accumulate_stats(const HeadStats* head_stats, const std::uint8_t* mac_layer, const std::int64_t* pos,
                      std::int32_t L, std::int32_t B, std::int32_t Hq, std::int32_t Hkv, std::int64_t* acc,
                      cudaStream_t s);

/// sums[0] += sum((a - b)^2), sums[1] += sum(b^2) over n values (the audit's relative L2).
void diff_norms(const float* a, const float* b, std::int64_t n, double* sums, cudaStream_t s);

/// Fills n bf16 values with uniform(-scale, scale) from a hash of (seed, index).
void fill_random_bf16(bf16* p, std::int64_t n, std::uint64_t seed, float scale, cudaStream_t s);
/// Fills n fp32 values with `value`.
void fill_f32(float* p, std::int64_t n, float value, cudaStream_t s);

/// Causal attention of n query rows over a sequence's pages (the engine's own kernel, any
/// even D up to 256): row r (sequence row_seq[r], position row_pos[r]) attends keys
/// [0, row_pos[r]] of its sequence. q, out: [n, Hq, D] fp32. rows_same_seq_sorted: the rows
/// are one sequence's consecutive positions (prefill), so 64 rows share each K/V tile;
/// otherwise (decode) each row gets its own block.
void causal_attention(const float* q, std::int64_t n, const std::int64_t* row_pos, const std::int32_t* row_seq,
                      const bf16* k_pages, const bf16* v_pages, std::int32_t page_size, std::int64_t pages_per_seq,
                      std::int32_t Hq, std::int32_t Hkv, std::int32_t D, float scale, bool rows_same_seq_sorted,
                      float* out, cudaStream_t s);

}  // namespace macattn::engine::gpu
