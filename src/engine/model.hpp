// engine/model.hpp: a Hugging Face Llama-family checkpoint loaded for CPU inference.
//
// Model::load maps the directory's safetensors file(s) read-only and points every weight at
// its bytes in the mapping (no copy unless LoadOptions asks for a dtype conversion). Every
// header offset, shape and dtype is checked against the file size and the config first, so
// a malformed or truncated checkpoint throws macattn::Error (file, tensor, field, value)
// instead of crashing. Inference runs in a Session (engine/session.hpp); one Model may serve
// several Sessions at once (it is read-only after load).
//
// Shapes (row-major, as stored by transformers; "[out, in]" means y = W x):
//   embed_tokens [vocab, hidden]; lm_head [vocab, hidden] (= embed_tokens when tied)
//   per layer: q_proj [Hq*D, hidden], k_proj/v_proj [Hkv*D, hidden], o_proj [hidden, Hq*D],
//   gate_proj/up_proj [inter, hidden], down_proj [hidden, inter], norms [hidden],
//   q_norm/k_norm [D] (qwen3), q/k/v bias [out] (qwen2 / attention_bias), o bias [hidden]
//   (llama / qwen3 with attention_bias).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/model_config.hpp"
#include "macattn/dtype.hpp"

namespace macattn::engine {

/// A 2-D weight (a 1-D one has rows = 1) in the mapping or in memory the Model owns.
struct WeightTensor {
  const void* data = nullptr;
  DType dtype = DType::f32;
  std::int64_t rows = 0;  ///< out features (1 for vectors)
  std::int64_t cols = 0;  ///< in features (length for vectors)
  bool empty() const { return data == nullptr; }
};

struct LayerWeights {
  WeightTensor input_norm, post_attention_norm;  ///< [hidden]
  WeightTensor q_proj, k_proj, v_proj, o_proj;
  WeightTensor q_bias, k_bias, v_bias;  ///< empty unless config.attention_bias
  WeightTensor o_bias;                  ///< [hidden]; empty unless config.o_proj_bias
  WeightTensor q_norm, k_norm;          ///< [D]; empty unless config.qk_norm
  WeightTensor gate_proj, up_proj, down_proj;
};

struct LoadOptions {
  /// Convert every weight to this dtype at load (copies into memory the Model owns);
  /// nullopt = use the file's dtype in place (zero-copy). f32 is the most accurate and
  /// twice the bytes of bf16; bf16/f16 weights are always accumulated in fp32.
  std::optional<DType> weight_dtype;
  /// Advise the kernel to read the mapping ahead (MADV_WILLNEED); off for huge models.
  bool prefetch = true;
};

class Model {
 public:
  /// Loads `dir`: config.json (+ generation_config.json), then model.safetensors or the
  /// shards named by model.safetensors.index.json. Throws macattn::Error for a missing
  /// file, a malformed header, a tensor missing / of the wrong shape / out of the file's
  /// bounds, or an unsupported dtype or config. Tokenizer files are not read here
  /// (engine/tokenizer/tokenizer.hpp: Tokenizer::load(dir / "tokenizer.json", ...)).
  static Model load(const std::filesystem::path& dir, const LoadOptions& options = {});

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const std::filesystem::path& directory() const { return dir_; }
  const WeightTensor& embed_tokens() const { return embed_; }
  const WeightTensor& final_norm() const { return final_norm_; }
  const WeightTensor& lm_head() const { return lm_head_; }  ///< the embedding when tied
  const LayerWeights& layer(std::int32_t i) const;          ///< throws for i out of range
  /// Dtype of the projection weights (the embedding may differ only if the file mixes).
  DType weight_dtype() const { return q_dtype_; }
  /// Bytes of all weights as used (mapped or owned), counting a tied lm_head once.
  std::size_t weight_bytes() const { return weight_bytes_; }
  std::int64_t parameter_count() const { return parameter_count_; }
  std::string summary() const;

 private:
  Model();
  struct Storage;  // the mappings and any converted copies
  std::unique_ptr<Storage> storage_;
  ModelConfig config_;
  std::filesystem::path dir_;
  WeightTensor embed_, final_norm_, lm_head_;
  std::vector<LayerWeights> layers_;
  DType q_dtype_ = DType::f32;
  std::size_t weight_bytes_ = 0;
  std::int64_t parameter_count_ = 0;
  friend class ModelLoader;
};

}  // namespace macattn::engine
