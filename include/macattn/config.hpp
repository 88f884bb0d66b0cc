// macattn/config.hpp: the attention shape and the MAC parameters, both validated.
#pragma once

#include <cstdint>
#include <string>

namespace macattn {

/// Shape of one attention layer's decode. Query heads are grouped: query head h reads
/// KV head h / group_size() (the GQA convention of Llama, FlashInfer and vLLM).
struct AttentionShape {
  std::int32_t num_q_heads = 32;  ///< Hq >= 1
  std::int32_t num_kv_heads = 8;  ///< Hkv >= 1, divides Hq
  std::int32_t head_dim = 128;    ///< D in [1, 1024]
  /// Softmax scale applied to q.k; 0 means the default 1/sqrt(D). Must be finite and >= 0.
  float softmax_scale = 0.0f;

  std::int32_t group_size() const { return num_q_heads / num_kv_heads; }
  /// The scale actually used: softmax_scale, or 1/sqrt(head_dim) when it is 0.
  float scale() const;
  /// Throws macattn::Error naming the bad field and value.
  void validate() const;
  std::string to_string() const;
};

/// MAC-Attention parameters (see shared docs MAC_ATTENTION.md §3). Defaults are the
/// reference implementation's.
struct MacConfig {
  /// W: ring capacity = lookback window; candidates are the last W positions. >= 1.
  std::int32_t window = 512;
  /// S: rectification offset; a ring entry written at p covers keys [min(F,E(p)), E(p)) with
  /// E(p) = max(p + 1 - S, 0). >= 1 (the current token is always in the exact tail).
  std::int32_t rect_offset = 256;
  /// tau in [0, 1): hit iff squared L2 distance of pre-RoPE queries < 2*D*(1-tau)^2.
  float tau = 0.45f;
  /// F: front-sink tokens [0, F) recomputed exactly every step and excluded from entries. >= 0.
  std::int32_t front_sinks = 0;
  /// No matching while the decode position t < min_context (exact, ring still written). >= 0.
  std::int64_t min_context = 2048;
  /// When per-head stats are requested: whether a miss reports its best row even when that
  /// row is at or over the threshold, which needs every ring row scanned in full. false: such
  /// a miss reports matched_position -1 and match_distance +inf, and the scan drops rows that
  /// cannot be hits after their first dims, as it always does when no stats are requested.
  /// Hits, band_len, kv_tokens_read and the output are the same either way. (The engine sets
  /// false: it reads only hit and kv_tokens_read.)
  bool report_miss_matches = true;

  /// The match threshold 2*D*(1-tau)^2 for head dimension D, computed in fp32.
  float threshold(std::int32_t head_dim) const;
  /// Throws macattn::Error naming the bad field and value.
  void validate() const;
  std::string to_string() const;
};

/// E(p) = max(p + 1 - S, 0): the end (exclusive) of the prefix a ring entry at p covers.
inline std::int64_t entry_end(std::int64_t p, std::int32_t rect_offset) {
  const std::int64_t e = p + 1 - rect_offset;
  return e > 0 ? e : 0;
}

}  // namespace macattn
