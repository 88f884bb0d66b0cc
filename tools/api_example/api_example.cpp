// tools/api_example/api_example.cpp: the C++ API example shown in README.md. It is built and
// run as a test, and the test readme_example_in_sync checks that README.md holds the text
// between the two marker lines verbatim, so the README's example always compiles and runs.
// README example begin
#include <cmath>
#include <cstdio>
#include <vector>

#include "macattn/macattn.hpp"

int main() {
  using namespace macattn;
  const AttentionShape shape{.num_q_heads = 8, .num_kv_heads = 2, .head_dim = 64};
  MacConfig config;                      // W 512, S 256, tau 0.45, F 0, min_context 2048
  config.min_context = 0;                // match from the first step (this example's context is short)
  const Backend backend = Backend::cpu;  // or Backend::reference, the scalar oracle

  // One sequence: a contiguous K/V cache [tokens, Hkv, D] of bf16 (your model fills it).
  const int prompt = 1000, steps = 4, D = shape.head_dim;
  const size_t row = size_t(shape.num_kv_heads) * D, q_size = size_t(shape.num_q_heads) * D;
  std::vector<uint16_t> k((prompt + steps) * row), v((prompt + steps) * row);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = float_to_bf16(std::sin(0.37f * float(i)));
    v[i] = float_to_bf16(std::cos(0.11f * float(i)));
  }
  ContiguousSequence seq{k.data(), v.data(), prompt};
  auto cache = [&] { return KVCacheView::contiguous({&seq, 1}, shape.num_kv_heads, D, DType::bf16); };

  // The MAC ring of this sequence and layer, initialised from the last W prompt queries:
  // pre-RoPE (matching) and post-RoPE (attention), [rows, Hq, D].
  MacState state(shape, config, DType::bf16);
  MacStateView states[] = {state.view()};
  const int rows = prompt < config.window ? prompt : config.window;
  std::vector<float> q_pre(rows * q_size), q_post(rows * q_size);
  for (size_t i = 0; i < q_pre.size(); ++i) q_pre[i] = q_post[i] = std::sin(0.01f * float(i % q_size));
  const int32_t row_indptr[] = {0, rows};
  mac_prefill_init(shape, config, cache(), {q_post.data(), DType::f32}, {q_pre.data(), DType::f32}, row_indptr, states,
                   backend);

  // Decode: append the new token's K/V, then run MAC attention (and exact, to compare).
  std::vector<float> out_mac(q_size), out_exact(q_size);
  for (int s = 0; s < steps; ++s) {
    seq.length += 1;                                       // the new token's K/V rows are already in k and v
    const float* q = q_post.data() + (rows - 1) * q_size;  // as close to the last query as can be
    StepStats stats;
    mac_decode(shape, config, cache(), {q, DType::f32}, {q_pre.data() + (rows - 1) * q_size, DType::f32}, states,
               {out_mac.data(), DType::f32}, /*lse=*/nullptr, /*head_stats=*/nullptr, &stats, backend);
    exact_decode(shape, cache(), {q, DType::f32}, {out_exact.data(), DType::f32}, /*lse=*/nullptr, backend);
    std::printf("step %d: %s\n", s, stats.to_string().c_str());
    if (stats.heads_hit != stats.heads) return 1;  // the queries repeat, so every head hits
  }
  return 0;
}
// README example end
