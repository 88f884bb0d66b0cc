// config.json parsing: every supported family's fields and defaults, both rope formats
// (transformers 4 "rope_theta"/"rope_scaling", 5 "rope_parameters"), and clear errors.
#include <gtest/gtest.h>

#include "engine/model_config.hpp"
#include "engine_test_util.hpp"
#include "macattn/error.hpp"

namespace {

using namespace macattn::engine;

const char* kBase = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
  "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "vocab_size": 320, "rms_norm_eps": 1e-5, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": [2, 3]})";

std::string with(const std::string& extra) {
  std::string s = kBase;
  s.pop_back();
  return s + ", " + extra + "}";
}

void expect_error(const std::string& json, const std::string& fragment) {
  try {
    ModelConfig::parse(json);
    FAIL() << "no error for " << json;
  } catch (const macattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "message: " << e.what();
  }
}

TEST(EngineConfig, LlamaDefaultsAndIds) {
  const ModelConfig c = ModelConfig::parse(kBase, R"({"bos_token_id": 1, "eos_token_id": 5})");
  EXPECT_EQ(c.architecture, Architecture::llama);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::none);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<std::int32_t>{5});  // generation_config wins
  EXPECT_EQ(ModelConfig::parse(kBase).eos_token_ids, (std::vector<std::int32_t>{2, 3}));
}

TEST(EngineConfig, Llama3ScalingInBothFormats) {
  const ModelConfig old_fmt = ModelConfig::parse(with(R"("rope_theta": 500000.0, "rope_scaling": {"type": "llama3",
    "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})"));
  const ModelConfig new_fmt =
      ModelConfig::parse(with(R"("rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3",
    "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})"));
  for (const ModelConfig& c : {old_fmt, new_fmt}) {
    EXPECT_EQ(c.rope_theta, 500000.0);
    EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::llama3);
    EXPECT_EQ(c.rope_scaling.factor, 32.0);
    EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  }
}

TEST(EngineConfig, FamiliesSetTheirFlags) {
  std::string q2 = kBase;
  q2.replace(q2.find("LlamaForCausalLM"), 16, "Qwen2ForCausalLM");
  EXPECT_TRUE(ModelConfig::parse(q2).attention_bias);
  std::string q3 = kBase;
  q3.replace(q3.find("LlamaForCausalLM"), 16, "Qwen3ForCausalLM");
  const ModelConfig c3 = ModelConfig::parse(q3.substr(0, q3.size() - 1) + R"(, "head_dim": 32})");
  EXPECT_TRUE(c3.qk_norm);
  EXPECT_EQ(c3.head_dim, 32);
  std::string mi = kBase;
  mi.replace(mi.find("LlamaForCausalLM"), 16, "MistralForCausalLM");
  EXPECT_EQ(ModelConfig::parse(mi.substr(0, mi.size() - 1) + R"(, "sliding_window": 4096})").sliding_window, 4096);
  for (const char* name :
       {"llama_f32", "llama3_bf16_sharded", "llama_tied_hd32_bias_f16", "mistral_bf16", "qwen2_bf16", "qwen3_f32_tied"})
    EXPECT_NO_THROW(ModelConfig::load(engine_test::fixtures() / name)) << name;
}

TEST(EngineConfig, ErrorsNameFieldAndValue) {
  expect_error("{not json", "not valid JSON");
  expect_error("[1, 2]", "not a JSON object");
  std::string gpt = kBase;
  gpt.replace(gpt.find("LlamaForCausalLM"), 16, "GPT2LMHeadModel");
  expect_error(gpt, "unsupported architecture 'GPT2LMHeadModel'");
  std::string no_hidden = kBase;
  no_hidden.replace(no_hidden.find("\"hidden_size\": 64,"), 18, "");
  expect_error(no_hidden, "missing field 'hidden_size'");
  std::string kv3 = kBase;
  kv3.replace(kv3.find("\"num_key_value_heads\": 2"), 24, "\"num_key_value_heads\": 3");
  expect_error(kv3, "num_key_value_heads = 3 must divide num_attention_heads = 4");
  std::string neg = kBase;
  neg.replace(neg.find("\"vocab_size\": 320"), 17, "\"vocab_size\": -5");
  expect_error(neg, "vocab_size = -5 is out of range");
  std::string str = kBase;
  str.replace(str.find("\"vocab_size\": 320"), 17, "\"vocab_size\": \"320\"");
  expect_error(str, "vocab_size = \"320\" is not an integer");
  std::string gelu = kBase;
  gelu.replace(gelu.find("\"silu\""), 6, "\"gelu\"");
  expect_error(gelu, "hidden_act = 'gelu' is not supported");
  expect_error(with(R"("rope_scaling": {"rope_type": "yarn", "factor": 4.0})"), "rope_type = 'yarn' is not supported");
  expect_error(with(R"("head_dim": 15)"), "head_dim = 15 must be even");
  expect_error(with(R"("mlp_bias": true)"), "mlp_bias = true is not supported");
  std::string bad_eos = kBase;
  bad_eos.replace(bad_eos.find("[2, 3]"), 6, "[2, 999]");
  expect_error(bad_eos, "eos_token_id = 999 is not below vocab_size = 320");
  try {
    ModelConfig::parse(kBase, "{broken");
    FAIL();
  } catch (const macattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("generation_config.json: not valid JSON"), std::string::npos) << e.what();
  }
}

}  // namespace
