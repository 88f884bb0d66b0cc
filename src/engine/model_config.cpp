#include "engine/model_config.hpp"

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/io/mapped_file.hpp"
#include "macattn/error.hpp"

namespace macattn::engine {

namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw Error(source + ": " + what);
}

json parse_object(std::string_view text, const std::string& source) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(source, "not valid JSON");
  if (!j.is_object()) fail(source, "top level is not a JSON object");
  return j;
}

// A present, non-null field; nullptr if absent or null.
const json* field(const json& j, const char* name) {
  const auto it = j.find(name);
  return (it == j.end() || it->is_null()) ? nullptr : &*it;
}

std::int64_t get_int(const json& j, const char* name, const std::string& source, std::optional<std::int64_t> fallback,
                     std::int64_t lo, std::int64_t hi) {
  const json* v = field(j, name);
  if (v == nullptr) {
    if (!fallback) fail(source, std::string("missing field '") + name + "'");
    return *fallback;
  }
  if (!v->is_number_integer() && !v->is_number_unsigned())
    fail(source, std::string(name) + " = " + v->dump() + " is not an integer");
  if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
    fail(source, std::string(name) + " = " + v->dump() + " is out of range [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  const std::int64_t x = v->get<std::int64_t>();
  if (x < lo || x > hi)
    fail(source, std::string(name) + " = " + std::to_string(x) + " is out of range [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  return x;
}

double get_double(const json& j, const char* name, const std::string& source, double fallback) {
  const json* v = field(j, name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) fail(source, std::string(name) + " = " + v->dump() + " is not a number");
  const double x = v->get<double>();
  if (!std::isfinite(x)) fail(source, std::string(name) + " = " + v->dump() + " is not finite");
  return x;
}

bool get_bool(const json& j, const char* name, const std::string& source, bool fallback) {
  const json* v = field(j, name);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) fail(source, std::string(name) + " = " + v->dump() + " is not a boolean");
  return v->get<bool>();
}

std::string get_string(const json& j, const char* name, const std::string& source) {
  const json* v = field(j, name);
  if (v == nullptr) return {};
  if (!v->is_string()) fail(source, std::string(name) + " = " + v->dump() + " is not a string");
  return v->get<std::string>();
}

Architecture architecture_of(const json& j, const std::string& source, std::string& model_type) {
  model_type = get_string(j, "model_type", source);
  std::string arch;
  if (const json* a = field(j, "architectures")) {
    if (!a->is_array() || a->empty() || !(*a)[0].is_string())
      fail(source, "architectures = " + a->dump() + " is not a list of names");
    arch = (*a)[0].get<std::string>();
  }
  struct Known {
    const char* cls;
    const char* type;
    Architecture arch;
  };
  static const Known known[] = {{"LlamaForCausalLM", "llama", Architecture::llama},
                                {"MistralForCausalLM", "mistral", Architecture::mistral},
                                {"Qwen2ForCausalLM", "qwen2", Architecture::qwen2},
                                {"Qwen3ForCausalLM", "qwen3", Architecture::qwen3}};
  for (const Known& k : known) {
    if (!arch.empty() ? arch == k.cls : model_type == k.type) return k.arch;
  }
  if (arch.empty() && model_type.empty()) fail(source, "neither 'architectures' nor 'model_type' is given");
  fail(source, "unsupported architecture '" + (arch.empty() ? model_type : arch) +
                   "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)");
}

void parse_rope(const json& j, const std::string& source, ModelConfig& c) {
  // transformers >= 5 writes "rope_parameters" (theta and scaling together); earlier versions
  // write "rope_theta" and "rope_scaling". Read both; the older field wins if both exist.
  const json* params = field(j, "rope_parameters");
  if (params != nullptr && !params->is_object())
    fail(source, "rope_parameters = " + params->dump() + " is not an object");
  c.rope_theta =
      get_double(j, "rope_theta", source, params ? get_double(*params, "rope_theta", source, 10000.0) : 10000.0);
  if (!(c.rope_theta > 0)) fail(source, "rope_theta = " + std::to_string(c.rope_theta) + " must be > 0");

  const json* s = field(j, "rope_scaling");
  if (s == nullptr) s = params;
  if (s == nullptr) return;
  if (!s->is_object()) fail(source, "rope_scaling = " + s->dump() + " is not an object");
  std::string type = get_string(*s, "rope_type", source);
  if (type.empty()) type = get_string(*s, "type", source);
  const std::string where = source + " rope_scaling";
  if (type.empty() || type == "default") return;
  RopeScaling& r = c.rope_scaling;
  r.factor = get_double(*s, "factor", where, 1.0);
  if (!(r.factor > 0)) fail(where, "factor = " + std::to_string(r.factor) + " must be > 0");
  if (type == "linear") {
    r.type = RopeScaling::Type::linear;
  } else if (type == "llama3") {
    r.type = RopeScaling::Type::llama3;
    r.low_freq_factor = get_double(*s, "low_freq_factor", where, 1.0);
    r.high_freq_factor = get_double(*s, "high_freq_factor", where, 4.0);
    r.original_max_position_embeddings = get_int(*s, "original_max_position_embeddings", where, 8192, 1, 1LL << 40);
    if (!(r.low_freq_factor > 0) || !(r.high_freq_factor > r.low_freq_factor))
      fail(where, "low_freq_factor = " + std::to_string(r.low_freq_factor) +
                      ", high_freq_factor = " + std::to_string(r.high_freq_factor) + ": need 0 < low < high");
  } else {
    fail(where, "rope_type = '" + type + "' is not supported (default, linear, llama3)");
  }
}

std::vector<std::int32_t> parse_ids(const json& v, const char* name, const std::string& source) {
  std::vector<std::int32_t> ids;
  auto one = [&](const json& x) {
    if (!x.is_number_integer() || x.get<std::int64_t>() < 0 || x.get<std::int64_t>() > INT32_MAX)
      fail(source, std::string(name) + " = " + v.dump() + " is not a token id or list of ids");
    ids.push_back(static_cast<std::int32_t>(x.get<std::int64_t>()));
  };
  if (v.is_array()) {
    for (const json& x : v) one(x);
  } else {
    one(v);
  }
  return ids;
}

void parse_special_ids(const json& j, const std::string& source, ModelConfig& c) {
  if (const json* b = field(j, "bos_token_id")) {
    const auto ids = parse_ids(*b, "bos_token_id", source);
    if (!ids.empty()) c.bos_token_id = ids[0];
  }
  if (const json* e = field(j, "eos_token_id")) c.eos_token_ids = parse_ids(*e, "eos_token_id", source);
}

}  // namespace

const char* architecture_name(Architecture arch) {
  switch (arch) {
    case Architecture::llama:
      return "llama";
    case Architecture::mistral:
      return "mistral";
    case Architecture::qwen2:
      return "qwen2";
    case Architecture::qwen3:
      return "qwen3";
  }
  return "invalid";
}

ModelConfig ModelConfig::parse(std::string_view config_json, std::string_view generation_config_json,
                               const std::string& source) {
  const json j = parse_object(config_json, source);
  ModelConfig c;
  c.architecture = architecture_of(j, source, c.model_type);
  const std::string act = get_string(j, "hidden_act", source);
  if (!act.empty() && act != "silu") fail(source, "hidden_act = '" + act + "' is not supported (silu)");
  if (get_bool(j, "mlp_bias", source, false)) fail(source, "mlp_bias = true is not supported");

  c.hidden_size = static_cast<std::int32_t>(get_int(j, "hidden_size", source, std::nullopt, 1, 1 << 16));
  c.intermediate_size = static_cast<std::int32_t>(get_int(j, "intermediate_size", source, std::nullopt, 1, 1 << 20));
  c.num_layers = static_cast<std::int32_t>(get_int(j, "num_hidden_layers", source, std::nullopt, 1, 1024));
  c.num_q_heads = static_cast<std::int32_t>(get_int(j, "num_attention_heads", source, std::nullopt, 1, 1024));
  c.num_kv_heads = static_cast<std::int32_t>(get_int(j, "num_key_value_heads", source, c.num_q_heads, 1, 1024));
  const std::int64_t default_head_dim =
      c.architecture == Architecture::qwen3 && field(j, "head_dim") == nullptr ? 128 : c.hidden_size / c.num_q_heads;
  c.head_dim = static_cast<std::int32_t>(get_int(j, "head_dim", source, default_head_dim, 1, 1024));
  c.vocab_size = static_cast<std::int32_t>(get_int(j, "vocab_size", source, std::nullopt, 1, 1 << 24));
  c.max_position_embeddings = get_int(j, "max_position_embeddings", source, 2048, 1, 1LL << 31);
  c.rms_norm_eps = static_cast<float>(get_double(j, "rms_norm_eps", source, 1e-6));
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", source, false);
  parse_rope(j, source, c);

  switch (c.architecture) {
    case Architecture::llama:
      c.attention_bias = get_bool(j, "attention_bias", source, false);
      c.o_proj_bias = c.attention_bias;  // LlamaAttention: o_proj bias = attention_bias too
      break;
    case Architecture::mistral:
      break;
    case Architecture::qwen2:
      c.attention_bias = true;  // Qwen2Attention: q/k/v projections always carry a bias
      break;
    case Architecture::qwen3:
      c.attention_bias = get_bool(j, "attention_bias", source, false);
      c.o_proj_bias = c.attention_bias;
      c.qk_norm = true;
      break;
  }
  // Sliding-window attention: mistral applies "sliding_window" whenever set; qwen only with
  // use_sliding_window. Recorded so the Session can refuse contexts beyond it.
  const bool qwen = c.architecture == Architecture::qwen2 || c.architecture == Architecture::qwen3;
  if (!qwen || get_bool(j, "use_sliding_window", source, false)) {
    if (field(j, "sliding_window") != nullptr)
      c.sliding_window = get_int(j, "sliding_window", source, std::nullopt, 1, 1LL << 40);
  }
  parse_special_ids(j, source, c);
  if (!generation_config_json.empty()) {
    const json g = parse_object(generation_config_json, "generation_config.json");
    ModelConfig gen;
    parse_special_ids(g, "generation_config.json", gen);
    if (gen.bos_token_id) c.bos_token_id = gen.bos_token_id;
    if (!gen.eos_token_ids.empty()) c.eos_token_ids = gen.eos_token_ids;
  }
  c.validate(source);
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& dir) {
  const std::filesystem::path cfg = dir / "config.json";
  const std::filesystem::path gen = dir / "generation_config.json";
  std::string gen_text;
  std::error_code ec;
  if (std::filesystem::exists(gen, ec)) gen_text = read_text_file(gen, 1u << 20);
  return parse(read_text_file(cfg, 16u << 20), gen_text, cfg.string());
}

void ModelConfig::validate(const std::string& source) const {
  auto bad = [&](const std::string& what) { fail(source, what); };
  if (hidden_size < 1) bad("hidden_size = " + std::to_string(hidden_size) + " must be >= 1");
  if (intermediate_size < 1) bad("intermediate_size = " + std::to_string(intermediate_size) + " must be >= 1");
  if (num_layers < 1) bad("num_hidden_layers = " + std::to_string(num_layers) + " must be >= 1");
  if (num_q_heads < 1 || num_kv_heads < 1 || num_q_heads % num_kv_heads != 0)
    bad("num_key_value_heads = " + std::to_string(num_kv_heads) +
        " must divide num_attention_heads = " + std::to_string(num_q_heads));
  if (head_dim < 2 || head_dim > 1024 || head_dim % 2 != 0)
    bad("head_dim = " + std::to_string(head_dim) + " must be even and in [2, 1024] (RoPE rotates pairs)");
  if (static_cast<std::int64_t>(num_q_heads) * head_dim > (1 << 20))
    bad("num_attention_heads * head_dim = " + std::to_string(static_cast<std::int64_t>(num_q_heads) * head_dim) +
        " is too large");
  if (vocab_size < 1) bad("vocab_size = " + std::to_string(vocab_size) + " must be >= 1");
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps))
    bad("rms_norm_eps = " + std::to_string(rms_norm_eps) + " must be > 0");
  if (!(rope_theta > 0) || !std::isfinite(rope_theta))
    bad("rope_theta = " + std::to_string(rope_theta) + " must be > 0");
  if (bos_token_id && *bos_token_id >= vocab_size)
    bad("bos_token_id = " + std::to_string(*bos_token_id) + " is not below vocab_size = " + std::to_string(vocab_size));
  for (std::int32_t e : eos_token_ids)
    if (e >= vocab_size)
      bad("eos_token_id = " + std::to_string(e) + " is not below vocab_size = " + std::to_string(vocab_size));
}

std::string ModelConfig::to_string() const {
  std::ostringstream s;
  s << architecture_name(architecture) << ": layers=" << num_layers << " hidden=" << hidden_size
    << " inter=" << intermediate_size << " heads=" << num_q_heads << "/" << num_kv_heads << " head_dim=" << head_dim
    << " vocab=" << vocab_size << " rope_theta=" << rope_theta;
  if (rope_scaling.type == RopeScaling::Type::llama3) s << " rope=llama3(factor=" << rope_scaling.factor << ")";
  if (rope_scaling.type == RopeScaling::Type::linear) s << " rope=linear(factor=" << rope_scaling.factor << ")";
  if (tie_word_embeddings) s << " tied";
  if (attention_bias) s << " qkv_bias";
  if (o_proj_bias) s << " o_bias";
  if (qk_norm) s << " qk_norm";
  return s.str();
}

}  // namespace macattn::engine
