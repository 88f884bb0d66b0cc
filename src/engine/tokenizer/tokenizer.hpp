// engine/tokenizer/tokenizer.hpp: a Hugging Face `tokenizer.json` tokenizer (byte-level BPE).
//
// Interface shared by the engine and the CLI; the implementation lives beside this header.
// Untrusted input: every load and encode/decode call validates and throws macattn::Error
// (naming the file, the field and the bad value) instead of crashing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace macattn::engine {

class Tokenizer {
 public:
  /// Loads `tokenizer.json`; `tokenizer_config_json` (may be empty = absent) supplies
  /// add_bos_token / bos_token / eos_token where the model directory has it.
  static Tokenizer load(const std::filesystem::path& tokenizer_json,
                        const std::filesystem::path& tokenizer_config_json = {});
  /// The same from strings (tests, fuzzing). `config_json` may be empty.
  static Tokenizer from_json(std::string_view tokenizer_json, std::string_view config_json = {});

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  /// Text (UTF-8; invalid UTF-8 is replaced, never rejected) to ids. Added/special tokens in
  /// the text are matched as HF does. add_special_tokens applies the post-processor (BOS).
  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  /// Ids to text, as HF `decode(ids, skip_special_tokens)`. Throws for an id out of range.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const;
  /// The raw bytes one token stands for (may be part of a UTF-8 character), for streaming.
  std::string token_bytes(std::int32_t id) const;

  std::int32_t vocab_size() const;               ///< highest id + 1 (model vocab may be larger)
  std::optional<std::int32_t> bos_id() const;    ///< if the tokenizer/config names one
  std::vector<std::int32_t> eos_ids() const;     ///< eos token(s) from config/tokenizer
  std::optional<std::int32_t> token_id(std::string_view token) const;  ///< vocab or added token
  bool is_special(std::int32_t id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace macattn::engine
