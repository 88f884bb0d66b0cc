// engine/session_state.hpp: what a Session owns besides its options (internal header):
// the K/V cache, the MAC rings, the RoPE table and the activation scratch, plus the forward
// pass over them (forward.cpp).
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "engine/cpu/ops.hpp"
#include "engine/paged_kv_cache.hpp"
#include "engine/session.hpp"
#include "macattn/mac_state.hpp"

namespace macattn::engine {

/// How the attention of one forward call is computed.
enum class ForwardAttention : std::uint8_t {
  prefill,      ///< blocked causal attention + MAC ring initialisation of MAC layers
  decode,       ///< n = 1: exact_decode / mac_decode per the session's layer choice
  decode_exact  ///< n = 1: exact_decode in every layer, rings untouched (the audit's reference)
};

struct ForwardState {
  ForwardState(const Model& model, const SessionOptions& options, std::int64_t capacity);

  const Model& model;
  SessionOptions options;  // a copy: the Session may move
  AttentionShape shape;
  cpu::Rope rope;
  PagedKVCache cache;
  std::vector<bool> mac_layer;                 // [layers]: decode this layer with MAC
  std::vector<std::optional<MacState>> rings;  // [layers]: set for MAC layers
  std::vector<std::int32_t> row_indptr{0, 0};

  // Activations of up to `rows` positions (resized on demand).
  std::int64_t rows = 0;
  std::vector<float> x, h, q, q_pre, k, v, attn, tmp, gate, up, cos, sin;
  std::vector<float> logits;     // [vocab] or [n, vocab]
  std::vector<float> exact_out;  // audit: [Hq * D]

  // Per call outputs: per-layer step stats (decode) and audit relative L2.
  std::vector<StepStats> step_stats;
  std::vector<double> rel_l2;

  /// Runs `n` tokens at positions [p0, p0 + n). Writes the logits of the last position into
  /// `logits` ([vocab]), or of every position ([n, vocab]) when all_logits.
  /// init_rings: in prefill, also initialise the MAC rings from this chunk (the Session
  /// skips chunks that end before the last `window` positions of the prompt: their ring rows
  /// would be overwritten by later chunks anyway).
  void forward(const std::int32_t* tokens, std::int64_t n, std::int64_t p0, ForwardAttention mode, bool all_logits,
               bool audit, bool init_rings = true);

 private:
  void ensure_rows(std::int64_t n);
  void attention(std::int32_t layer, std::int64_t p0, std::int64_t n, ForwardAttention mode, bool audit,
                 bool init_rings);
};

}  // namespace macattn::engine
