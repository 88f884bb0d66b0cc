// engine/tokenizer/added_vocab.hpp: tokenizer.json "added_tokens" (special and added tokens):
// their ids as HF assigns them, and finding them in text with their single_word / lstrip /
// rstrip / normalized flags.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/tokenizer/bpe.hpp"
#include "engine/tokenizer/json_util.hpp"
#include "engine/tokenizer/normalizer.hpp"

namespace macattn::engine::tok {

struct AddedToken {
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = true;
  bool special = false;
  /// Identity for HF's "same token added twice" check: content and every flag.
  std::string key() const {
    return content + static_cast<char>('0' + single_word) + static_cast<char>('0' + lstrip) +
           static_cast<char>('0' + rstrip) + static_cast<char>('0' + normalized) + static_cast<char>('0' + special);
  }
};

/// A stretch of text, or an added token found in it (id >= 0).
struct TextPiece {
  std::string_view text;
  std::int32_t id = -1;
};

class AddedVocabulary {
 public:
  /// Reads `value` (the "added_tokens" array) token by token, as HF's deserializer does: a
  /// token already in the vocab keeps that id, others take the next id after the vocab. The
  /// ids written in the file are not used (HF only warns when they differ).
  static AddedVocabulary parse(const json& value, const JsonPlace& place, const BpeModel& model,
                               const Normalizer& normalizer);

  /// Cuts `text` into stretches and added tokens: the non-normalized tokens when `normalized`
  /// is false (raw text), the normalized ones when true (text after the normalizer). Pieces
  /// are in order; empty stretches are left out.
  void split(std::string_view text, bool normalized, std::vector<TextPiece>& out) const;

  std::optional<std::int32_t> id_of(std::string_view content) const;
  const AddedToken* token_of(std::int32_t id) const;
  /// The string decoding uses for added token `id` (nullptr if `id` is not one): a normalized
  /// token's normalized content, as HF decodes it, else its content.
  const std::string* decode_text(std::int32_t id) const;
  bool is_special(std::string_view content) const { return special_set_.count(std::string(content)) != 0; }
  std::int32_t max_id() const { return max_id_; }

 private:
  // Leftmost-longest matching (HF uses Aho-Corasick in that mode): patterns bucketed by first
  // byte, longest first, so the first bucket entry that matches at the leftmost start wins.
  struct Matcher {
    std::vector<std::pair<std::string, std::int32_t>> patterns;
    std::array<std::vector<std::size_t>, 256> by_first_byte;
    void build();
    bool find(std::string_view text, std::size_t from, std::size_t& start, std::size_t& length, std::int32_t& id) const;
  };
  void add(const AddedToken& token, const BpeModel& model);

  std::unordered_map<std::string, std::int32_t> ids_;
  std::unordered_map<std::int32_t, AddedToken> tokens_;
  std::unordered_set<std::string> seen_;
  std::vector<AddedToken> added_;    // classic tokens, in file order
  std::vector<AddedToken> special_;  // special tokens, in file order
  std::unordered_set<std::string> special_set_;
  std::unordered_map<std::int32_t, std::string> normalized_content_;
  std::int32_t max_id_ = -1;
  Matcher raw_;
  Matcher normalized_;
};

}  // namespace macattn::engine::tok
