// engine/model_config.hpp: the model's hyper-parameters, parsed from a Hugging Face
// `config.json` (+ `generation_config.json`) and validated.
//
// Untrusted input: parse() never crashes; a missing, mistyped or out-of-range field throws
// macattn::Error naming the source file, the field and the value, e.g.
// "config.json: num_key_value_heads = 3 must divide num_attention_heads = 8".
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace macattn::engine {

/// The supported families. They share one decoder block (pre-norm, RoPE, GQA, SwiGLU MLP);
/// they differ in the flags below (bias, qk-norm) and in defaults.
enum class Architecture : std::uint8_t {
  llama = 0,    ///< LlamaForCausalLM (Llama 2, 3, 3.1, 3.2)
  mistral = 1,  ///< MistralForCausalLM (sliding_window must be null or >= the context used)
  qwen2 = 2,    ///< Qwen2ForCausalLM (Qwen2, Qwen2.5): bias on q/k/v projections
  qwen3 = 3,    ///< Qwen3ForCausalLM: RMSNorm over each q and k head before RoPE
};
const char* architecture_name(Architecture arch);

/// RoPE frequency scaling. `none` = plain inv_freq[i] = theta^(-2i/rotary_dim).
/// `llama3` = Llama 3.1's piecewise wavelength scaling (factor, low/high_freq_factor,
/// original_max_position_embeddings), exactly as transformers' _compute_llama3_parameters.
/// `linear` = positions divided by factor (inv_freq / factor).
struct RopeScaling {
  enum class Type : std::uint8_t { none = 0, linear = 1, llama3 = 2 };
  Type type = Type::none;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  std::int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::llama;
  std::string model_type;              ///< config.json "model_type", e.g. "llama"
  std::int32_t hidden_size = 0;        ///< d_model
  std::int32_t intermediate_size = 0;  ///< MLP width
  std::int32_t num_layers = 0;         ///< num_hidden_layers
  std::int32_t num_q_heads = 0;        ///< num_attention_heads
  std::int32_t num_kv_heads = 0;       ///< num_key_value_heads (defaults to num_q_heads)
  std::int32_t head_dim = 0;           ///< "head_dim" if present, else hidden_size / num_q_heads
  std::int32_t vocab_size = 0;
  std::int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;  ///< "rope_theta" or rope_parameters.rope_theta
  RopeScaling rope_scaling;     ///< "rope_scaling" or "rope_parameters" (transformers 5)
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;            ///< lm_head shares embed_tokens
  bool attention_bias = false;                 ///< q/k/v projections have a bias (qwen2: always)
  bool o_proj_bias = false;                    ///< o_proj has a bias (llama/qwen3: = attention_bias; qwen2: never)
  bool qk_norm = false;                        ///< per-head RMSNorm of q and k before RoPE (qwen3)
  std::optional<std::int64_t> sliding_window;  ///< mistral/qwen: informative; see Session
  std::optional<std::int32_t> bos_token_id;    ///< generation_config.json, else config.json
  std::vector<std::int32_t> eos_token_ids;     ///< generation_config.json, else config.json (int or list)

  /// Parses config.json text (and generation_config.json text, may be empty = absent).
  /// `source` names the file in error messages. Throws macattn::Error on anything
  /// unsupported (architecture, hidden_act != silu, mlp_bias, head_dim not even, ...).
  static ModelConfig parse(std::string_view config_json, std::string_view generation_config_json = {},
                           const std::string& source = "config.json");
  /// Reads <dir>/config.json and, if present, <dir>/generation_config.json.
  static ModelConfig load(const std::filesystem::path& dir);

  /// Checks every field's range and relation (heads divide, head_dim even and <= 1024, ...).
  void validate(const std::string& source = "config.json") const;
  std::string to_string() const;
};

}  // namespace macattn::engine
