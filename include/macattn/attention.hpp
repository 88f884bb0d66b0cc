// macattn/attention.hpp: the decode and prefill entry points, the state merge, and stats.
//
// Conventions for every function here:
// - B = kv.batch_size() sequences, Hq query heads, Hkv KV heads, D = head_dim. Query head h
//   reads KV head h / (Hq / Hkv).
// - Decode position of sequence b: t_b = kv.seq_len(b) - 1 (its current K/V is in the cache).
//   A sequence with seq_len 0 has nothing to attend to: its output is 0 and its LSE -inf.
// - LSE is the natural logarithm: lse = ln sum_j exp(scale * q.k_j). Kept in fp32.
// - Queries and outputs are row-major `[B, Hq, D]` (or `[rows, Hq, D]`) of a QueryDType;
//   accumulation is fp32 or better.
// - Inputs are validated before anything is written; a bad input throws macattn::Error
//   naming the function, the argument and its value.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "macattn/config.hpp"
#include "macattn/dtype.hpp"
#include "macattn/kv_cache.hpp"
#include "macattn/mac_state.hpp"

namespace macattn {

/// Which implementation runs.
/// - `reference`: the scalar oracle (src/cpu/reference): short, obvious, fp32 accumulation;
///   every fast path is tested against it. Single-threaded.
/// - `cpu`: the fast CPU backend (src/cpu/fast): SIMD kernels chosen at run time (AVX-512,
///   AVX2+FMA+F16C, portable), threads over sequences, KV heads and KV chunks, each K/V row
///   read once per GQA group. Head dims 64, 128, 256; other head dims run the reference.
/// Both make the same MAC decisions (hits, matched positions) on the same inputs; outputs
/// differ only by rounding.
enum class Backend : std::uint8_t { reference = 0, cpu = 1 };
const char* backend_name(Backend backend);

/// Threads for the `cpu` backend; 0 (the default) = OpenMP's default (all cores, or
/// OMP_NUM_THREADS). Throws macattn::Error for n < 0. Process-wide.
void set_num_threads(int n);
/// The kernel set the `cpu` backend runs: "avx512bf16" (AVX-512 with BF16 dot products for bf16
/// K/V), "avx512", "avx2" or "portable" (override with the environment variable
/// MACATTN_CPU_ISA). Throws if the override names an unusable ISA.
const char* cpu_isa();

/// How the `cpu` backend multiplies bf16 K/V in its avx512bf16 kernels (vdpbf16ps takes bf16
/// operands; other kernel sets and K/V dtypes always compute in fp32):
/// - `fp32` (default): queries and softmax weights enter as two bf16 terms each (x = hi + lo),
///   so the products are as exact as fp32 ones (relative error ~1e-5 against an fp64 oracle).
/// - `bf16`: one term each, i.e. queries and weights rounded to bf16, as GPU flash-attention
///   kernels do: half the multiplies, so faster where arithmetic is the bound (an idle machine
///   whose memory outruns the cores); relative error about 2e-3 in outputs and 4e-3 in LSE.
///   Scores, softmax, accumulation and the MAC scan stay fp32; MAC decisions do not change.
/// Process-wide; the environment variable MACATTN_CPU_PRODUCTS=fp32|bf16 sets the initial value
/// (another value is an error at the first call).
enum class CpuProducts : std::uint8_t { fp32 = 0, bf16 = 1 };
void set_cpu_products(CpuProducts products);
CpuProducts cpu_products();
/// "fp32", "bf16"; "invalid" for a value outside the enum.
const char* cpu_products_name(CpuProducts products);

/// A tensor of `[rows, Hq, D]` elements of dtype, row-major. Read-only or written per call.
struct Tensor {
  void* data = nullptr;
  DType dtype = DType::f32;
};
struct ConstTensor {
  const void* data = nullptr;
  DType dtype = DType::f32;
  ConstTensor() = default;
  ConstTensor(const void* d, DType t) : data(d), dtype(t) {}
  ConstTensor(Tensor t) : data(t.data), dtype(t.dtype) {}  // NOLINT: a writable tensor reads too
};

/// What MAC decided for one query head in one step.
struct HeadStats {
  std::uint8_t hit = 0;                 ///< 1 if the entry was reused
  std::int64_t matched_position = -1;   ///< best candidate position m (hit or not); -1 if none was scanned
  float match_distance = 0.0f;          ///< squared L2 distance to m (pre-RoPE); +inf if none
  std::int32_t band_len = 0;            ///< hit: new_end - E(m); miss: 0
  std::int64_t kv_tokens_read = 0;      ///< tokens this head attended exactly (band + tail + sinks, or t+1)
};

/// Totals over a call. Group = one (sequence, KV head). A group whose heads all hit reads only
/// the union of its heads' bands, the tail and the sinks; a group with any miss streams all
/// t+1 tokens once. kv_tokens_read counts tokens per group (each K and V row once).
struct StepStats {
  std::int64_t heads = 0;
  std::int64_t heads_hit = 0;
  std::int64_t groups = 0;
  std::int64_t groups_all_hit = 0;
  std::int64_t kv_tokens_read = 0;   ///< tokens read by this call, summed over groups
  std::int64_t kv_tokens_exact = 0;  ///< tokens exact attention would read, summed over groups
  std::int64_t ring_wipes = 0;       ///< sequences whose ring was stale and wiped this call

  double hit_rate() const { return heads ? static_cast<double>(heads_hit) / static_cast<double>(heads) : 0.0; }
  void add(const StepStats& other);
  std::string to_string() const;
};

/// Exact decode attention for one layer.
///   q_post: [B, Hq, D] post-RoPE queries;  out: [B, Hq, D] (same dtype as q_post);
///   lse: [B, Hq] fp32, natural log, or null.
void exact_decode(const AttentionShape& shape, const KVCacheView& kv, ConstTensor q_post, Tensor out, float* lse,
                  Backend backend = Backend::reference);

/// MAC decode for one layer (MAC_ATTENTION.md §5): match on pre-RoPE queries, amend the band,
/// write the ring row of t_b, complete with sinks and tail.
///   q_post, q_pre: [B, Hq, D] same dtype;  out: [B, Hq, D] (q dtype);  lse: [B, Hq] or null;
///   states: B views, one per sequence of this layer; head_stats: [B, Hq] or null (when null,
///   a backend may stop scanning rows that cannot be hits early, since the best row of a
///   miss is then not reported; decisions, outputs and rings are the same either way);
///   step_stats: or null (overwritten, not accumulated).
/// Sequences with seq_len 0 are rejected (a decode step needs its current token).
void mac_decode(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv, ConstTensor q_post,
                ConstTensor q_pre, std::span<const MacStateView> states, Tensor out, float* lse,
                HeadStats* head_stats, StepStats* step_stats, Backend backend = Backend::reference);

/// MAC prefill ring initialisation (MAC_ATTENTION.md §6), exact prefix states (no downdate).
/// For sequence b with P_b = kv.seq_len(b), the caller passes n_b = row_indptr[b+1] -
/// row_indptr[b] query rows for positions [P_b - n_b, P_b) (n_b <= P_b); rows of positions
/// below P_b - W are skipped. Row p gets qring = q_pre(p) and the state over
/// [min(F, E(p)), E(p)) under q_post(p). If the ring is ready at position P_b - n_b (chunked
/// prefill: the previous chunk's rows) those rows are kept; otherwise it is wiped first.
/// Afterwards position = P_b, ready = 1.
///   q_post, q_pre: [row_indptr[B], Hq, D];  row_indptr: [B+1], row_indptr[0] = 0.
void mac_prefill_init(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv,
                      ConstTensor q_post, ConstTensor q_pre, std::span<const std::int32_t> row_indptr,
                      std::span<const MacStateView> states, Backend backend = Backend::reference);

/// Merges two attention states over disjoint key sets (MAC_ATTENTION.md §2), elementwise over
/// n states of dimension D:  o1, o2, out: [n, D] fp32;  lse1, lse2, lse_out: [n] fp32, natural
/// log. An input with lse = -inf is the empty state; two empty states give (0, -inf). out may
/// alias o1 or o2 and lse_out lse1 or lse2. NaN LSE is rejected.
void merge_states(std::int64_t n, std::int32_t head_dim, const float* o1, const float* lse1, const float* o2,
                  const float* lse2, float* out, float* lse_out);

}  // namespace macattn
