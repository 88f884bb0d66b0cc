// engine/cuda/cuda_session_impl.cuh (internal): what a CudaSession owns on the device and the
// forward pass over it (cuda_session.cu); bench_support.cu drives it for the GPU benchmark.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <functional>
#include <map>
#include <vector>

#include "engine/cuda/cuda_session.hpp"
#include "engine/cuda/kernels.cuh"
#include "macattn/cuda.hpp"

namespace macattn::engine::gpu {

/// One device allocation (freed on destruction).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr, o.bytes_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

struct DeviceLayer {
  DeviceBuffer input_norm, post_norm;            // f32 [H]
  DeviceBuffer input_norm_bf16, post_norm_bf16;  // bf16 [H]: the fused norms' (skinny_gemm_rms_norm)
  DeviceBuffer w_qkv;                  // bf16 [(Hq + 2 Hkv) D, H]: q | k | v rows
  DeviceBuffer b_qkv;                  // f32 or empty
  DeviceBuffer q_norm, k_norm;         // f32 [D] or empty
  DeviceBuffer w_o, b_o;               // bf16 [H, Hq D]; f32 [H] or empty
  DeviceBuffer w_gate_up;              // bf16 [2 I, H]: gate | up rows
  DeviceBuffer w_down;                 // bf16 [H, I]
};

struct DeviceWeights {
  DeviceBuffer embed;    // bf16 [V, H]
  DeviceBuffer lm_head;  // bf16 [V, H]; empty when tied (then embed is used)
  DeviceBuffer final_norm, final_norm_bf16;
  std::vector<DeviceLayer> layers;
  std::size_t bytes = 0;
  const bf16* lm_head_ptr() const { return lm_head.bytes() ? lm_head.as<bf16>() : embed.as<bf16>(); }
};

/// How one forward call attends (as ForwardAttention of the CPU engine).
enum class StepKind : std::uint8_t { prefill, decode, decode_exact };

}  // namespace macattn::engine::gpu

namespace macattn::engine {

/// Which of a layer's RMSNorms the decode matmuls compute themselves (MACATTN_ENGINE_FUSED_NORM).
constexpr unsigned kFuseInputNorm = 1;  // before q|k|v (and the final norm before lm_head)
constexpr unsigned kFusePostNorm = 2;   // before gate|up
/// Which matmul launches without PDL after a MAC layer (MACATTN_ENGINE_MAC_IDLE_POINT).
enum class IdlePoint { o_proj, gate_up, none };
/// Which matmuls get 128-thread GEMV blocks (MACATTN_ENGINE_GEMV_NARROW); auto: both at 1 row.
constexpr unsigned kNarrowOProj = 1, kNarrowDown = 2, kNarrowAuto = 4;

struct CudaSession::Impl {
  using DeviceBuffer = gpu::DeviceBuffer;
  Impl(const ModelConfig& config, const CudaSessionOptions& options);
  ~Impl();
  void upload(const Model& model);
  void randomize(std::uint64_t seed);
  void bf16_norms();  // the norm weights' bf16 copies (after upload or randomize)
  void allocate();  // everything but the weights (after them)

  // The forward pass. Decode: rows = batch, tokens in d_tokens, positions d_pos.
  void prefill_chunk(std::int32_t seq, const std::int32_t* tokens, std::int64_t n, bool all_logits, bool init_rings);
  /// The decode step on `stream` (capturable): page table, layers, logits, argmax, stats.
  void decode_step(gpu::StepKind kind, bool advance, bool feed_greedy, bool audit);
  /// Launches the step as a graph (captured on first use per flag set) or eagerly.
  void run_decode(bool advance, bool feed_greedy);
  void layer(std::int32_t l, std::int64_t n, gpu::StepKind kind, bool init_rings, bool audit, std::int32_t seq);
  void gemm(const gpu::bf16* x, std::int64_t n, const gpu::bf16* w, std::int64_t out, std::int64_t in, float* y,
            float beta);
  /// The decode matmuls of n rows use the engine's skinny GEMM (gpu::skinny_gemm*) instead of
  /// cuBLAS when n <= skinny_max_rows (MACATTN_ENGINE_MATMUL: auto 4, gemv 8, cublas 0).
  /// Prefill keeps cuBLAS.
  bool skinny(std::int64_t n, bool decode) const { return decode && n <= skinny_max_rows; }
  /// A decode matmul of n rows that reads a norm's output computes the norm itself
  /// (gpu::skinny_gemm_rms_norm) instead of after rms_norm_bf16: the skinny GEMM's FMA kernel
  /// at <= 4 rows, for the norms `which` (kFuseInputNorm, kFusePostNorm) that
  /// MACATTN_ENGINE_FUSED_NORM leaves on.
  bool norm_fused(std::int64_t n, bool decode, unsigned which) const {
    return (fused_norm & which) != 0 && skinny(n, decode) && n <= gpu::kGemvFmaMaxRows &&
           gemv.kernel != gpu::GemvKernel::mma;
  }
  macattn::cuda::PagedKVDevice batch_kv(std::int32_t l) const;
  macattn::cuda::MacRingsDevice rings(std::int32_t l, std::int32_t seq = -1) const;  // seq -1: all
  void read_stats() const;
  void sync() const;

  ModelConfig config;
  CudaSessionOptions options;
  AttentionShape shape;
  std::int32_t B = 1, L = 0, H = 0, Hq = 0, Hkv = 0, D = 0, I = 0, V = 0, QD = 0, KD = 0, QKV = 0;
  std::int64_t capacity = 0, pages_per_seq = 0, rows = 0;
  std::int32_t page_size = 16, window = 0;
  bool library_attention = true;
  std::int64_t skinny_max_rows = 4;  // from MACATTN_ENGINE_MATMUL (read at construction)
  gpu::GemvLaunch gemv;  // from MACATTN_ENGINE_GEMV and MACATTN_ENGINE_PDL (read at construction)
  unsigned fused_norm = kFuseInputNorm | kFusePostNorm;  // from MACATTN_ENGINE_FUSED_NORM (read at construction)
  bool fused_rope = true;  // from MACATTN_ENGINE_FUSED_ROPE: RoPE inside the fused-norm q|k|v matmul
  bool fused_argmax = true;  // from MACATTN_ENGINE_FUSED_ARGMAX: the greedy token inside the lm_head matmul
  IdlePoint idle_point = IdlePoint::o_proj;  // from MACATTN_ENGINE_MAC_IDLE_POINT
  unsigned narrow = kNarrowAuto;              // from MACATTN_ENGINE_GEMV_NARROW
  std::vector<bool> mac_layer;
  std::size_t decode_weight_bytes = 0;

  cudaStream_t stream = nullptr;
  // MAC's early scan (MACATTN_ENGINE_EARLY_SCAN): the scan stream forks from `stream` after the
  // q|k|v projection; mac_decode joins it.
  bool early_scan = false;
  cudaStream_t scan_stream = nullptr;
  cudaEvent_t scan_fork = nullptr;
  cublasHandle_t cublas = nullptr;
  DeviceBuffer cublas_workspace;
  macattn::cuda::Workspace workspace;
  gpu::DeviceWeights w;
  DeviceBuffer inv_freq;

  // K/V: per layer, pages [B * pages_per_seq, page_size, Hkv, D] bf16.
  std::vector<DeviceBuffer> k_pages, v_pages;
  DeviceBuffer indptr, indices, last_page_len;   // the batch table (rebuilt by each decode step)
  DeviceBuffer s_indptr, s_last_page_len, iota;  // one sequence's table (prefill)
  DeviceBuffer pos;                              // int64 [B]: the decode position of each sequence
  std::vector<std::int64_t> pos_host;
  // MAC rings of every layer, contiguous: q/o [L, B, W, Hq, D], l [L, B, W, Hq], position [L, B], ready [L, B].
  DeviceBuffer qring, oring, lring, ring_position, ring_ready;
  DType ring_dtype = DType::bf16;
  DeviceBuffer head_stats;  // HeadStats [L, B, Hq]
  DeviceBuffer mac_flags;   // uint8 [L]
  DeviceBuffer stats_acc;   // int64 [L, 6]

  // Activations of up to `rows` positions.
  // x_bf16: bf16(x), written beside x by the kernels that write x in a decode step whose norms
  // the matmuls compute (norm_fused), which read it instead of x.
  DeviceBuffer x, x_bf16, hb, qkv, q, q_pre, q_pre_layers, attn, attn_b, gu, act, logits, exact_out, audit_sums;
  std::int64_t logits_rows = 0;
  DeviceBuffer tokens, row_pos, row_seq, batch_seq, greedy, row_indptr;
  DeviceBuffer argmax_best;  // uint64 [B]: skinny_gemm_rms_norm_argmax's keys, zero between steps

  std::map<int, cudaGraphExec_t> graphs;  // key: advance | feed_greedy << 1 | bench_restore << 2
  /// Set by the benchmark: launched before the step in graphs with key bit 2 (restores the rings).
  std::function<void(cudaStream_t)> bench_restore;
  void run_decode_bench();  // restore + step without advancing
  /// Launches the graph cached under `key`, capturing `record`'s launches into it on first use.
  void launch_graph(int key, const std::function<void()>& record);

  // Host side.
  std::vector<LayerStats> layer_stats;
  mutable std::vector<LayerStats> stats_view;
  Timings timings;
  std::optional<AuditStep> last_audit;
  std::vector<float> logits_host;
  std::vector<std::int32_t> greedy_host;

  void ensure_logits_rows(std::int64_t n);
  void clear_graphs();
};

}  // namespace macattn::engine
