// engine/cuda/cuda_session.hpp: the CUDA forward pass of a Model (the GPU twin of Session).
//
// No CUDA header is included here: the CLI includes this file in builds with and without CUDA.
// Without CUDA (MACATTN_WITH_CUDA off) every constructor throws macattn::Error and
// cuda_engine_available() is false.
//
// A CudaSession holds `batch` sequences on one GPU: bf16 weights (q|k|v and gate|up
// concatenated at upload), a paged bf16 K/V cache with every page of the capacity allocated up
// front, the MAC rings of every MAC layer, and fp32 activations. Matmuls run in cuBLAS (bf16
// inputs, fp32 accumulate); RMSNorm, RoPE, SwiGLU, bias, q/k-norm, K/V append, prefill attention
// and argmax are the engine's own kernels (kernels.cu, prefill_attention.cu); decode attention
// is the library's macattn::cuda::exact_decode / mac_decode. The decode step of all layers is
// captured once into a CUDA graph and replayed: token ids, positions and the page table live in
// device memory and are advanced by kernels inside the graph.
//
//   CudaSession s(model, opt);                   // opt.batch = 1 for generation
//   auto logits = s.prefill(0, prompt_ids);      // [vocab] fp32, host
//   while (...) logits = s.decode({token});      // [batch, vocab]
//
// Head dims the library's CUDA attention does not support (it has 64/128/256) decode exact
// attention with the engine's own (slower) attention kernel; MAC mode then throws.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/model.hpp"
#include "engine/session.hpp"

namespace macattn::engine {

/// True when the engine was built with CUDA and a usable GPU is present.
bool cuda_engine_available();
/// The GPU ("NVIDIA H200 (sm_90, ...)") or why CUDA is unavailable.
std::string cuda_engine_device();

struct CudaSessionOptions {
  SessionOptions session;                ///< max_context, kv_page_size, attention (mode, mac, mac_layers, ring_dtype,
                                         ///< audit); kv_dtype must be bf16; threads and attention.backend are ignored
  std::int32_t batch = 1;                ///< sequences decoded together (each has its own cache and rings)
  bool use_graph = true;                 ///< decode steps replay one CUDA graph (false: launched eagerly)
  std::int32_t max_prefill_chunk = 512;  ///< rows of the activation buffers (prefill chunks are cut to it)
};

class CudaSession {
 public:
  /// Uploads `model` (converted to bf16). Throws macattn::Error for bad options, a model the
  /// CUDA path cannot run, too little device memory (the message gives needed vs free bytes),
  /// or any CUDA/cuBLAS failure (naming the call).
  CudaSession(const Model& model, const CudaSessionOptions& options);
  /// Random bf16 weights generated on the device by a hash of (tensor, index, seed): a model
  /// of `config`'s shape for timing only (no host copy of the weights).
  static CudaSession synthetic(const ModelConfig& config, const CudaSessionOptions& options, std::uint64_t seed);
  CudaSession(CudaSession&&) noexcept;
  CudaSession& operator=(CudaSession&&) noexcept;
  ~CudaSession();

  /// Prefills sequence `seq` with `tokens` at [position(seq), position(seq) + n), in chunks of
  /// up to `chunk_size` rows, initialising its MAC rings from the chunks that reach the last W
  /// positions. Returns the last token's logits [vocab]. Throws (and changes nothing) for a
  /// bad token, chunk size or sequence index, or when the capacity would be exceeded.
  std::span<const float> prefill(std::int32_t seq, std::span<const std::int32_t> tokens, std::int32_t chunk_size = 512,
                                 const PrefillProgress& progress = {});
  /// Like prefill, also returning every position's logits [n, vocab] (tests).
  void prefill_all_logits(std::int32_t seq, std::span<const std::int32_t> tokens, std::int32_t chunk_size,
                          std::vector<float>& all_logits);
  /// One decode step of every sequence: tokens[b] at position(b). Returns logits
  /// [batch, vocab] (host copy). Throws for a bad token or a sequence at its capacity.
  std::span<const float> decode(std::span<const std::int32_t> tokens);
  /// decode() without copying the logits back: only the greedy (argmax) ids [batch].
  std::span<const std::int32_t> decode_greedy(std::span<const std::int32_t> tokens);

  std::int32_t batch() const;
  std::int64_t position(std::int32_t seq = 0) const;
  std::int64_t capacity() const;
  /// All sequences back to position 0, rings wiped, stats and timings zeroed.
  void reset();

  const ModelConfig& config() const;
  const CudaSessionOptions& options() const;
  /// Per-layer totals over the decode steps (summed over the batch).
  const std::vector<LayerStats>& layer_stats() const;
  StepStats total_attention_stats() const;
  const Timings& timings() const;
  const std::optional<AuditStep>& last_audit() const;  ///< batch 1 only, as Session's
  std::size_t kv_cache_bytes() const;                  ///< bytes of K/V in use by the current positions
  std::size_t ring_bytes() const;
  std::size_t weight_bytes() const;  ///< device bytes of the uploaded weights
  /// Weight bytes one decode step reads (every matrix but the embedding, plus B embedding rows).
  std::size_t decode_weight_bytes() const;
  /// True when decode attention goes through the library (false: the engine's own kernel).
  bool library_attention() const;

  struct Impl;  // engine/cuda/cuda_session_impl.cuh
  Impl& impl() { return *impl_; }

 private:
  explicit CudaSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace macattn::engine
