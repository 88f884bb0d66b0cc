// engine/session.hpp: one sequence's inference state over a Model: the paged K/V cache, the
// per-layer MAC rings, scratch buffers, statistics and timings.
//
// Usage:
//   Model model = Model::load(dir);
//   SessionOptions opt;  opt.attention.mode = AttentionMode::mac;  opt.max_context = 65536;
//   Session s(model, opt);
//   std::span<const float> logits = s.prefill(prompt_ids, 512, progress);   // [vocab]
//   while (...) { int32_t tok = sample(logits); logits = s.decode(tok); }
//
// A returned span stays valid until the next prefill/decode/reset on this Session.
// Positions: after prefill of P tokens position() = P; decode(token) places `token` at
// position() and advances it by one. RoPE positions are absolute (0-based).
// Threads: Session sets OpenMP's and the attention library's thread count to
// options.threads (0 = all cores) on construction (both are process-wide).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "engine/model.hpp"
#include "macattn/attention.hpp"
#include "macattn/config.hpp"

namespace macattn::engine {

enum class AttentionMode : std::uint8_t { exact = 0, mac = 1 };
const char* attention_mode_name(AttentionMode mode);

/// The attention used by decode steps of one run.
struct AttentionOptions {
  AttentionMode mode = AttentionMode::exact;
  MacConfig mac;  ///< W, S, tau, F, min_context; validated by the Session
  /// Per-layer enable for MAC: empty = every layer; else exactly num_layers entries, and a
  /// layer with `false` decodes with exact attention even in mac mode.
  std::vector<bool> mac_layers;
  /// Element type of the MAC rings' qring/oring (bf16 as the paper; f32 = exact storage).
  DType ring_dtype = DType::bf16;
  /// Audit (mac mode only): each decode step also runs the step with exact attention in
  /// every layer (same cache, same position) and reports, per layer, the relative L2 of the
  /// MAC attention output vs exact attention on the same queries, and whether the greedy
  /// (argmax) token of the MAC logits differs from the exact logits'. About 2x decode cost.
  bool audit = false;
  Backend backend = Backend::cpu;  ///< library backend for decode and ring init
};

struct SessionOptions {
  /// Capacity in tokens (prompt + generated). 0 = config.max_position_embeddings. The K/V
  /// pages are allocated lazily as positions grow; exceeding the capacity throws.
  std::int64_t max_context = 0;
  std::int32_t kv_page_size = 256;  ///< tokens per K/V page (NHD layout)
  DType kv_dtype = DType::bf16;     ///< K/V cache element type (f32 for bit-closest to HF)
  AttentionOptions attention;
  int threads = 0;  ///< 0 = OpenMP default (all cores / OMP_NUM_THREADS)
  /// Set: macattn::set_cpu_products(*cpu_products) on construction (process-wide; the CPU
  /// attention's bf16 products). Unset: whatever is in effect (MACATTN_CPU_PRODUCTS or fp32).
  std::optional<CpuProducts> cpu_products;
};

/// Per-layer totals over the decode steps of this session (since construction or reset()).
struct LayerStats {
  std::int64_t decode_steps = 0;
  bool mac_enabled = false;         ///< this layer decodes with MAC
  StepStats attention;              ///< heads/heads_hit/groups/kv_tokens_read/kv_tokens_exact summed
                                    ///< (exact layers: every head a miss, read = exact)
  std::int64_t kv_bytes_read = 0;   ///< kv_tokens_read * 2 (K and V) * D * sizeof(kv_dtype)
  std::int64_t kv_bytes_exact = 0;  ///< the same for exact attention
  // Audit only (steps with audit on):
  std::int64_t audit_steps = 0;
  double audit_rel_l2_sum = 0.0;  ///< sum over steps of ||o_mac - o_exact|| / ||o_exact||
  double audit_rel_l2_max = 0.0;
  double head_hit_rate() const { return attention.hit_rate(); }
  double audit_rel_l2_mean() const { return audit_steps ? audit_rel_l2_sum / static_cast<double>(audit_steps) : 0.0; }
};

/// What the audit of the latest decode step found (mac mode with audit on).
struct AuditStep {
  std::vector<double> rel_l2;      ///< [num_layers]; 0 for layers decoding exactly
  std::int32_t greedy_mac = -1;    ///< argmax of the returned (MAC) logits
  std::int32_t greedy_exact = -1;  ///< argmax of the all-exact logits
  bool greedy_changed() const { return greedy_mac != greedy_exact; }
};

struct Timings {
  std::int64_t prefill_tokens = 0;
  double prefill_seconds = 0.0;
  std::int64_t decode_tokens = 0;
  double decode_seconds = 0.0;            ///< includes audit work when audit is on
  std::int64_t audit_greedy_changes = 0;  ///< audited steps whose greedy token would change
  double prefill_tokens_per_second() const { return prefill_seconds > 0 ? prefill_tokens / prefill_seconds : 0.0; }
  double decode_tokens_per_second() const { return decode_seconds > 0 ? decode_tokens / decode_seconds : 0.0; }
};

/// Called after each prefill chunk with (tokens done, tokens total). May throw to abort
/// (the session is then left at the last completed chunk's position).
using PrefillProgress = std::function<void(std::int64_t done, std::int64_t total)>;

class Session {
 public:
  /// `model` must outlive the Session. Throws macattn::Error for bad options (page size
  /// < 1, max_context < 0 or above 2^31, mac_layers of the wrong length, bad MacConfig, ...).
  Session(const Model& model, const SessionOptions& options = {});
  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  ~Session();

  /// Runs `tokens` (each in [0, vocab)) at positions [position(), position() + n) in chunks of
  /// `chunk_size` tokens (>= 1): writes their K/V, initialises the MAC rings of every
  /// MAC-enabled layer (mac_prefill_init, for the chunks that reach the last W positions:
  /// only those get ring rows), and returns the logits of the last token: [vocab] fp32.
  /// n >= 1. Prefill may follow earlier prefill or decode calls. Throws macattn::Error (and
  /// changes nothing) for a bad token or chunk size, or when position() + n exceeds the
  /// capacity or a Mistral-style sliding_window (sliding-window attention is not implemented).
  std::span<const float> prefill(std::span<const std::int32_t> tokens, std::int32_t chunk_size = 512,
                                 const PrefillProgress& progress = {});
  /// Like prefill, and also writes the logits of every token: all_logits [n, vocab] fp32
  /// (resized). For tests and scoring; costs an lm_head product per token.
  void prefill_all_logits(std::span<const std::int32_t> tokens, std::int32_t chunk_size,
                          std::vector<float>& all_logits);
  /// One token at position(); returns its logits [vocab] fp32. Attention per options.
  std::span<const float> decode(std::int32_t token);

  std::int64_t position() const { return position_; }
  std::int64_t capacity() const { return capacity_; }
  /// Back to position 0: cache emptied (pages kept), rings wiped, stats and timings zeroed.
  void reset();

  const SessionOptions& options() const { return options_; }
  const Model& model() const { return *model_; }
  const std::vector<LayerStats>& layer_stats() const { return layer_stats_; }
  /// Sum over layers of layer_stats().attention.
  StepStats total_attention_stats() const;
  const Timings& timings() const { return timings_; }
  /// The latest decode step's audit (nullopt unless audit is on and a step ran).
  const std::optional<AuditStep>& last_audit() const { return last_audit_; }
  /// Bytes held by the K/V pages and the rings now.
  std::size_t kv_cache_bytes() const;
  std::size_t ring_bytes() const;

 private:
  struct State;  // cache, rings, scratch (engine/session_state.hpp)
  const Model* model_ = nullptr;
  SessionOptions options_;
  std::unique_ptr<State> state_;
  std::int64_t position_ = 0;
  std::int64_t capacity_ = 0;
  std::vector<LayerStats> layer_stats_;
  Timings timings_;
  std::optional<AuditStep> last_audit_;
  std::vector<float> last_logits_;

  void check_tokens_(std::span<const std::int32_t> tokens, std::int32_t chunk_size) const;
  void check_room_(std::int64_t n, const char* fn) const;
  void run_prefill_(std::span<const std::int32_t> tokens, std::int32_t chunk_size, const PrefillProgress& progress,
                    std::vector<float>* all_logits);
};

}  // namespace macattn::engine
