// The decoder forward pass: embeddings, per layer (RMSNorm, QKV (+bias), q/k-norm, RoPE,
// K/V cache write, attention, o_proj, residual, RMSNorm, SwiGLU MLP, residual), final norm,
// lm_head. Activations fp32, [positions, features] row-major.
#include <algorithm>
#include <cmath>
#include <string>

#include "engine/cpu/linear.hpp"
#include "engine/cpu/prefill_attention.hpp"
#include "engine/session_state.hpp"
#include "macattn/attention.hpp"
#include "macattn/error.hpp"

namespace macattn::engine {

ForwardState::ForwardState(const Model& m, const SessionOptions& opt, std::int64_t capacity)
    : model(m),
      options(opt),
      shape{m.config().num_q_heads, m.config().num_kv_heads, m.config().head_dim, 0.0f},
      rope(m.config()),
      cache(m.config().num_layers, m.config().num_kv_heads, m.config().head_dim, capacity, opt.kv_page_size,
            opt.kv_dtype) {
  const std::int32_t L = m.config().num_layers;
  mac_layer.assign(L, false);
  rings.resize(L);
  if (opt.attention.mode == AttentionMode::mac) {
    for (std::int32_t l = 0; l < L; ++l) {
      mac_layer[l] = opt.attention.mac_layers.empty() || opt.attention.mac_layers[l];
      if (mac_layer[l]) rings[l].emplace(shape, opt.attention.mac, opt.attention.ring_dtype);
    }
  }
  step_stats.resize(L);
  rel_l2.assign(L, 0.0);
  const std::int64_t D = m.config().head_dim;
  cos.resize(D / 2);
  sin.resize(D / 2);
  exact_out.resize(static_cast<std::size_t>(shape.num_q_heads) * D);
}

void ForwardState::ensure_rows(std::int64_t n) {
  if (n <= rows) return;
  const ModelConfig& c = model.config();
  const std::size_t H = c.hidden_size, QD = static_cast<std::size_t>(c.num_q_heads) * c.head_dim,
                    KD = static_cast<std::size_t>(c.num_kv_heads) * c.head_dim, I = c.intermediate_size;
  const std::size_t N = static_cast<std::size_t>(n);
  x.resize(N * H);
  h.resize(N * H);
  tmp.resize(N * H);
  q.resize(N * QD);
  q_pre.resize(N * QD);
  attn.resize(N * QD);
  k.resize(N * KD);
  v.resize(N * KD);
  gate.resize(N * I);
  up.resize(N * I);
  rows = n;
}

void ForwardState::forward(const std::int32_t* tokens, std::int64_t n, std::int64_t p0, ForwardAttention mode,
                           bool all_logits, bool audit, bool init_rings) {
  const ModelConfig& c = model.config();
  ensure_rows(n);
  const std::int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_q_heads, Hkv = c.num_kv_heads,
                     I = c.intermediate_size;
  const float eps = c.rms_norm_eps;
  for (std::int64_t i = 0; i < n; ++i) cpu::embed_row(model.embed_tokens(), tokens[i], x.data() + i * H);

  for (std::int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = model.layer(l);
    auto bias = [](const WeightTensor& b) { return b.empty() ? nullptr : static_cast<const float*>(b.data); };
    cpu::rms_norm(x.data(), n, H, static_cast<const float*>(L.input_norm.data), eps, h.data());
    cpu::linear(h.data(), n, L.q_proj, bias(L.q_bias), q.data());
    cpu::linear(h.data(), n, L.k_proj, bias(L.k_bias), k.data());
    cpu::linear(h.data(), n, L.v_proj, bias(L.v_bias), v.data());
    if (c.qk_norm) {  // Qwen3: RMSNorm over each head's D values, before RoPE
      cpu::rms_norm(q.data(), n * Hq, D, static_cast<const float*>(L.q_norm.data), eps, q.data());
      cpu::rms_norm(k.data(), n * Hkv, D, static_cast<const float*>(L.k_norm.data), eps, k.data());
    }
    // MAC matches on the pre-RoPE queries (position-free), attends with the rotated ones.
    if (mac_layer[l] && mode != ForwardAttention::decode_exact && init_rings)
      std::copy_n(q.data(), n * Hq * D, q_pre.data());
    for (std::int64_t i = 0; i < n; ++i) {
      rope.angles(p0 + i, cos.data(), sin.data());
      rope.apply(q.data() + i * Hq * D, static_cast<std::int32_t>(Hq), cos.data(), sin.data());
      rope.apply(k.data() + i * Hkv * D, static_cast<std::int32_t>(Hkv), cos.data(), sin.data());
    }
    cache.write(l, p0, n, k.data(), v.data());
    attention(l, p0, n, mode, audit, init_rings);
    cpu::linear(attn.data(), n, L.o_proj, bias(L.o_bias), tmp.data());
    cpu::add_inplace(x.data(), tmp.data(), n * H);

    cpu::rms_norm(x.data(), n, H, static_cast<const float*>(L.post_attention_norm.data), eps, h.data());
    cpu::linear(h.data(), n, L.gate_proj, nullptr, gate.data());
    cpu::linear(h.data(), n, L.up_proj, nullptr, up.data());
    cpu::silu_mul(gate.data(), up.data(), n * I);
    cpu::linear(gate.data(), n, L.down_proj, nullptr, tmp.data());
    cpu::add_inplace(x.data(), tmp.data(), n * H);
  }

  // Only the positions whose logits are wanted go through the final norm and lm_head.
  const std::int64_t first = all_logits ? 0 : n - 1;
  const std::int64_t m = n - first;
  cpu::rms_norm(x.data() + first * H, m, H, static_cast<const float*>(model.final_norm().data), eps, h.data());
  logits.resize(static_cast<std::size_t>(m) * c.vocab_size);
  cpu::linear(h.data(), m, model.lm_head(), nullptr, logits.data());
}

void ForwardState::attention(std::int32_t l, std::int64_t p0, std::int64_t n, ForwardAttention mode, bool audit,
                             bool init_rings) {
  const AttentionOptions& ao = options.attention;
  const KVCacheView kv = cache.view(l, p0 + n);
  if (mode == ForwardAttention::prefill) {
    cpu::prefill_attention(shape, kv, p0, n, q.data(), attn.data());
    if (mac_layer[l] && init_rings) {
      row_indptr = {0, static_cast<std::int32_t>(n)};
      const MacStateView ring = rings[l]->view();
      mac_prefill_init(shape, ao.mac, kv, ConstTensor(q.data(), DType::f32), ConstTensor(q_pre.data(), DType::f32),
                       row_indptr, std::span<const MacStateView>(&ring, 1), ao.backend);
    }
    return;
  }
  StepStats& st = step_stats[l];
  if (mode == ForwardAttention::decode_exact || !mac_layer[l]) {
    exact_decode(shape, kv, ConstTensor(q.data(), DType::f32), Tensor{attn.data(), DType::f32}, nullptr, ao.backend);
    // Exact attention: every head a miss, every group streams all t + 1 tokens once.
    st = StepStats{};
    st.heads = shape.num_q_heads;
    st.groups = shape.num_kv_heads;
    st.kv_tokens_read = st.kv_tokens_exact = static_cast<std::int64_t>(shape.num_kv_heads) * (p0 + 1);
    rel_l2[l] = 0.0;
    return;
  }
  const MacStateView ring = rings[l]->view();
  mac_decode(shape, ao.mac, kv, ConstTensor(q.data(), DType::f32), ConstTensor(q_pre.data(), DType::f32),
             std::span<const MacStateView>(&ring, 1), Tensor{attn.data(), DType::f32}, nullptr, nullptr, &st,
             ao.backend);
  if (audit) {
    exact_decode(shape, kv, ConstTensor(q.data(), DType::f32), Tensor{exact_out.data(), DType::f32}, nullptr,
                 ao.backend);
    double diff = 0, ref = 0;
    for (std::size_t i = 0; i < exact_out.size(); ++i) {
      const double d = static_cast<double>(attn[i]) - exact_out[i];
      diff += d * d;
      ref += static_cast<double>(exact_out[i]) * exact_out[i];
    }
    rel_l2[l] = ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
  }
}

}  // namespace macattn::engine
