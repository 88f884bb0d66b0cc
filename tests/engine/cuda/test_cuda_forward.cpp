// The CUDA forward pass (engine/cuda) against the CPU engine (itself checked against
// transformers in test_hf_parity.cpp): logits of prefill and decode on every fixture
// architecture, greedy generations, MAC that cannot hit == exact, the MAC audit on the shipped
// model with the passkey prompt, graph replay == eager launches, batches, errors; the decode
// matmul kernel (skinny GEMM) against an fp64 host loop, and its session path against cuBLAS.
// Without a usable GPU (or a build without CUDA) every test is SKIPPED with the reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/cuda/cuda_gemv_check.hpp"
#include "engine/cuda/cuda_session.hpp"
#include "engine/model.hpp"
#include "engine/session.hpp"
#include "engine/tokenizer/tokenizer.hpp"
#include "engine_test_util.hpp"
#include "macattn/error.hpp"

namespace {

using namespace macattn::engine;
using engine_test::Reference;

// bf16 weights, bf16 matmul inputs and bf16 K/V on the GPU vs fp32 activations on the CPU:
// max|diff| / max|ref| of a logits row.
constexpr double kTol = 5e-2;

#define SKIP_WITHOUT_GPU()                                                                           \
  do {                                                                                               \
    if (!cuda_engine_available()) GTEST_SKIP() << "no usable CUDA device: " << cuda_engine_device(); \
  } while (0)

CudaSessionOptions gpu_options(std::int64_t max_context, AttentionMode mode = AttentionMode::exact) {
  CudaSessionOptions o;
  o.session.max_context = max_context;
  o.session.kv_page_size = 16;
  o.session.attention.mode = mode;
  return o;
}

SessionOptions cpu_options(std::int64_t max_context, AttentionMode mode = AttentionMode::exact) {
  SessionOptions o;
  o.max_context = max_context;
  o.kv_page_size = 16;
  o.attention.mode = mode;
  return o;
}

class CudaFixtures : public ::testing::TestWithParam<const char*> {
 protected:
  std::filesystem::path dir() const { return engine_test::fixtures() / GetParam(); }
};

TEST_P(CudaFixtures, PrefillAndDecodeLogitsMatchCpu) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(dir());
  const Reference ref = engine_test::load_reference(dir());
  const std::int64_t P = static_cast<std::int64_t>(ref.prompt_ids.size());
  for (std::int32_t chunk : {512, 7}) {
    Session cpu(model, cpu_options(256));
    CudaSession gpu(model, gpu_options(256));
    std::vector<float> want, got;
    cpu.prefill_all_logits(ref.prompt_ids, chunk, want);
    gpu.prefill_all_logits(0, ref.prompt_ids, chunk, got);
    ASSERT_EQ(got.size(), want.size());
    double worst = 0;
    for (std::int64_t p = 0; p < P; ++p) {
      const double e = engine_test::rel_err(std::span(got).subspan(p * ref.vocab, ref.vocab),
                                            std::span(want).subspan(p * ref.vocab, ref.vocab));
      worst = std::max(worst, e);
      EXPECT_LT(e, kTol) << GetParam() << " chunk " << chunk << " position " << p;
    }
    std::printf("[ info ] %s prefill chunk %d: worst rel err vs CPU %.2e\n", GetParam(), chunk, worst);
  }
  // Half prefilled, the rest decoded one token at a time (graph replays).
  Session cpu(model, cpu_options(256));
  CudaSession gpu(model, gpu_options(256));
  const std::int64_t half = P / 2;
  auto a = cpu.prefill(std::span(ref.prompt_ids).first(half), 16);
  auto b = gpu.prefill(0, std::span(ref.prompt_ids).first(half), 16);
  EXPECT_LT(engine_test::rel_err(b, a), kTol);
  for (std::int64_t p = half; p < P; ++p) {
    a = cpu.decode(ref.prompt_ids[p]);
    b = gpu.decode(std::span(&ref.prompt_ids[p], 1));
    EXPECT_LT(engine_test::rel_err(b, a), kTol) << GetParam() << " decode position " << p;
  }
  EXPECT_EQ(gpu.position(), P);
}

TEST_P(CudaFixtures, GreedyGenerationMatchesTransformers) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(dir());
  const Reference ref = engine_test::load_reference(dir());
  CudaSession gpu(model, gpu_options(256));
  auto logits = gpu.prefill(0, ref.prompt_ids, 16);
  // Ids must agree up to the first step whose transformers top-2 margin is below what bf16
  // weights and activations can resolve; later steps follow a possibly different text.
  for (std::size_t i = 0; i < ref.greedy_ids.size(); ++i) {
    const std::int32_t got = engine_test::argmax(logits);
    if (i < ref.margins.size() && ref.margins[i] < 0.05f) {
      std::printf("[ info ] %s: compared %zu greedy ids (step %zu margin %.3g)\n", GetParam(), i, i, ref.margins[i]);
      return;
    }
    ASSERT_EQ(got, ref.greedy_ids[i]) << GetParam() << " greedy step " << i;
    logits = gpu.decode(std::span(&got, 1));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaFixtures,
                         ::testing::Values("llama_f32", "llama3_bf16_sharded", "llama_tied_hd32_bias_f16",
                                           "mistral_bf16", "qwen2_bf16", "qwen3_f32_tied"),
                         [](const auto& info) { return std::string(info.param); });

std::filesystem::path ref_model() {
  return engine_test::source_dir() / "models/macattn-ref";
}

std::vector<std::int32_t> passkey_prompt(std::size_t max_tokens) {
  const auto tok = Tokenizer::load(ref_model() / "tokenizer.json", ref_model() / "tokenizer_config.json");
  std::ifstream f(engine_test::source_dir() / "prompts/passkey_12k.txt", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto ids = tok.encode(text, true);
  if (ids.size() > max_tokens) ids.resize(max_tokens);
  return ids;
}

TEST(CudaReferenceModel, MacThatCannotHitEqualsExact) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(ref_model());
  const auto prompt = passkey_prompt(3000);
  std::vector<std::vector<std::int32_t>> runs;
  for (AttentionMode mode : {AttentionMode::exact, AttentionMode::mac}) {
    CudaSessionOptions o = gpu_options(4096, mode);
    o.session.attention.mac.min_context = 1 << 30;
    CudaSession s(model, o);
    auto logits = s.prefill(0, prompt, 512);
    std::vector<std::int32_t> ids;
    for (int i = 0; i < 24; ++i) {
      ids.push_back(engine_test::argmax(logits));
      logits = s.decode(std::span(&ids.back(), 1));
    }
    if (mode == AttentionMode::mac) {
      EXPECT_EQ(s.total_attention_stats().heads_hit, 0);
    }
    runs.push_back(ids);
  }
  EXPECT_EQ(runs[0], runs[1]);
}

TEST(CudaReferenceModel, GreedyMatchesCpuEngine) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(ref_model());
  const auto prompt = passkey_prompt(2000);
  Session cpu(model, cpu_options(4096));
  CudaSession gpu(model, gpu_options(4096));
  auto a = cpu.prefill(prompt, 512);
  auto b = gpu.prefill(0, prompt, 512);
  EXPECT_LT(engine_test::rel_err(b, a), kTol);
  // Greedy ids identical while the CPU's top-2 margin is one bf16 activations can resolve
  // (a near-tie may go either way; the text after it would differ legitimately).
  int same = 0;
  bool near_tie = false;
  for (int i = 0; i < 32; ++i) {
    const std::int32_t ta = engine_test::argmax(a), tb = engine_test::argmax(b);
    std::vector<float> sorted(a.begin(), a.end());
    std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
    if (sorted[0] - sorted[1] < 0.05f * std::max(1.0f, std::fabs(sorted[0]))) {
      near_tie = true;
      break;
    }
    ASSERT_EQ(tb, ta) << "greedy step " << i;
    ++same;
    a = cpu.decode(ta);
    b = gpu.decode(std::span(&tb, 1));
    EXPECT_LT(engine_test::rel_err(b, a), kTol) << "decode step " << i;
  }
  std::printf("[ info ] reference model: %d greedy ids identical to the CPU engine%s\n", same,
              near_tie ? " (then a near-tie at the CPU)" : "");
  EXPECT_GE(same, 8);
}

TEST(CudaReferenceModel, MacAuditOnPasskeyPrompt) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(ref_model());
  const auto prompt = passkey_prompt(16000);
  CudaSessionOptions o = gpu_options(16384, AttentionMode::mac);
  o.session.attention.audit = true;
  CudaSession s(model, o);
  auto logits = s.prefill(0, prompt, 512);
  for (int i = 0; i < 32; ++i) {
    const std::int32_t t = engine_test::argmax(logits);
    logits = s.decode(std::span(&t, 1));
    ASSERT_TRUE(s.last_audit().has_value());
  }
  const auto& stats = s.layer_stats();
  for (std::size_t l = 0; l < stats.size(); ++l) {
    std::printf("[ info ] layer %zu: head hit rate %.3f, audit rel L2 mean %.2e max %.2e, K/V read %.3f of exact\n", l,
                stats[l].head_hit_rate(), stats[l].audit_rel_l2_mean(), stats[l].audit_rel_l2_max,
                stats[l].kv_bytes_exact ? double(stats[l].kv_bytes_read) / double(stats[l].kv_bytes_exact) : 0.0);
    EXPECT_EQ(stats[l].audit_steps, 32);
    EXPECT_TRUE(std::isfinite(stats[l].audit_rel_l2_max));
    EXPECT_LT(stats[l].audit_rel_l2_max, 0.5) << "layer " << l;
  }
  std::printf("[ info ] audit: greedy token changed by MAC in %lld of 32 steps; overall head hit rate %.3f\n",
              static_cast<long long>(s.timings().audit_greedy_changes), s.total_attention_stats().hit_rate());
}

TEST(CudaReferenceModel, GraphReplayEqualsEagerAndBatchRowsEqualBatchOne) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(ref_model());
  const auto prompt = passkey_prompt(2500);
  std::vector<std::vector<float>> runs;
  std::vector<std::int32_t> fed;  // the tokens of the graph run, fed again to the batch below
  for (bool graph : {false, true}) {
    CudaSessionOptions o = gpu_options(4096, AttentionMode::mac);
    o.session.attention.mac.min_context = 1024;
    o.use_graph = graph;
    CudaSession s(model, o);
    auto logits = s.prefill(0, prompt, 512);
    std::vector<float> all;
    fed.clear();
    for (int i = 0; i < 8; ++i) {
      const std::int32_t t = engine_test::argmax(logits);
      fed.push_back(t);
      logits = s.decode(std::span(&t, 1));
      all.insert(all.end(), logits.begin(), logits.end());
    }
    runs.push_back(all);
  }
  ASSERT_EQ(runs[0].size(), runs[1].size());
  EXPECT_TRUE(runs[0] == runs[1]) << "graph replay differs from eager launches (rel err of the last step "
                                  << engine_test::rel_err(std::span(runs[1]).last(runs[1].size() / 8),
                                                          std::span(runs[0]).last(runs[0].size() / 8))
                                  << ")";

  // Two sequences with the same prompt: each row as batch 1 (up to the matmul's batch-size
  // dependent summation order).
  CudaSessionOptions o = gpu_options(4096, AttentionMode::mac);
  o.session.attention.mac.min_context = 1024;
  o.batch = 2;
  CudaSession s(model, o);
  s.prefill(0, prompt, 512);
  s.prefill(1, prompt, 512);
  const std::size_t V = static_cast<std::size_t>(model.config().vocab_size);
  for (int i = 0; i < 8; ++i) {
    const std::vector<std::int32_t> toks(2, fed[i]);
    auto logits = s.decode(toks);
    const std::span<const float> r0 = logits.subspan(0, V), r1 = logits.subspan(V, V);
    const std::span<const float> want(runs[1].data() + i * V, V);
    // The batch-2 matmuls may sum in another order; a MAC decision near the threshold may
    // then flip, hence the same tolerance as against the CPU.
    EXPECT_LT(engine_test::rel_err(r0, want), kTol) << "step " << i;
    EXPECT_LT(engine_test::rel_err(r1, want), kTol) << "step " << i;
    EXPECT_EQ(engine_test::rel_err(r0, r1), 0.0) << "two identical sequences of one batch differ, step " << i;
  }
}

TEST(CudaSessionErrors, BadTokensAndCapacity) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(engine_test::fixtures() / "llama_f32");
  CudaSession s(model, gpu_options(8));
  const std::int32_t bad = model.config().vocab_size;
  const std::vector<std::int32_t> bad_prompt{1, bad};
  EXPECT_THROW(s.prefill(0, bad_prompt), macattn::Error);
  EXPECT_EQ(s.position(), 0);
  EXPECT_THROW(s.prefill(1, std::vector<std::int32_t>{1}), macattn::Error);
  const std::vector<std::int32_t> nine(9, 1);
  EXPECT_THROW(s.prefill(0, nine), macattn::Error);
  s.prefill(0, std::vector<std::int32_t>(8, 1));
  const std::int32_t one = 1;
  EXPECT_THROW(s.decode(std::span(&one, 1)), macattn::Error);
  EXPECT_THROW(s.decode(std::span(&bad, 1)), macattn::Error);
  CudaSessionOptions o = gpu_options(8);
  o.session.kv_dtype = macattn::DType::f32;
  EXPECT_THROW(CudaSession(model, o), macattn::Error);
}

// ---------------------------------------------------------------------------------------
// The decode matmul kernel (gpu::skinny_gemm, engine/cuda/skinny_gemm_impl.cuh) on random data
// against an fp64 host loop: odd sizes, N = 1..8, y = / y +=, fp32 input, SwiGLU epilogue, the
// scalar fallback (forced, odd `in`, misaligned pointers).

float round_bf16(float f) {  // round to nearest even, as __float2bfloat16_rn (no NaN here)
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Rng {
  std::uint64_t s;
  float uniform(float a) {  // [-a, a)
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return a * (static_cast<float>(s >> 40) / 8388608.0f - 1.0f);
  }
};

// The four forms each case runs in turn (mode 0..kGemvModes-1): y = x W^T and y += x W^T from
// bf16 x, y += from fp32 x (o_proj), SwiGLU (gate|up).
constexpr int kGemvModes = 4;
void set_gemv_mode(GemvCheck& c, int mode) {
  c.accumulate = mode == 1 || mode == 2;
  c.f32_input = mode == 2;
  c.swiglu = mode == 3;
}

// Runs one case on the device and checks every output; returns the worst error / tolerance.
double check_gemv_case(const GemvCheck& c, std::uint64_t seed) {
  const std::int64_t rows = (c.swiglu ? 2 : 1) * c.out;
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 12345};
  std::vector<float> w(static_cast<std::size_t>(rows * c.in)), x(static_cast<std::size_t>(c.n * c.in));
  for (float& v : w) v = round_bf16(rng.uniform(1.0f));
  for (float& v : x) v = c.f32_input ? rng.uniform(1.0f) : round_bf16(rng.uniform(1.0f));
  // The fused RMSNorm: bf16 rows of different scales (a residual stream's), bf16 norm weights
  // around 1.
  std::vector<float> g;
  std::vector<double> inv(static_cast<std::size_t>(c.n), 1.0);
  if (c.rms_norm) {
    for (std::int64_t r = 0; r < c.n; ++r) {
      const float scale = 0.05f + 8.0f * std::fabs(rng.uniform(1.0f));
      double ss = 0.0;
      for (std::int64_t k = 0; k < c.in; ++k) {
        float& v = x[static_cast<std::size_t>(r * c.in + k)];
        v = round_bf16(scale * rng.uniform(1.0f));
        ss += static_cast<double>(v) * v;
      }
      inv[static_cast<std::size_t>(r)] = 1.0 / std::sqrt(ss / static_cast<double>(c.in) + c.eps);
    }
    g.resize(static_cast<std::size_t>(c.in));
    for (float& v : g) v = round_bf16(1.0f + 0.5f * rng.uniform(1.0f));
  }
  std::vector<float> y0(static_cast<std::size_t>(c.n * c.out), 0.0f);
  if (c.accumulate)
    for (float& v : y0) v = rng.uniform(4.0f);
  std::vector<float> y = y0;
  // Every other plain case also asks for the bf16 copy of y (the fused norm's input).
  std::vector<float> yb;
  const bool copy = !c.swiglu && !c.rms_norm && seed % 2 == 0;
  const bool vec = cuda_gemv_check(c, w, x, y, g, copy ? &yb : nullptr);
  if (copy) {
    int wrong = 0;
    for (std::size_t i = 0; i < y.size(); ++i)
      if (!(yb[i] == round_bf16(y[i])) && ++wrong <= 3)
        ADD_FAILURE() << "bf16 copy of y[" << i << "] = " << yb[i] << ", want " << round_bf16(y[i]);
  }
  const std::size_t xs = c.f32_input ? 4 : 2;
  const bool want_vec = !c.force_scalar && c.in % 8 == 0 && (c.misalign * 2) % 16 == 0 &&
                        (c.misalign * static_cast<std::int64_t>(xs)) % 16 == 0;
  EXPECT_EQ(vec, want_vec) << "16-byte path chosen wrongly: n " << c.n << " out " << c.out << " in " << c.in;
  const std::string what = "n " + std::to_string(c.n) + " out " + std::to_string(c.out) + " in " +
                           std::to_string(c.in) + (c.f32_input ? " f32" : " bf16") + (c.accumulate ? " +=" : "") +
                           (c.swiglu ? " swiglu" : "") + (c.force_scalar ? " scalar" : "") +
                           (c.rms_norm ? " rms_norm" : "") + " misalign " + std::to_string(c.misalign);
  // With the fused RMSNorm: inv_r * sum_k W x g, the sums scaled likewise.
  const auto dot = [&](std::int64_t r, std::int64_t row, double& abs_sum) {
    double s = 0.0;
    abs_sum = 0.0;
    for (std::int64_t k = 0; k < c.in; ++k) {
      const float xr = x[static_cast<std::size_t>(r * c.in + k)];
      const double xv = c.rms_norm ? static_cast<double>(xr) * g[static_cast<std::size_t>(k)] : round_bf16(xr);
      const double t = static_cast<double>(w[static_cast<std::size_t>(row * c.in + k)]) * xv;
      s += t;
      abs_sum += std::fabs(t);
    }
    abs_sum *= inv[static_cast<std::size_t>(r)];
    return s * inv[static_cast<std::size_t>(r)];
  };
  double worst = 0.0;
  int failures = 0;
  for (std::int64_t r = 0; r < c.n; ++r) {
    for (std::int64_t o = 0; o < c.out; ++o) {
      const std::size_t i = static_cast<std::size_t>(r * c.out + o);
      double want = 0.0, tol = 0.0;
      if (c.swiglu) {
        double ag = 0.0, au = 0.0;
        const double g = dot(r, o, ag), u = dot(r, c.out + o, au);
        const double silu = g / (1.0 + std::exp(-g));
        want = silu * u;
        // fp32 sums (relative 1e-5 of the absolute sums), then one bf16 rounding of the result.
        tol = std::ldexp(std::fabs(want), -8) + 2e-5 * ((1.2 * std::fabs(u) + 1.0) * ag + (std::fabs(silu) + 1.0) * au) +
              1e-30;
      } else {
        double a = 0.0;
        want = dot(r, o, a) + y0[i];
        tol = 1e-5 * (a + std::fabs(y0[i])) + 1e-30;
      }
      const double err = std::fabs(static_cast<double>(y[i]) - want);
      const bool ok = err <= tol;  // false for NaN (an unwritten output)
      if (!ok && ++failures <= 5)
        ADD_FAILURE() << what << ": row " << r << " output " << o << " got " << y[i] << " want " << want << " (tol "
                      << tol << ")";
      if (ok) worst = std::max(worst, err / tol);
    }
  }
  if (failures > 5) ADD_FAILURE() << what << ": " << failures << " wrong outputs in all";
  return worst;
}

TEST(CudaSkinnyGemm, MatchesFp64HostLoop) {
  SKIP_WITHOUT_GPU();
  // Both 16-byte kernels: the tensor-core one (default) and the fp32-FMA one.
  for (const bool fma : {false, true}) {
  double worst = 0.0;
  int cases = 0;
  std::uint64_t seed = fma ? 50000 : 1;
  for (const std::int64_t in : {4096, 11008, 896, 384, 40, 8, 1, 37, 1001, 72, 520}) {
    for (const std::int64_t out : {1, 2, 3, 4, 5, 7, 13, 67}) {
      for (std::int64_t n = 1; n <= 8; ++n) {
        GemvCheck c;
        c.fma = fma;
        c.n = n;
        c.out = out;
        c.in = in;
        for (int mode = 0; mode < kGemvModes; ++mode) {
          set_gemv_mode(c, mode);
          worst = std::max(worst, check_gemv_case(c, seed++));
          ++cases;
          if (HasFailure()) return;
        }
      }
    }
  }
  // lm_head-like: many outputs, not a multiple of the rows per block.
  for (const std::int64_t n : {1, 4, 8}) {
    GemvCheck c;
    c.fma = fma;
    c.n = n;
    c.out = 1031;
    c.in = 4096;
    worst = std::max(worst, check_gemv_case(c, seed++));
    c.swiglu = true;
    worst = std::max(worst, check_gemv_case(c, seed++));
    cases += 2;
  }
  std::printf("[ info ] skinny GEMM (%s kernel): %d cases, worst error %.3f of the tolerance\n", fma ? "fma" : "mma",
              cases, worst);
  }
}

TEST(CudaSkinnyGemm, ScalarFallbackMatchesFp64HostLoop) {
  SKIP_WITHOUT_GPU();
  double worst = 0.0;
  int cases = 0;
  std::uint64_t seed = 100000;
  for (const std::int64_t in : {4096, 896, 384, 40, 37}) {
    for (const std::int64_t out : {1, 3, 4, 13}) {
      for (const std::int64_t n : {1, 2, 3, 5, 8}) {
        // Forced scalar; W and x one element off (2/4 bytes: scalar chosen); 8 elements off
        // (16 bytes for bf16: the 16-byte path again, from an offset pointer).
        for (const std::int64_t misalign : {0, 1, 3, 8}) {
          for (int mode = 0; mode < kGemvModes; ++mode) {
            GemvCheck c;
            c.n = n;
            c.out = out;
            c.in = in;
            c.force_scalar = misalign == 0;
            c.misalign = misalign;
            set_gemv_mode(c, mode);
            worst = std::max(worst, check_gemv_case(c, seed++));
            ++cases;
            if (HasFailure()) return;
          }
        }
      }
    }
  }
  std::printf("[ info ] skinny GEMM fallbacks: %d cases, worst error %.3f of the tolerance\n", cases, worst);
}

TEST(CudaSkinnyGemm, FusedRmsNormMatchesFp64HostLoop) {
  SKIP_WITHOUT_GPU();
  // skinny_gemm_rms_norm and skinny_gemm_swiglu_rms_norm against inv_r * W (g x) in fp64: the
  // 16-byte FMA kernel and the scalar one (forced, odd `in`, misaligned pointers), 1-4 rows.
  double worst = 0.0;
  int cases = 0;
  std::uint64_t seed = 200000;
  for (const std::int64_t in : {4096, 11008, 896, 40, 8, 1, 37, 1001, 520}) {
    for (const std::int64_t out : {1, 3, 4, 13, 67}) {
      for (std::int64_t n = 1; n <= 4; ++n) {
        for (const std::int64_t misalign : {0, 3, 8}) {
          for (const bool force_scalar : {false, true}) {
            if (force_scalar && misalign != 0) continue;
            for (const bool swiglu : {false, true}) {
              GemvCheck c;
              c.fma = true;
              c.rms_norm = true;
              c.eps = (seed % 2) != 0 ? 1e-5f : 1e-6f;
              c.n = n;
              c.out = out;
              c.in = in;
              c.misalign = misalign;
              c.force_scalar = force_scalar;
              c.swiglu = swiglu;
              worst = std::max(worst, check_gemv_case(c, seed++));
              ++cases;
              if (HasFailure()) return;
            }
          }
        }
      }
    }
  }
  // lm_head-like: many outputs, not a multiple of the rows per block.
  for (const std::int64_t n : {1, 4}) {
    GemvCheck c;
    c.fma = true;
    c.rms_norm = true;
    c.n = n;
    c.out = 1031;
    c.in = 4096;
    worst = std::max(worst, check_gemv_case(c, seed++));
    ++cases;
  }
  std::printf("[ info ] skinny GEMM with a fused RMSNorm: %d cases, worst error %.3f of the tolerance\n", cases,
              worst);
  // Refused: more than 4 rows, the tensor-core kernel, accumulate.
  const std::vector<float> w(4096 * 8, 0.5f), g(4096, 1.0f);
  std::vector<float> y;
  GemvCheck c;
  c.rms_norm = true;
  c.fma = true;
  c.out = 8;
  c.in = 4096;
  c.n = 5;
  EXPECT_THROW(cuda_gemv_check(c, w, std::vector<float>(5 * 4096, 1.0f), y, g), macattn::Error);
  c.n = 1;
  c.fma = false;  // mma
  EXPECT_THROW(cuda_gemv_check(c, w, std::vector<float>(4096, 1.0f), y, g), macattn::Error);
}

// Whether two outputs are the same bits (NaN where neither was written included).
void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  int wrong = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0 && ++wrong <= 3)
      ADD_FAILURE() << what << "[" << i << "]: fused " << a[i] << ", separate " << b[i];
  if (wrong > 3) ADD_FAILURE() << what << ": " << wrong << " values differ in all";
}

// One q|k|v + RoPE case: run fused (skinny_gemm_rms_norm_qkv_rope) and as the two kernels it
// replaces; every output must be the same bits, and q_pre, q and the appended K/V rows within fp32
// (bf16 for the pages) rounding of an fp64 host loop. Returns the worst error over the tolerance.
double check_qkv_rope_case(const QkvRopeCheck& shape, bool with_bias, std::uint64_t seed, bool expect_fused) {
  Rng rng{seed * 0x9E3779B97F4A7C15ull + 777};
  const std::int64_t Hq = shape.num_q_heads, Hkv = shape.num_kv_heads, D = shape.head_dim, in = shape.in;
  const std::int64_t out = (Hq + 2 * Hkv) * D, half = D / 2;
  std::vector<float> w(static_cast<std::size_t>(out * in)), x(static_cast<std::size_t>(shape.n * in)),
      g(static_cast<std::size_t>(in)), bias, inv_freq(static_cast<std::size_t>(half));
  for (float& v : w) v = round_bf16(rng.uniform(1.0f));
  std::vector<double> inv(static_cast<std::size_t>(shape.n));
  for (std::int64_t r = 0; r < shape.n; ++r) {  // residual rows of different scales
    const float scale = 0.05f + 8.0f * std::fabs(rng.uniform(1.0f));
    double ss = 0.0;
    for (std::int64_t k = 0; k < in; ++k) {
      float& v = x[static_cast<std::size_t>(r * in + k)];
      v = round_bf16(scale * rng.uniform(1.0f));
      ss += static_cast<double>(v) * v;
    }
    inv[static_cast<std::size_t>(r)] = 1.0 / std::sqrt(ss / static_cast<double>(in) + shape.eps);
  }
  for (float& v : g) v = round_bf16(1.0f + 0.5f * rng.uniform(1.0f));
  if (with_bias) {
    bias.resize(static_cast<std::size_t>(out));
    for (float& v : bias) v = rng.uniform(0.5f);
  }
  for (std::int64_t i = 0; i < half; ++i)  // llama3's theta: angles up to the position itself
    inv_freq[static_cast<std::size_t>(i)] =
        static_cast<float>(std::pow(500000.0, -2.0 * static_cast<double>(i) / static_cast<double>(D)));
  std::vector<std::int64_t> pos(static_cast<std::size_t>(shape.n));
  std::vector<std::int32_t> seq(static_cast<std::size_t>(shape.n));
  const std::int64_t capacity = shape.pages_per_seq * shape.page_size;
  for (std::int64_t r = 0; r < shape.n; ++r) {  // distinct sequences, as a decode step's rows
    const std::int64_t s0 = static_cast<std::int64_t>(seed % 1000);
    seq[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((r + s0) % shape.num_seqs);
    pos[static_cast<std::size_t>(r)] =
        static_cast<std::int64_t>(std::fabs(rng.uniform(1.0f)) * static_cast<float>(capacity)) % capacity;
  }
  QkvRopeCheck c = shape;
  c.fused = true;
  const QkvRopeResult a = cuda_qkv_rope_check(c, w, x, g, bias, inv_freq, pos, seq);
  c.fused = false;
  const QkvRopeResult b = cuda_qkv_rope_check(c, w, x, g, bias, inv_freq, pos, seq);
  const std::string what = "n " + std::to_string(shape.n) + " Hq " + std::to_string(Hq) + " Hkv " +
                           std::to_string(Hkv) + " D " + std::to_string(D) + " in " + std::to_string(in) +
                           (with_bias ? " bias" : "") + " misalign " + std::to_string(shape.misalign);
  EXPECT_EQ(a.fused, expect_fused) << what << ": the fused kernel " << (a.fused ? "ran" : "did not run");
  EXPECT_FALSE(b.fused) << what;
  expect_same_bits(a.qkv, b.qkv, what + " qkv");
  expect_same_bits(a.q, b.q, what + " q");
  expect_same_bits(a.q_pre, b.q_pre, what + " q_pre");
  expect_same_bits(a.k_pages, b.k_pages, what + " k_pages");
  expect_same_bits(a.v_pages, b.v_pages, what + " v_pages");

  // fp64: y = inv_r * sum_k W x g (+ bias), abs the sum of |terms| (the fp32 sums' error scale).
  const auto product = [&](std::int64_t r, std::int64_t row, double& abs) {
    double s = 0.0;
    abs = 0.0;
    for (std::int64_t k = 0; k < in; ++k) {
      const double t = static_cast<double>(w[static_cast<std::size_t>(row * in + k)]) *
                       (static_cast<double>(x[static_cast<std::size_t>(r * in + k)]) * g[static_cast<std::size_t>(k)]);
      s += t;
      abs += std::fabs(t);
    }
    const double b0 = with_bias ? bias[static_cast<std::size_t>(row)] : 0.0;
    abs = abs * inv[static_cast<std::size_t>(r)] + std::fabs(b0);
    return s * inv[static_cast<std::size_t>(r)] + b0;
  };
  double worst = 0.0;
  int failures = 0;
  const auto expect_near = [&](float got, double want, double tol, const char* name, std::int64_t r, std::int64_t h,
                               std::int64_t i) {
    const double err = std::fabs(static_cast<double>(got) - want);
    const bool ok = err <= tol;  // false for NaN (not written)
    if (!ok && ++failures <= 5)
      ADD_FAILURE() << what << ": " << name << " row " << r << " head " << h << " element " << i << " got " << got
                    << " want " << want << " (tol " << tol << ")";
    if (ok) worst = std::max(worst, err / tol);
  };
  std::int64_t written_k = 0;
  for (float v : a.k_pages) written_k += std::isnan(v) ? 0 : 1;
  EXPECT_EQ(written_k, shape.n * Hkv * D) << what << ": K values written outside the rows' slots";
  for (std::int64_t r = 0; r < shape.n; ++r) {
    const std::int64_t p = pos[static_cast<std::size_t>(r)], sq = seq[static_cast<std::size_t>(r)];
    const std::int64_t slot_at =
        (sq * shape.pages_per_seq + p / shape.page_size) * shape.page_size + p % shape.page_size;
    for (std::int64_t h = 0; h < Hq + 2 * Hkv; ++h) {
      for (std::int64_t i = 0; i < half; ++i) {
        double abs_a = 0.0, abs_b = 0.0;
        const double ya = product(r, h * D + i, abs_a), yb = product(r, h * D + i + half, abs_b);
        const float angle = static_cast<float>(p) * inv_freq[static_cast<std::size_t>(i)];
        const double cs = std::cos(static_cast<double>(angle)), sn = std::sin(static_cast<double>(angle));
        const double lo = ya * cs - yb * sn, hi = yb * cs + ya * sn;
        const double tol = 2e-5 * (abs_a + abs_b) + 1e-30;
        if (h < Hq) {
          const std::size_t at = static_cast<std::size_t>((r * Hq + h) * D + i);
          expect_near(a.q_pre[at], ya, 1e-5 * abs_a + 1e-30, "q_pre", r, h, i);
          expect_near(a.q_pre[at + static_cast<std::size_t>(half)], yb, 1e-5 * abs_b + 1e-30, "q_pre", r, h, i + half);
          expect_near(a.q[at], lo, tol, "q", r, h, i);
          expect_near(a.q[at + static_cast<std::size_t>(half)], hi, tol, "q", r, h, i + half);
        } else {
          const bool is_k = h < Hq + Hkv;
          const std::int64_t kh = is_k ? h - Hq : h - Hq - Hkv;
          const std::vector<float>& pages = is_k ? a.k_pages : a.v_pages;
          const std::size_t at = static_cast<std::size_t>((slot_at * Hkv + kh) * D + i);
          const double va = is_k ? lo : ya, vb = is_k ? hi : yb;  // then one bf16 rounding
          expect_near(pages[at], va, std::ldexp(std::fabs(va), -8) + tol, is_k ? "K" : "V", r, kh, i);
          expect_near(pages[at + static_cast<std::size_t>(half)], vb, std::ldexp(std::fabs(vb), -8) + tol,
                      is_k ? "K" : "V", r, kh, i + half);
        }
      }
    }
  }
  if (failures > 5) ADD_FAILURE() << what << ": " << failures << " wrong outputs in all";
  return worst;
}

TEST(CudaSkinnyGemm, FusedQkvRopeMatchesSeparateKernelsAndFp64) {
  SKIP_WITHOUT_GPU();
  // skinny_gemm_rms_norm_qkv_rope against skinny_gemm_rms_norm + qkv_rope_append (bit for bit) and
  // an fp64 loop: 1-4 rows, with and without a q|k|v bias, head dims 8-128 (GQA and MHA), the
  // llama3-8b shape; where it cannot fuse (head dim not a multiple of 8, misaligned pointers) it
  // must run the two kernels itself.
  struct Shape {
    std::int32_t hq, hkv, d;
    std::int64_t in;
  };
  double worst = 0.0;
  int cases = 0;
  std::uint64_t seed = 300000;
  for (const Shape sh : {Shape{2, 1, 16, 64}, Shape{4, 2, 32, 40}, Shape{3, 3, 8, 24}, Shape{8, 2, 128, 256},
                         Shape{6, 2, 64, 520}, Shape{2, 1, 12, 64}}) {
    for (std::int64_t n = 1; n <= 4; ++n) {
      for (const std::int64_t misalign : {0, 3}) {
        QkvRopeCheck c;
        c.n = n;
        c.in = sh.in;
        c.num_q_heads = sh.hq;
        c.num_kv_heads = sh.hkv;
        c.head_dim = sh.d;
        c.page_size = 4;
        c.pages_per_seq = 8;
        c.num_seqs = 5;
        c.misalign = misalign;
        const bool fusable = sh.d % 8 == 0 && misalign == 0;
        worst = std::max(worst, check_qkv_rope_case(c, seed % 2 == 0, seed, fusable));
        ++seed;
        ++cases;
        if (HasFailure()) return;
      }
    }
  }
  for (const std::int64_t n : {1, 4}) {  // llama3-8b: 32 + 2 x 8 heads of 128, 4096 inputs, 16-token pages
    QkvRopeCheck c;
    c.n = n;
    c.in = 4096;
    c.num_q_heads = 32;
    c.num_kv_heads = 8;
    c.head_dim = 128;
    c.page_size = 16;
    c.pages_per_seq = 64;
    c.num_seqs = 4;
    worst = std::max(worst, check_qkv_rope_case(c, false, seed++, true));
    ++cases;
  }
  std::printf("[ info ] fused q|k|v + RoPE: %d cases bit-identical to the two kernels, worst fp64 error %.3f of "
              "the tolerance\n",
              cases, worst);
}

// The first largest logit of a row, NaN never winning, 0 when no logit is a number (argmax_rows).
std::int32_t host_first_argmax(const float* v, std::int64_t n) {
  std::int32_t best = -1;
  for (std::int64_t i = 0; i < n; ++i)
    if (!std::isnan(v[i]) && (best < 0 || v[i] > v[best])) best = static_cast<std::int32_t>(i);
  return best < 0 ? 0 : best;
}

TEST(CudaSkinnyGemm, FusedArgmaxMatchesArgmaxKernel) {
  SKIP_WITHOUT_GPU();
  // skinny_gemm_rms_norm_argmax against skinny_gemm_rms_norm + argmax_rows and a host argmax of the
  // logits: random rows, ties (the first of equal maxima wins), NaN rows (never win), a row whose
  // logits are all NaN (token 0), a misaligned call (the two kernels run), and a second call on the
  // same keys (re-zeroed after the first).
  std::uint64_t seed = 400000;
  int cases = 0;
  for (const std::int64_t out : {1031, 13, 128}) {
    for (std::int64_t n = 1; n <= 4; ++n) {
      for (const int form : {0, 1, 2, 3}) {  // 0 random, 1 ties, 2 NaN rows, 3 all NaN in row n-1's weights
        const std::int64_t in = 264, misalign = form == 0 && n == 2 ? 3 : 0;
        Rng rng{seed++ * 0x9E3779B97F4A7C15ull};
        std::vector<float> w(static_cast<std::size_t>(out * in)), x(static_cast<std::size_t>(n * in)),
            g(static_cast<std::size_t>(in));
        for (float& v : w) v = round_bf16(rng.uniform(1.0f));
        for (float& v : x) v = round_bf16(rng.uniform(2.0f));
        for (float& v : g) v = round_bf16(1.0f + 0.5f * rng.uniform(1.0f));
        const auto row = [&](std::int64_t o) { return w.begin() + o * in; };
        if (form == 1) {  // rows a < b the same, and larger than every other row's product for every x
          const std::int64_t a = out / 3, b = out - 1;
          for (std::int64_t k = 0; k < in; ++k) {
            const float big = round_bf16(40.0f * (x[static_cast<std::size_t>(k)] >= 0.0f ? 1.0f : -1.0f));
            row(a)[k] = big;
            row(b)[k] = big;
          }
          for (std::int64_t r = 1; r < n; ++r)  // every row of x the same signs as row 0
            for (std::int64_t k = 0; k < in; ++k)
              x[static_cast<std::size_t>(r * in + k)] = std::fabs(x[static_cast<std::size_t>(r * in + k)]) *
                                                         (x[static_cast<std::size_t>(k)] >= 0.0f ? 1.0f : -1.0f);
        }
        if (form == 2)
          for (std::int64_t o = 0; o < out; o += 3) std::fill(row(o), row(o) + in, std::nanf(""));
        if (form == 3) std::fill(w.begin(), w.end(), std::nanf(""));
        const ArgmaxCheckResult res = cuda_argmax_check(n, out, in, w, x, g, 1e-5f, misalign);
        const std::string what = "out " + std::to_string(out) + " n " + std::to_string(n) + " form " +
                                 std::to_string(form) + " misalign " + std::to_string(misalign);
        EXPECT_EQ(res.fused, misalign == 0) << what;
        ASSERT_EQ(res.logits.size(), res.logits_separate.size()) << what;
        EXPECT_EQ(std::memcmp(res.logits.data(), res.logits_separate.data(), res.logits.size() * 4), 0)
            << what << ": logits differ from skinny_gemm_rms_norm's";
        for (std::int64_t r = 0; r < n; ++r) {
          const std::size_t ri = static_cast<std::size_t>(r);
          const std::int32_t want = host_first_argmax(res.logits.data() + r * out, out);
          EXPECT_EQ(res.tokens[ri], want) << what << " row " << r;
          EXPECT_EQ(res.tokens_again[ri], want) << what << " row " << r << " (second call)";
          EXPECT_EQ(res.tokens_separate[ri], want) << what << " row " << r << " (argmax_rows)";
          EXPECT_EQ(res.feed[ri], want) << what << " row " << r << " (feed)";
          if (form == 1) {
            EXPECT_EQ(want, out / 3) << what << ": the tie's first row must win";
          }
          if (form == 3) {
            EXPECT_EQ(want, 0) << what;
          }
        }
        ++cases;
        if (HasFailure()) return;
      }
    }
  }
  std::printf("[ info ] lm_head with the argmax folded in: %d cases, tokens equal to argmax_rows'\n", cases);
}

TEST(CudaSkinnyGemm, NarrowBlocksMatchFp64HostLoop) {
  SKIP_WITHOUT_GPU();
  // GemvLaunch::narrow: the FMA kernel with 128-thread blocks at 1-2 rows (plain matmuls; SwiGLU
  // ignores it), y = / y += from bf16 and fp32 input, with the bf16 copy of y on every other case.
  double worst = 0.0;
  int cases = 0;
  std::uint64_t seed = 300000;
  for (const std::int64_t in : {4096, 14336, 896, 40, 8}) {
    for (const std::int64_t out : {1, 5, 67, 4096}) {
      for (std::int64_t n = 1; n <= 3; ++n) {
        for (int mode = 0; mode < kGemvModes; ++mode) {
          GemvCheck c;
          c.fma = true;
          c.narrow = true;
          c.n = n;
          c.out = out;
          c.in = in;
          set_gemv_mode(c, mode);
          worst = std::max(worst, check_gemv_case(c, seed++));
          ++cases;
          if (HasFailure()) return;
        }
      }
    }
  }
  std::printf("[ info ] skinny GEMM, narrow blocks: %d cases, worst error %.3f of the tolerance\n", cases, worst);
}

TEST(CudaSkinnyGemm, RowsAreIndependentOfBatch) {
  SKIP_WITHOUT_GPU();
  // The same activation row at every position of an n-row batch gives bit-identical outputs
  // (the engine's "two identical sequences of one batch" test relies on it), within rounding
  // of the 1-row call (the block shape, hence the summation order, depends on n).
  const std::int64_t out = 37, in = 4096;
  Rng rng{7};
  std::vector<float> w(static_cast<std::size_t>(out * in)), x1(static_cast<std::size_t>(in));
  for (float& v : w) v = round_bf16(rng.uniform(1.0f));
  for (float& v : x1) v = round_bf16(rng.uniform(1.0f));
  for (const bool fma : {false, true}) {
  GemvCheck c;
  c.fma = fma;
  c.out = out;
  c.in = in;
  std::vector<float> y1;
  cuda_gemv_check(c, w, x1, y1);
  for (std::int64_t n = 2; n <= 8; ++n) {
    std::vector<float> xn;
    for (std::int64_t r = 0; r < n; ++r) xn.insert(xn.end(), x1.begin(), x1.end());
    c.n = n;
    std::vector<float> yn;
    cuda_gemv_check(c, w, xn, yn);
    for (std::int64_t o = 0; o < out; ++o) {
      const float first = yn[static_cast<std::size_t>(o)];
      EXPECT_NEAR(first, y1[static_cast<std::size_t>(o)], 1e-5 * in) << "n " << n << " output " << o;
      for (std::int64_t r = 1; r < n; ++r)
        ASSERT_EQ(yn[static_cast<std::size_t>(r * out + o)], first)
            << (fma ? "fma" : "mma") << " n " << n << " row " << r << " output " << o;
    }
  }
  }
}

// Sets MACATTN_ENGINE_MATMUL (or `name`) for its lifetime and restores what was there (the rest of the
// binary keeps running on the path it was started with).
class MatmulEnv {
 public:
  explicit MatmulEnv(const char* value, const char* name = "MACATTN_ENGINE_MATMUL") : kName(name) {
    if (const char* v = std::getenv(kName)) old_ = std::string(v);
    if (value != nullptr)
      ::setenv(kName, value, 1);
    else
      ::unsetenv(kName);
  }
  ~MatmulEnv() {
    if (old_)
      ::setenv(kName, old_->c_str(), 1);
    else
      ::unsetenv(kName);
  }
  MatmulEnv(const MatmulEnv&) = delete;
  MatmulEnv& operator=(const MatmulEnv&) = delete;

 private:
  const char* kName;
  std::optional<std::string> old_;
};

// A session of `batch` sequences (prompt prefixes of 2-5 tokens) decoding six steps of prompt
// tokens under the environment of the moment; all logits rows in order.
std::vector<float> decode_six_steps(const Model& model, const Reference& ref, std::int32_t batch) {
  CudaSessionOptions o = gpu_options(256);
  o.batch = batch;
  CudaSession s(model, o);
  for (std::int32_t b = 0; b < batch; ++b) s.prefill(b, std::span(ref.prompt_ids).first(2 + b % 4), 4);
  std::vector<float> all;
  for (int i = 0; i < 6; ++i) {
    std::vector<std::int32_t> toks;
    for (std::int32_t b = 0; b < batch; ++b) toks.push_back(ref.prompt_ids[(2 + b + i) % ref.prompt_ids.size()]);
    const auto logits = s.decode(toks);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

TEST(CudaSkinnyGemm, DecodeMatchesCublasPath) {
  SKIP_WITHOUT_GPU();
  // Decode steps of batch 3 and 7 (the GEMV kernel with N = 3, 7) against the same steps
  // through cuBLAS, on two fixtures (one with biases, tied embeddings and head dim 32).
  for (const std::int32_t batch : {3, 7})
  for (const char* fixture : {"llama3_bf16_sharded", "llama_tied_hd32_bias_f16"}) {
    const Model model = Model::load(engine_test::fixtures() / fixture);
    const Reference ref = engine_test::load_reference(engine_test::fixtures() / fixture);
    const std::size_t V = static_cast<std::size_t>(model.config().vocab_size);
    std::vector<std::vector<float>> runs;
    // gemv: the skinny GEMM up to 8 rows, with its tensor-core kernel (mma) and its FMA one.
    for (const char* path : {"cublas", "gemv", "gemv fma"}) {
      MatmulEnv env(std::string_view(path).starts_with("gemv") ? "gemv" : path);
      MatmulEnv kernel(std::string_view(path) == "gemv fma" ? "fma" : "mma", "MACATTN_ENGINE_GEMV");
      runs.push_back(decode_six_steps(model, ref, batch));
    }
    double worst = 0.0;
    for (std::size_t k = 1; k < runs.size(); ++k) {
      ASSERT_EQ(runs[0].size(), runs[k].size());
      for (std::size_t r = 0; r < runs[0].size() / V; ++r) {
        const double e =
            engine_test::rel_err(std::span(runs[k]).subspan(r * V, V), std::span(runs[0]).subspan(r * V, V));
        worst = std::max(worst, e);
        EXPECT_LT(e, 1e-2) << fixture << (k == 1 ? " mma" : " fma") << " logits row " << r;
      }
    }
    std::printf("[ info ] %s batch %d decode: GEMV vs cuBLAS worst rel err %.2e\n", fixture, batch, worst);
  }
}

TEST(CudaSkinnyGemm, FusedNormDecodeMatchesSeparateNorm) {
  SKIP_WITHOUT_GPU();
  // Decode steps with the RMSNorms inside the matmuls (the default at <= 4 rows) against the
  // same steps with rms_norm_bf16 first (MACATTN_ENGINE_FUSED_NORM=0): the fused form rounds x
  // and the norm weight to bf16 where the other rounds the normalised row, so logits agree within
  // those roundings (2e-2, twice the GEMV-vs-cuBLAS bound: two roundings against one; 1.0e-2 seen
  // on qwen3_f32_tied, whose f32 norm weights the fused form rounds), not bit for bit.
  // Batches 1 and 4; fixtures with biases, tied embeddings, head dim 32, a q/k-norm (qwen3).
  for (const std::int32_t batch : {1, 4})
  for (const char* fixture : {"llama3_bf16_sharded", "llama_tied_hd32_bias_f16", "qwen3_f32_tied"}) {
    const Model model = Model::load(engine_test::fixtures() / fixture);
    const Reference ref = engine_test::load_reference(engine_test::fixtures() / fixture);
    const std::size_t V = static_cast<std::size_t>(model.config().vocab_size);
    std::vector<std::vector<float>> runs;
    for (const char* fused : {"0", "1"}) {
      MatmulEnv env(fused, "MACATTN_ENGINE_FUSED_NORM");
      runs.push_back(decode_six_steps(model, ref, batch));
    }
    ASSERT_EQ(runs[0].size(), runs[1].size());
    double worst = 0.0;
    for (std::size_t r = 0; r < runs[0].size() / V; ++r) {
      const double e = engine_test::rel_err(std::span(runs[1]).subspan(r * V, V), std::span(runs[0]).subspan(r * V, V));
      worst = std::max(worst, e);
      EXPECT_LT(e, 2e-2) << fixture << " batch " << batch << " logits row " << r;
    }
    EXPECT_GT(worst, 0.0) << fixture << ": the fused norm did not run (logits bit-identical)";
    std::printf("[ info ] %s batch %d decode: fused vs separate RMSNorm worst rel err %.2e\n", fixture, batch, worst);
  }
  MatmulEnv bad("yes", "MACATTN_ENGINE_FUSED_NORM");
  EXPECT_THROW(CudaSession(Model::load(engine_test::fixtures() / "llama_f32"), gpu_options(8)), macattn::Error);
}

TEST(CudaSkinnyGemm, FusedRopeDecodeEqualsRopeKernel) {
  SKIP_WITHOUT_GPU();
  // Decode steps with RoPE and the K/V append inside the q|k|v matmul (the default, where the norm
  // is fused and the model has no q/k-norm) against the RoPE kernel after it
  // (MACATTN_ENGINE_FUSED_ROPE=0): logits bit-identical, batches 1 and 3, on fixtures with biases
  // and head dim 32 and on qwen3 (q/k-norm: the RoPE kernel runs in both).
  for (const std::int32_t batch : {1, 3})
  for (const char* fixture : {"llama3_bf16_sharded", "llama_tied_hd32_bias_f16", "qwen3_f32_tied"}) {
    const Model model = Model::load(engine_test::fixtures() / fixture);
    const Reference ref = engine_test::load_reference(engine_test::fixtures() / fixture);
    std::vector<std::vector<float>> runs;
    for (const char* fused : {"0", "1"}) {
      MatmulEnv env(fused, "MACATTN_ENGINE_FUSED_ROPE");
      runs.push_back(decode_six_steps(model, ref, batch));
    }
    EXPECT_TRUE(runs[0] == runs[1]) << fixture << " batch " << batch << ": logits differ with the fused RoPE";
  }
  MatmulEnv bad("yes", "MACATTN_ENGINE_FUSED_ROPE");
  EXPECT_THROW(CudaSession(Model::load(engine_test::fixtures() / "llama_f32"), gpu_options(8)), macattn::Error);
}

// MAC decode of two sequences of the shipped model (the prompt, and the prompt less its last 150
// tokens; MAC from 1024 tokens) for six steps of prompt tokens under the environment of the
// moment, in a graph or eagerly: every step's logits in order, and the head hits counted.
std::pair<std::vector<float>, std::int64_t> mac_two_sequences(const Model& model,
                                                              const std::vector<std::int32_t>& prompt, bool graph) {
  CudaSessionOptions o = gpu_options(4096, AttentionMode::mac);
  o.session.attention.mac.min_context = 1024;
  o.use_graph = graph;
  o.batch = 2;
  CudaSession s(model, o);
  s.prefill(0, prompt, 512);
  s.prefill(1, std::span(prompt).first(prompt.size() - 150), 512);
  std::vector<float> all;
  for (int i = 0; i < 6; ++i) {
    const std::vector<std::int32_t> toks(2, prompt[static_cast<std::size_t>(100 + i)]);
    const auto logits = s.decode(toks);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return {all, s.total_attention_stats().heads_hit};
}

TEST(CudaSkinnyGemm, FusedArgmaxGreedyEqualsArgmaxKernel) {
  SKIP_WITHOUT_GPU();
  // Greedy decoding with the argmax folded into the lm_head matmul (the default at <= 4 rows with the
  // fused norm) against argmax_rows after it (MACATTN_ENGINE_FUSED_ARGMAX=0): the same tokens fed
  // back for 12 steps, batches 1 and 3, graphs and eager, then the same logits.
  for (const std::int32_t batch : {1, 3})
  for (const bool graph : {true, false})
  for (const char* fixture : {"llama3_bf16_sharded", "llama_tied_hd32_bias_f16"}) {
    const Model model = Model::load(engine_test::fixtures() / fixture);
    const Reference ref = engine_test::load_reference(engine_test::fixtures() / fixture);
    std::vector<std::vector<std::int32_t>> tokens;
    std::vector<std::vector<float>> last;
    for (const char* fused : {"0", "1"}) {
      MatmulEnv env(fused, "MACATTN_ENGINE_FUSED_ARGMAX");
      CudaSessionOptions o = gpu_options(256);
      o.batch = batch;
      o.use_graph = graph;
      CudaSession s(model, o);
      for (std::int32_t b = 0; b < batch; ++b) s.prefill(b, std::span(ref.prompt_ids).first(2 + b % 4), 4);
      std::vector<std::int32_t> toks(static_cast<std::size_t>(batch)), all;
      for (std::int32_t b = 0; b < batch; ++b) toks[static_cast<std::size_t>(b)] = ref.prompt_ids[2 + b % 4];
      for (int i = 0; i < 12; ++i) {
        const auto next = s.decode_greedy(toks);
        toks.assign(next.begin(), next.end());
        all.insert(all.end(), toks.begin(), toks.end());
      }
      const auto logits = s.decode(toks);
      tokens.push_back(all);
      last.emplace_back(logits.begin(), logits.end());
    }
    const std::string what = std::string(fixture) + " batch " + std::to_string(batch) + (graph ? " graph" : " eager");
    EXPECT_EQ(tokens[1], tokens[0]) << what << ": greedy tokens differ with the fused argmax";
    EXPECT_TRUE(last[1] == last[0]) << what << ": logits differ with the fused argmax";
  }
  MatmulEnv bad("always", "MACATTN_ENGINE_FUSED_ARGMAX");
  EXPECT_THROW(CudaSession(Model::load(engine_test::fixtures() / "llama_f32"), gpu_options(8)), macattn::Error);
}

// The fused RoPE in MAC decode on the shipped model: hits, graphs, batch 2 (sequences of different
// lengths): logits and hit counts bit-identical with MACATTN_ENGINE_FUSED_ROPE=0 and 1.
TEST(CudaReferenceModel, FusedRopeDoesNotChangeMacDecode) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(ref_model());
  const auto prompt = passkey_prompt(2500);
  for (const bool graph : {true, false}) {
    std::vector<std::vector<float>> runs;
    std::vector<std::int64_t> hits;
    for (const char* fused : {"0", "1"}) {
      MatmulEnv env(fused, "MACATTN_ENGINE_FUSED_ROPE");
      auto [logits, heads_hit] = mac_two_sequences(model, prompt, graph);
      runs.push_back(std::move(logits));
      hits.push_back(heads_hit);
    }
    EXPECT_GT(hits[0], 0) << "the test must exercise MAC hits";
    EXPECT_EQ(hits[1], hits[0]) << (graph ? "graph" : "eager");
    EXPECT_TRUE(runs[1] == runs[0]) << "logits differ with the fused RoPE, " << (graph ? "graph" : "eager");
  }
}

// Where the step lets the SMs go idle after a MAC layer (MACATTN_ENGINE_MAC_IDLE_POINT: which matmul
// launches without PDL) and the matmuls' preferred carveout (MACATTN_ENGINE_GEMV_CARVEOUT) change
// launches only: logits and hit counts bit-identical, batch 2, graphs.
TEST(CudaReferenceModel, MacIdlePointDoesNotChangeResults) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(ref_model());
  const auto prompt = passkey_prompt(2500);
  std::vector<std::vector<float>> runs;
  std::vector<std::int64_t> hits;
  const std::vector<std::pair<const char*, const char*>> settings = {
      {"o_proj", "-1"}, {"gate_up", "auto"}, {"none", "0"}, {"auto", "-1"}, {"auto", "100"}, {"auto", "0"}};
  for (const auto& [point, carveout] : settings) {
    MatmulEnv env(point, "MACATTN_ENGINE_MAC_IDLE_POINT");
    MatmulEnv cv(carveout, "MACATTN_ENGINE_GEMV_CARVEOUT");
    auto [logits, heads_hit] = mac_two_sequences(model, prompt, true);
    runs.push_back(std::move(logits));
    hits.push_back(heads_hit);
  }
  EXPECT_GT(hits[0], 0) << "the test must exercise MAC hits";
  for (std::size_t k = 1; k < runs.size(); ++k) {
    EXPECT_EQ(hits[k], hits[0]);
    EXPECT_TRUE(runs[k] == runs[0]) << "logits differ with idle point " << settings[k].first << ", carveout "
                                    << settings[k].second;
  }
  {
    MatmulEnv bad("sometimes", "MACATTN_ENGINE_MAC_IDLE_POINT");
    EXPECT_THROW(CudaSession(model, gpu_options(8, AttentionMode::mac)), macattn::Error);
  }
  for (const char* bad_carveout : {"101", "-2", "1x", "most"}) {
    MatmulEnv bad(bad_carveout, "MACATTN_ENGINE_GEMV_CARVEOUT");
    EXPECT_THROW(CudaSession(model, gpu_options(8, AttentionMode::mac)), macattn::Error) << bad_carveout;
  }
}

TEST(CudaSkinnyGemm, BadMatmulVariableIsRefused) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(engine_test::fixtures() / "llama_f32");
  {
    MatmulEnv env("cuBLAS-typo");
    EXPECT_THROW(CudaSession(model, gpu_options(8)), macattn::Error);
  }
  {
    MatmulEnv kernel("tensor", "MACATTN_ENGINE_GEMV");
    EXPECT_THROW(CudaSession(model, gpu_options(8)), macattn::Error);
  }
  {
    MatmulEnv narrow("wide", "MACATTN_ENGINE_GEMV_NARROW");
    EXPECT_THROW(CudaSession(model, gpu_options(8)), macattn::Error);
  }
  MatmulEnv pdl("yes", "MACATTN_ENGINE_PDL");
  EXPECT_THROW(CudaSession(model, gpu_options(8)), macattn::Error);
}

// MAC's scan started on the engine's scan stream right after the q|k|v projection
// (MACATTN_ENGINE_EARLY_SCAN=1, for models without q bias or q-norm; off by default) against the
// scan inside mac_decode after the RoPE kernel ("0"): the same tokens fed to both, logits and hit counts
// bit-identical, at batch 1 (q_pre rows contiguous in the projection's output) and batch 2
// (rows of q|k|v width apart, sequences of different lengths), in graphs and eagerly.
TEST(CudaReferenceModel, EarlyScanEqualsScanInMacDecode) {
  SKIP_WITHOUT_GPU();
  const Model model = Model::load(ref_model());
  const auto prompt = passkey_prompt(2500);
  for (const std::int32_t batch : {1, 2})
  for (const bool graph : {true, false}) {
    std::vector<std::vector<float>> runs;
    std::vector<std::int64_t> hits;
    std::vector<std::int32_t> fed;  // the first run's greedy tokens of sequence 0, fed to both runs
    for (const char* early : {"0", "1"}) {
      MatmulEnv env(early, "MACATTN_ENGINE_EARLY_SCAN");
      CudaSessionOptions o = gpu_options(4096, AttentionMode::mac);
      o.session.attention.mac.min_context = 1024;
      o.use_graph = graph;
      o.batch = batch;
      CudaSession s(model, o);
      const std::size_t V = static_cast<std::size_t>(model.config().vocab_size);
      if (fed.empty()) fed.push_back(engine_test::argmax(s.prefill(0, prompt, 512)));
      else s.prefill(0, prompt, 512);
      if (batch == 2) s.prefill(1, std::span(prompt).first(prompt.size() - 150), 512);
      std::vector<float> all;
      for (int i = 0; i < 8; ++i) {
        const std::vector<std::int32_t> toks(static_cast<std::size_t>(batch), fed[i]);
        const auto logits = s.decode(toks);
        all.insert(all.end(), logits.begin(), logits.end());
        if (fed.size() == static_cast<std::size_t>(i) + 1) fed.push_back(engine_test::argmax(logits.first(V)));
      }
      runs.push_back(all);
      hits.push_back(s.total_attention_stats().heads_hit);
    }
    SCOPED_TRACE("batch " + std::to_string(batch) + (graph ? ", graph" : ", eager"));
    std::printf("[ info ] batch %d, %s: %lld head hits with the scan in mac_decode, %lld with the early scan\n", batch,
                graph ? "graph" : "eager", static_cast<long long>(hits[0]), static_cast<long long>(hits[1]));
    EXPECT_GT(hits[0], 0) << "the test must exercise hits";
    EXPECT_EQ(hits[1], hits[0]);
    ASSERT_EQ(runs[0].size(), runs[1].size());
    EXPECT_TRUE(runs[0] == runs[1]) << "logits differ with the early scan";
  }
  MatmulEnv bad("yes", "MACATTN_ENGINE_EARLY_SCAN");
  EXPECT_THROW(CudaSession(model, gpu_options(8, AttentionMode::mac)), macattn::Error);
}

}  // namespace
