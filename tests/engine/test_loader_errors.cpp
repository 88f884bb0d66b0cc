// Model::load on malformed, truncated and inconsistent checkpoints: every case is a
// macattn::Error whose message names the file, the tensor or field, and the value.
#include <gtest/gtest.h>

#include <cstring>

#include "engine/io/safetensors.hpp"
#include "engine/model.hpp"
#include "engine_test_util.hpp"
#include "macattn/error.hpp"

namespace {

using namespace macattn::engine;
namespace fs = std::filesystem;

void expect_load_error(const fs::path& dir, const std::string& fragment) {
  try {
    Model::load(dir);
    FAIL() << "no error loading " << dir;
  } catch (const macattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "message: " << e.what();
  }
}

std::string header_file(const std::string& json, std::size_t data_bytes) {
  std::string out(8, '\0');
  std::uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + json + std::string(data_bytes, '\0');
}

void expect_parse_error(const std::string& bytes, const std::string& fragment) {
  try {
    parse_safetensors(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), "x.safetensors");
    FAIL() << "no error";
  } catch (const macattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "message: " << e.what();
  }
}

TEST(EngineSafetensors, ParsesValidHeader) {
  const auto bytes = header_file(
      R"({"__metadata__": {"format": "pt"}, "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
    "b": {"dtype": "I64", "shape": [], "data_offsets": [12, 20]}})",
      20);
  const auto h = parse_safetensors(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), "x");
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors.at("a").dtype, macattn::DType::bf16);
  EXPECT_EQ(h.tensors.at("a").numel, 6);
  EXPECT_FALSE(h.tensors.at("b").dtype.has_value());
  EXPECT_EQ(h.tensors.at("b").offset, h.data_start + 12);
}

TEST(EngineSafetensors, MalformedHeadersFailClearly) {
  expect_parse_error("abc", "too short");
  std::string huge(8, '\xff');
  expect_parse_error(huge + "{}", "exceeds the file size");
  expect_parse_error(header_file("{\"a\": ", 0), "not valid JSON");
  expect_parse_error(header_file("[]", 0), "not a JSON object");
  expect_parse_error(header_file(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8),
                     "end beyond the data section");
  expect_parse_error(header_file(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", 16), "needs 12");
  expect_parse_error(header_file(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})", 0),
                     "shape[0] = -1 is negative");
  expect_parse_error(
      header_file(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})", 0),
      "overflows");
  expect_parse_error(header_file(R"({"a": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}})", 1), "dtype = 'Q4'");
  expect_parse_error(header_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8), "begin > end");
  expect_parse_error(header_file(R"({"a": {"dtype": "F32", "shape": [1]}})", 4), "data_offsets");
  expect_parse_error(header_file(R"({"a": 5})", 0), "tensor 'a' is not an object");
}

class BrokenCheckpoint : public ::testing::Test {
 protected:
  engine_test::TempDir tmp{"broken"};
  void copy_fixture(const std::string& name) {
    for (const auto& e : fs::directory_iterator(engine_test::fixtures() / name))
      fs::copy_file(e.path(), tmp.path / e.path().filename(), fs::copy_options::overwrite_existing);
  }
};

TEST_F(BrokenCheckpoint, TruncatedWeightsFile) {
  copy_fixture("llama_f32");
  const auto p = tmp.path / "model.safetensors";
  fs::resize_file(p, fs::file_size(p) - 1000);
  expect_load_error(tmp.path, "end beyond the data section");
  fs::resize_file(p, 100);  // inside the header
  expect_load_error(tmp.path, "exceeds the file size");
}

TEST_F(BrokenCheckpoint, ConfigDisagreesWithShapes) {
  copy_fixture("llama_f32");
  std::string cfg = engine_test::read_file(tmp.path / "config.json");
  cfg.replace(cfg.find("\"intermediate_size\": 128"), 24, "\"intermediate_size\": 96");
  engine_test::write_file(tmp.path / "config.json", cfg);
  expect_load_error(tmp.path, "tensor 'model.layers.0.mlp.gate_proj.weight' shape = [128, 64], config needs [96, 64]");
}

TEST_F(BrokenCheckpoint, MissingTensorAndMissingFiles) {
  copy_fixture("llama_f32");
  std::string cfg = engine_test::read_file(tmp.path / "config.json");
  cfg.replace(cfg.find("\"num_hidden_layers\": 2"), 22, "\"num_hidden_layers\": 3");
  engine_test::write_file(tmp.path / "config.json", cfg);
  expect_load_error(tmp.path, "tensor 'model.layers.2.input_layernorm.weight' is missing");
  fs::remove(tmp.path / "model.safetensors");
  expect_load_error(tmp.path, "neither model.safetensors nor model.safetensors.index.json");
  fs::remove(tmp.path / "config.json");
  expect_load_error(tmp.path, "missing file");
}

TEST_F(BrokenCheckpoint, ShardIndexProblems) {
  copy_fixture("llama3_bf16_sharded");
  const auto idx = tmp.path / "model.safetensors.index.json";
  const std::string good = engine_test::read_file(idx);
  engine_test::write_file(idx, R"({"weight_map": {"model.norm.weight": "../../etc/passwd"}})");
  expect_load_error(tmp.path, "is not a plain file name");
  engine_test::write_file(idx, R"({"metadata": {}})");
  expect_load_error(tmp.path, "missing or empty object 'weight_map'");
  engine_test::write_file(idx, good);
  fs::remove(tmp.path / "model-00002-of-00004.safetensors");
  expect_load_error(tmp.path, "cannot open");
}

TEST_F(BrokenCheckpoint, UnsupportedDtypeAndArchitecture) {
  copy_fixture("llama_f32");
  std::string cfg = engine_test::read_file(tmp.path / "config.json");
  std::string arch = cfg;
  arch.replace(arch.find("LlamaForCausalLM"), 16, "GemmaForCausalLM");
  engine_test::write_file(tmp.path / "config.json", arch);
  expect_load_error(tmp.path, "unsupported architecture 'GemmaForCausalLM'");
  engine_test::write_file(tmp.path / "config.json", cfg);
  // Relabel one F32 tensor as I32 (same size): parses, but the loader refuses the dtype.
  std::string st = engine_test::read_file(tmp.path / "model.safetensors");
  const auto at = st.find("\"model.norm.weight\":{\"dtype\":\"F32\"");
  ASSERT_NE(at, std::string::npos);
  st.replace(st.find("F32", at), 3, "I32");
  engine_test::write_file(tmp.path / "model.safetensors", st);
  expect_load_error(tmp.path, "tensor 'model.norm.weight' dtype = I32 is not supported");
}

TEST(EngineLoader, LoadsEveryFixtureWithExpectedLayout) {
  const Model tied = Model::load(engine_test::fixtures() / "qwen3_f32_tied");
  EXPECT_EQ(tied.lm_head().data, tied.embed_tokens().data);
  EXPECT_FALSE(tied.layer(0).q_norm.empty());
  const Model bias = Model::load(engine_test::fixtures() / "qwen2_bf16");
  EXPECT_FALSE(bias.layer(1).k_bias.empty());
  EXPECT_EQ(bias.weight_dtype(), macattn::DType::bf16);
  const Model conv = Model::load(engine_test::fixtures() / "qwen2_bf16", LoadOptions{macattn::DType::f32, false});
  EXPECT_EQ(conv.weight_dtype(), macattn::DType::f32);
  EXPECT_EQ(conv.parameter_count(), bias.parameter_count());
  EXPECT_GT(conv.weight_bytes(), bias.weight_bytes());
  EXPECT_THROW(bias.layer(2), macattn::Error);
}

}  // namespace
