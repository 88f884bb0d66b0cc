// Logits and greedy generations against Hugging Face transformers on tiny random
// checkpoints of every supported architecture (tests/engine/fixtures, made by
// tools/engine/make_fixtures.py), and on the shipped reference model.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/model.hpp"
#include "engine/session.hpp"
#include "engine_test_util.hpp"

namespace {

using namespace macattn::engine;
using engine_test::Reference;

constexpr double kTol = 1e-3;  // max|diff| / max|ref| per position

class HfParity : public ::testing::TestWithParam<const char*> {
 protected:
  std::filesystem::path dir() const { return engine_test::fixtures() / GetParam(); }
  static SessionOptions exact_f32() {
    SessionOptions o;
    o.kv_dtype = macattn::DType::f32;
    o.max_context = 256;
    return o;
  }
};

TEST_P(HfParity, PrefillLogitsEveryPositionAndChunking) {
  const Model model = Model::load(dir());
  const Reference ref = engine_test::load_reference(dir());
  ASSERT_EQ(ref.vocab, model.config().vocab_size);
  const std::int64_t P = static_cast<std::int64_t>(ref.prompt_ids.size());
  for (std::int32_t chunk : {512, 7, 1}) {
    Session s(model, exact_f32());
    std::vector<float> all;
    s.prefill_all_logits(ref.prompt_ids, chunk, all);
    ASSERT_EQ(all.size(), ref.logits.size());
    for (std::int64_t p = 0; p < P; ++p) {
      const std::span<const float> got(all.data() + p * ref.vocab, ref.vocab);
      const std::span<const float> want(ref.logits.data() + p * ref.vocab, ref.vocab);
      EXPECT_LT(engine_test::rel_err(got, want), kTol) << GetParam() << " chunk " << chunk << " position " << p;
    }
    EXPECT_EQ(s.position(), P);
  }
}

TEST_P(HfParity, DecodeStepsMatchPrefixLogits) {
  // Prefill half the prompt, decode the rest one token at a time (library exact_decode over
  // the paged cache): each step's logits must match transformers' at that position.
  const Model model = Model::load(dir());
  const Reference ref = engine_test::load_reference(dir());
  for (macattn::DType kv : {macattn::DType::f32, macattn::DType::bf16}) {
    SessionOptions o = exact_f32();
    o.kv_dtype = kv;
    o.kv_page_size = 8;  // several pages, a partly filled last one
    Session s(model, o);
    const std::int64_t half = 20;
    auto logits = s.prefill(std::span(ref.prompt_ids).first(half), 16);
    // bf16 K/V rounds keys and values to 8 bits of mantissa: a looser, still meaningful bound.
    const double tol = kv == macattn::DType::f32 ? kTol : 2e-2;
    EXPECT_LT(engine_test::rel_err(logits, std::span(ref.logits).subspan((half - 1) * ref.vocab, ref.vocab)), tol);
    for (std::size_t p = half; p < ref.prompt_ids.size(); ++p) {
      logits = s.decode(ref.prompt_ids[p]);
      EXPECT_LT(engine_test::rel_err(logits, std::span(ref.logits).subspan(p * ref.vocab, ref.vocab)), tol)
          << GetParam() << " kv " << macattn::dtype_name(kv) << " position " << p;
    }
  }
}

TEST_P(HfParity, GreedyGenerationIdentical) {
  const Model model = Model::load(dir());
  const Reference ref = engine_test::load_reference(dir());
  for (AttentionMode mode : {AttentionMode::exact, AttentionMode::mac}) {
    SessionOptions o = exact_f32();
    o.attention.mode = mode;
    o.attention.ring_dtype = macattn::DType::f32;
    o.attention.mac.min_context = 1 << 30;  // MAC that never matches: must give the same tokens
    Session s(model, o);
    auto logits = s.prefill(ref.prompt_ids, 16);
    std::vector<std::int32_t> got;
    for (std::size_t i = 0; i < ref.greedy_ids.size(); ++i) {
      got.push_back(engine_test::argmax(logits));
      logits = s.decode(got.back());
    }
    EXPECT_EQ(got, ref.greedy_ids) << GetParam() << " " << attention_mode_name(mode);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfParity,
                         ::testing::Values("llama_f32", "llama3_bf16_sharded", "llama_tied_hd32_bias_f16",
                                           "mistral_bf16", "qwen2_bf16", "qwen3_f32_tied"),
                         [](const auto& info) { return std::string(info.param); });

// The shipped reference model (bf16 weights, 4 layers, GQA 8/2, head dim 64) against
// tests/python/fixtures/ref_greedy.json (transformers, float32 compute).
TEST(ReferenceModel, TopLogitsAndGreedyMatchTransformers) {
  const auto model_dir = engine_test::source_dir() / "models/macattn-ref";
  const auto fx = nlohmann::json::parse(
      engine_test::read_file(engine_test::source_dir() / "tests/python/fixtures/ref_greedy.json"));
  const Model model = Model::load(model_dir);
  SessionOptions o;
  o.kv_dtype = macattn::DType::f32;
  o.max_context = 1024;
  Session s(model, o);
  const auto prompt = fx["prompt_ids"].get<std::vector<std::int32_t>>();
  auto logits = s.prefill(prompt, 512);
  const auto ids = fx["last_logits_top10"]["ids"].get<std::vector<std::int32_t>>();
  const auto values = fx["last_logits_top10"]["values"].get<std::vector<float>>();
  const float scale = std::fabs(values[0]);
  for (std::size_t i = 0; i < ids.size(); ++i)
    EXPECT_NEAR(logits[ids[i]], values[i], kTol * scale) << "top-10 entry " << i << " (id " << ids[i] << ")";
  EXPECT_EQ(engine_test::argmax(logits), ids[0]);
  const auto want = fx["greedy_ids"].get<std::vector<std::int32_t>>();
  std::vector<std::int32_t> got;
  for (std::size_t i = 0; i < want.size(); ++i) {
    got.push_back(engine_test::argmax(logits));
    logits = s.decode(got.back());
  }
  EXPECT_EQ(got, want);
}

}  // namespace
