// engine/tokenizer/bpe.hpp: tokenizer.json "model" of type BPE: vocab, ranked merges, and the
// word -> ids algorithm of HF `tokenizers` (lowest-rank pair first, leftmost on ties).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer/json_util.hpp"

namespace macattn::engine::tok {

class BpeModel {
 public:
  static BpeModel parse(const json& model, const JsonPlace& place);

  /// Appends the ids of `word` (one pre-tokenized word) to `out`.
  void tokenize(std::string_view word, std::vector<std::int32_t>& out) const;

  std::optional<std::int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(std::int32_t id) const;       ///< nullptr when no token has `id`
  std::size_t vocab_entries() const { return vocab_.size(); }  ///< HF's Model::get_vocab_size
  std::int32_t max_id() const { return max_id_; }              ///< -1 when the vocab is empty

 private:
  struct Merge {
    std::int32_t rank;
    std::int32_t new_id;
  };
  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }
  void merge_all(std::vector<std::int32_t>& symbols) const;

  std::unordered_map<std::string, std::int32_t> vocab_;
  std::unordered_map<std::int32_t, std::string> vocab_r_;
  std::unordered_map<std::uint64_t, Merge> merges_;
  std::int32_t max_id_ = -1;
  std::optional<std::string> unk_token_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string file_;  // for errors raised while encoding
};

}  // namespace macattn::engine::tok
