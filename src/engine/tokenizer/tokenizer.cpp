// engine/tokenizer/tokenizer.cpp: Tokenizer = the parts of tokenizer.json run in HF's order:
// added tokens out of the raw text, normalizer, added tokens out of the normalized text,
// pre-tokenizer, BPE per word, post-processor. Not applied: "truncation" and "padding"
// (the engine wants every prompt token) and BPE dropout (refused at load).
#include "engine/tokenizer/tokenizer.hpp"

#include <fstream>
#include <sstream>

#include "engine/tokenizer/added_vocab.hpp"
#include "engine/tokenizer/bpe.hpp"
#include "engine/tokenizer/decoder.hpp"
#include "engine/tokenizer/json_util.hpp"
#include "engine/tokenizer/normalizer.hpp"
#include "engine/tokenizer/post_processor.hpp"
#include "engine/tokenizer/pre_tokenizer.hpp"
#include "engine/tokenizer/special_config.hpp"
#include "engine/tokenizer/utf8.hpp"
#include "macattn/error.hpp"

namespace macattn::engine {

using namespace tok;

namespace {

// Everything a loaded tokenizer holds. Tokenizer::Impl is exactly this; the loader builds a
// Parts because Impl's name is private to Tokenizer.
struct Parts {
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  BpeModel model;
  AddedVocabulary added;
  PostProcessor post_processor;
  Decoder decoder;
  std::optional<std::int32_t> bos;
  std::vector<std::int32_t> eos;
  std::optional<bool> add_bos, add_eos;  // tokenizer_config.json overrides of the post-processor
  bool processor_adds_bos = false, processor_adds_eos = false;

  const std::string* token_string(std::int32_t id) const {
    if (const std::string* text = added.decode_text(id)) return text;
    return model.id_to_token(id);
  }
  std::optional<std::int32_t> id_of(std::string_view token) const {
    if (const auto id = added.id_of(token)) return id;
    return model.token_to_id(token);
  }
};

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw macattn::Error("Tokenizer: cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw macattn::Error("Tokenizer: error while reading " + path.string());
  return text.str();
}

// Token names used for end of text when tokenizer_config.json names none (Llama-3, GPT-2,
// Qwen2, Llama-2 conventions); only special added tokens count.
constexpr const char* kEosNames[] = {"<|end_of_text|>", "<|eot_id|>", "<|endoftext|>", "<|im_end|>", "</s>"};

std::unique_ptr<Parts> build(std::string_view tokenizer_json, const std::string& file, std::string_view config_json,
                             const std::string& config_file) {
  auto impl = std::make_unique<Parts>();
  const JsonPlace top{file, ""};
  json root;
  try {
    root = json::parse(tokenizer_json.begin(), tokenizer_json.end());
  } catch (const json::exception& e) {
    json_fail(top, std::string("not valid JSON: ") + e.what());
  }
  if (!root.is_object()) json_fail(top, "must be a JSON object, got " + json_brief(root));
  if (const json* version = json_find(root, "version", top)) {
    const std::string v = json_string(*version, top.at("version"));
    if (v != "1.0") json_fail(top.at("version"), "unknown tokenizer.json version \"" + v + "\" (expected \"1.0\")");
  }
  auto part = [&](const char* key) -> const json& {
    static const json null_value;
    const json* v = json_find(root, key, top);
    return v == nullptr ? null_value : *v;
  };
  impl->normalizer = Normalizer::parse(part("normalizer"), top.at("normalizer"));
  impl->pre_tokenizer = PreTokenizer::parse(part("pre_tokenizer"), top.at("pre_tokenizer"));
  impl->model = BpeModel::parse(json_require(root, "model", top), top.at("model"));
  impl->added = AddedVocabulary::parse(part("added_tokens"), top.at("added_tokens"), impl->model, impl->normalizer);
  impl->post_processor = PostProcessor::parse(part("post_processor"), top.at("post_processor"));
  impl->decoder = Decoder::parse(part("decoder"), top.at("decoder"));

  const SpecialConfig config = SpecialConfig::parse(config_json, config_file);
  const JsonPlace config_top{config_file, ""};
  auto config_token = [&](const std::optional<std::string>& name, const char* key) -> std::optional<std::int32_t> {
    if (!name) return std::nullopt;
    const auto id = impl->id_of(*name);
    if (!id) json_fail(config_top.at(key), "\"" + *name + "\" is not a token of " + file);
    return id;
  };
  const std::vector<std::int32_t> around = impl->post_processor.apply({});
  impl->bos = config_token(config.bos_token, "bos_token");
  if (!impl->bos && !around.empty()) impl->bos = around.front();
  if (const auto eos = config_token(config.eos_token, "eos_token")) {
    impl->eos.push_back(*eos);
  } else {
    for (const char* name : kEosNames) {
      if (impl->added.is_special(name)) impl->eos.push_back(*impl->added.id_of(name));
    }
  }
  impl->add_bos = config.add_bos_token;
  impl->add_eos = config.add_eos_token;
  if (impl->add_bos && *impl->add_bos && !impl->bos)
    json_fail(config_top.at("add_bos_token"), "true but no bos_token is known");
  if (impl->add_eos && *impl->add_eos && impl->eos.empty())
    json_fail(config_top.at("add_eos_token"), "true but no eos_token is known");
  impl->processor_adds_bos = impl->bos && !around.empty() && around.front() == *impl->bos;
  impl->processor_adds_eos = !impl->eos.empty() && !around.empty() && around.back() == impl->eos.front();
  return impl;
}

}  // namespace

struct Tokenizer::Impl : Parts {
  explicit Impl(Parts&& parts) : Parts(std::move(parts)) {}
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::filesystem::path& tokenizer_json,
                          const std::filesystem::path& tokenizer_config_json) {
  const std::string text = read_file(tokenizer_json);
  const std::string config = tokenizer_config_json.empty() ? std::string() : read_file(tokenizer_config_json);
  if (!tokenizer_config_json.empty() && config.empty()) {
    throw macattn::Error("Tokenizer: " + tokenizer_config_json.string() + ": empty file");
  }
  return Tokenizer(
      std::make_unique<Impl>(std::move(*build(text, tokenizer_json.string(), config, tokenizer_config_json.string()))));
}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json) {
  return Tokenizer(std::make_unique<Impl>(
      std::move(*build(tokenizer_json, "tokenizer.json", config_json, "tokenizer_config.json"))));
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& t = *impl_;
  const std::string valid = utf8_lossy(text);
  std::vector<std::int32_t> ids;
  std::vector<TextPiece> raw_pieces, pieces;
  t.added.split(valid, false, raw_pieces);
  for (const TextPiece& raw : raw_pieces) {
    if (raw.id >= 0) {
      ids.push_back(raw.id);
      continue;
    }
    const std::string normalized = t.normalizer.apply(raw.text);
    pieces.clear();
    t.added.split(normalized, true, pieces);
    for (const TextPiece& piece : pieces) {
      if (piece.id >= 0) {
        ids.push_back(piece.id);
        continue;
      }
      for (const std::string& word : t.pre_tokenizer.split(std::string(piece.text))) t.model.tokenize(word, ids);
    }
  }
  if (!add_special_tokens) return ids;
  ids = t.post_processor.apply(ids);
  // tokenizer_config.json's add_bos_token / add_eos_token win over the post-processor, as
  // transformers' Llama tokenizers rebuild their template from them.
  if (t.add_bos && !*t.add_bos && t.processor_adds_bos) ids.erase(ids.begin());
  if (t.add_bos && *t.add_bos && !t.processor_adds_bos) ids.insert(ids.begin(), *t.bos);
  if (t.add_eos && !*t.add_eos && t.processor_adds_eos) ids.pop_back();
  if (t.add_eos && *t.add_eos && !t.processor_adds_eos) ids.push_back(t.eos.front());
  return ids;
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const {
  std::vector<const std::string*> tokens;
  tokens.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::string* token = impl_->token_string(ids[i]);
    if (token == nullptr) {
      throw macattn::Error("Tokenizer::decode: ids[" + std::to_string(i) + "] = " + std::to_string(ids[i]) +
                           " is not a token id (vocab_size " + std::to_string(vocab_size()) + ")");
    }
    if (skip_special_tokens && impl_->added.is_special(*token)) continue;
    tokens.push_back(token);
  }
  return utf8_lossy(impl_->decoder.bytes(tokens));
}

std::string Tokenizer::token_bytes(std::int32_t id) const {
  const std::string* token = impl_->token_string(id);
  if (token == nullptr) {
    throw macattn::Error("Tokenizer::token_bytes: id " + std::to_string(id) + " is not a token id (vocab_size " +
                         std::to_string(vocab_size()) + ")");
  }
  return impl_->decoder.bytes({token});
}

std::int32_t Tokenizer::vocab_size() const {
  return std::max(impl_->model.max_id(), impl_->added.max_id()) + 1;
}

std::optional<std::int32_t> Tokenizer::bos_id() const {
  return impl_->bos;
}

std::vector<std::int32_t> Tokenizer::eos_ids() const {
  return impl_->eos;
}

std::optional<std::int32_t> Tokenizer::token_id(std::string_view token) const {
  return impl_->id_of(token);
}

bool Tokenizer::is_special(std::int32_t id) const {
  const std::string* token = impl_->token_string(id);
  return token != nullptr && impl_->added.is_special(*token);
}

}  // namespace macattn::engine
