// Session: validation of options and inputs, chunking of prefill, the audit's double step,
// statistics and timings. The math is in forward.cpp.
#include "engine/session.hpp"

#include <algorithm>
#include <chrono>
#include <string>

#include "engine/session_state.hpp"
#include "macattn/error.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace macattn::engine {

struct Session::State {
  State(const Model& m, const SessionOptions& o, std::int64_t cap) : fwd(m, o, cap) {}
  ForwardState fwd;
  std::vector<float> exact_logits;  // audit
};

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::int32_t argmax(std::span<const float> v) {
  return static_cast<std::int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

void validate_options(const ModelConfig& c, const SessionOptions& o) {
  if (o.max_context < 0 || o.max_context > (std::int64_t{1} << 31) - 1)
    throw Error("Session: max_context = " + std::to_string(o.max_context) + " must be in [0, 2^31)");
  if (o.kv_page_size < 1) throw Error("Session: kv_page_size = " + std::to_string(o.kv_page_size) + " must be >= 1");
  if (!dtype_valid(o.kv_dtype)) throw Error("Session: kv_dtype is not f32, f16 or bf16");
  if (o.threads < 0) throw Error("Session: threads = " + std::to_string(o.threads) + " must be >= 0");
  const AttentionOptions& a = o.attention;
  if (a.mode != AttentionMode::exact && a.mode != AttentionMode::mac)
    throw Error("Session: attention.mode = " + std::to_string(static_cast<int>(a.mode)) + " is not exact or mac");
  if (a.backend != Backend::cpu && a.backend != Backend::reference)
    throw Error("Session: attention.backend = " + std::to_string(static_cast<int>(a.backend)) +
                " is not a CPU backend");
  if (!a.mac_layers.empty() && static_cast<std::int32_t>(a.mac_layers.size()) != c.num_layers)
    throw Error("Session: attention.mac_layers has " + std::to_string(a.mac_layers.size()) +
                " entries, the model has " + std::to_string(c.num_layers) + " layers");
  if (a.mode == AttentionMode::mac) {
    a.mac.validate();
    if (!dtype_valid(a.ring_dtype)) throw Error("Session: attention.ring_dtype is not f32, f16 or bf16");
  }
}

}  // namespace

const char* attention_mode_name(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::exact:
      return "exact";
    case AttentionMode::mac:
      return "mac";
  }
  return "invalid";
}

Session::Session(const Model& model, const SessionOptions& options) : model_(&model), options_(options) {
  const ModelConfig& c = model.config();
  validate_options(c, options_);
  capacity_ = options_.max_context > 0 ? options_.max_context : c.max_position_embeddings;
  if (options_.threads > 0) {
#if defined(_OPENMP)
    omp_set_num_threads(options_.threads);
#endif
  }
  set_num_threads(options_.threads);
  if (options_.cpu_products) set_cpu_products(*options_.cpu_products);
  state_ = std::make_unique<State>(model, options_, capacity_);
  layer_stats_.resize(c.num_layers);
  for (std::int32_t l = 0; l < c.num_layers; ++l) layer_stats_[l].mac_enabled = state_->fwd.mac_layer[l];
}

Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;

void Session::check_tokens_(std::span<const std::int32_t> tokens, std::int32_t chunk_size) const {
  const ModelConfig& c = model_->config();
  if (tokens.empty()) throw Error("Session::prefill: no tokens");
  if (chunk_size < 1) throw Error("Session::prefill: chunk_size = " + std::to_string(chunk_size) + " must be >= 1");
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      throw Error("Session::prefill: tokens[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) +
                  " is out of range [0, " + std::to_string(c.vocab_size) + ")");
  check_room_(static_cast<std::int64_t>(tokens.size()), "Session::prefill");
}

void Session::check_room_(std::int64_t n, const char* fn) const {
  const ModelConfig& c = model_->config();
  if (position_ + n > capacity_)
    throw Error(std::string(fn) + ": position " + std::to_string(position_) + " + " + std::to_string(n) +
                " tokens exceeds the session's max_context " + std::to_string(capacity_));
  if (c.sliding_window && position_ + n > *c.sliding_window)
    throw Error(std::string(fn) + ": " + std::to_string(position_ + n) + " tokens exceed the model's sliding_window " +
                std::to_string(*c.sliding_window) + " (sliding-window attention is not supported)");
}

void Session::run_prefill_(std::span<const std::int32_t> tokens, std::int32_t chunk_size,
                           const PrefillProgress& progress, std::vector<float>* all_logits) {
  check_tokens_(tokens, chunk_size);
  const auto t0 = Clock::now();
  const std::int64_t total = static_cast<std::int64_t>(tokens.size());
  const std::int64_t V = model_->config().vocab_size;
  if (all_logits != nullptr) all_logits->resize(static_cast<std::size_t>(total * V));
  ForwardState& f = state_->fwd;
  for (std::int64_t done = 0; done < total;) {
    const std::int64_t n = std::min<std::int64_t>(chunk_size, total - done);
    // Only the last W prompt positions get ring rows; a chunk ending before them needs none.
    // (The first chunk that does reach them finds the ring behind and wipes it first.)
    const bool init_rings = done + n > total - options_.attention.mac.window;
    f.forward(tokens.data() + done, n, position_, ForwardAttention::prefill, all_logits != nullptr, false, init_rings);
    if (all_logits != nullptr) std::copy(f.logits.begin(), f.logits.end(), all_logits->begin() + done * V);
    position_ += n;
    done += n;
    timings_.prefill_tokens += n;
    if (progress) progress(done, total);
  }
  if (all_logits != nullptr) f.logits.assign(all_logits->end() - V, all_logits->end());
  last_logits_ = f.logits;
  timings_.prefill_seconds += seconds_since(t0);
}

std::span<const float> Session::prefill(std::span<const std::int32_t> tokens, std::int32_t chunk_size,
                                        const PrefillProgress& progress) {
  run_prefill_(tokens, chunk_size, progress, nullptr);
  return last_logits_;
}

void Session::prefill_all_logits(std::span<const std::int32_t> tokens, std::int32_t chunk_size,
                                 std::vector<float>& all_logits) {
  run_prefill_(tokens, chunk_size, {}, &all_logits);
}

std::span<const float> Session::decode(std::int32_t token) {
  const ModelConfig& c = model_->config();
  if (token < 0 || token >= c.vocab_size)
    throw Error("Session::decode: token = " + std::to_string(token) + " is out of range [0, " +
                std::to_string(c.vocab_size) + ")");
  check_room_(1, "Session::decode");
  const auto t0 = Clock::now();
  ForwardState& f = state_->fwd;
  const bool audit = options_.attention.audit && options_.attention.mode == AttentionMode::mac;
  if (audit) {
    // The exact step first: it writes this position's K/V as exact attention would, then the
    // MAC step overwrites them with its own, so the cache follows the MAC trajectory.
    f.forward(&token, 1, position_, ForwardAttention::decode_exact, false, false);
    state_->exact_logits = f.logits;
  }
  f.forward(&token, 1, position_, ForwardAttention::decode, false, audit);
  last_logits_ = f.logits;
  for (std::int32_t l = 0; l < c.num_layers; ++l) {
    LayerStats& s = layer_stats_[l];
    const StepStats& st = f.step_stats[l];
    s.decode_steps += 1;
    s.attention.add(st);
    const std::int64_t row_bytes = 2LL * c.head_dim * static_cast<std::int64_t>(dtype_size(options_.kv_dtype));
    s.kv_bytes_read += st.kv_tokens_read * row_bytes;
    s.kv_bytes_exact += st.kv_tokens_exact * row_bytes;
    if (audit && s.mac_enabled) {
      s.audit_steps += 1;
      s.audit_rel_l2_sum += f.rel_l2[l];
      s.audit_rel_l2_max = std::max(s.audit_rel_l2_max, f.rel_l2[l]);
    }
  }
  if (audit) {
    AuditStep a;
    a.rel_l2.assign(f.rel_l2.begin(), f.rel_l2.end());
    for (std::int32_t l = 0; l < c.num_layers; ++l)
      if (!layer_stats_[l].mac_enabled) a.rel_l2[l] = 0.0;
    a.greedy_mac = argmax(last_logits_);
    a.greedy_exact = argmax(state_->exact_logits);
    if (a.greedy_changed()) timings_.audit_greedy_changes += 1;
    last_audit_ = std::move(a);
  }
  position_ += 1;
  timings_.decode_tokens += 1;
  timings_.decode_seconds += seconds_since(t0);
  return last_logits_;
}

void Session::reset() {
  position_ = 0;
  for (auto& r : state_->fwd.rings)
    if (r) r->reset();
  for (LayerStats& s : layer_stats_) {
    const bool mac = s.mac_enabled;
    s = LayerStats{};
    s.mac_enabled = mac;
  }
  timings_ = Timings{};
  last_audit_.reset();
  last_logits_.clear();
}

StepStats Session::total_attention_stats() const {
  StepStats t;
  for (const LayerStats& s : layer_stats_) t.add(s.attention);
  return t;
}

std::size_t Session::kv_cache_bytes() const {
  return state_->fwd.cache.bytes_for(position_);
}

std::size_t Session::ring_bytes() const {
  std::size_t b = 0;
  for (const auto& r : state_->fwd.rings)
    if (r) b += r->bytes();
  return b;
}

}  // namespace macattn::engine
