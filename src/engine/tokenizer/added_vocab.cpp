// engine/tokenizer/added_vocab.cpp: see added_vocab.hpp. Mirrors HF `tokenizers`
// AddedVocabulary (add_tokens, refresh_added_tokens, find_matches).
#include "engine/tokenizer/added_vocab.hpp"

#include <algorithm>
#include <limits>

#include "engine/tokenizer/regex.hpp"
#include "engine/tokenizer/utf8.hpp"
#include "macattn/error.hpp"

namespace macattn::engine::tok {

namespace {

// HF tests single_word with the regex `\w` (Rust regex: Alphabetic, marks, decimal digits,
// connector punctuation, joiners) on the character before and after the match.
bool is_word_char(std::string_view ch) {
  static const Regex word(R"(^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])", false, "single_word check");
  return word.matches(ch);
}

bool ends_with_word(std::string_view s) {
  if (s.empty()) return false;
  std::size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return is_word_char(s.substr(i));
}

bool starts_with_word(std::string_view s) {
  if (s.empty()) return false;
  return is_word_char(s.substr(0, utf8_char_len(static_cast<unsigned char>(s[0]))));
}

// Start of the whitespace run that ends `s` (s.size() when there is none).
std::size_t space_run_at_end(std::string_view s) {
  std::size_t start = s.size();
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t at = i;
    const bool space = is_white_space(utf8_next(s, i));
    if (!space)
      start = s.size();
    else if (start == s.size())
      start = at;
  }
  return start;
}

// Length of the whitespace run that starts `s`.
std::size_t space_run_at_start(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    std::size_t next = i;
    if (!is_white_space(utf8_next(s, next))) break;
    i = next;
  }
  return i;
}

}  // namespace

void AddedVocabulary::Matcher::build() {
  for (auto& bucket : by_first_byte) bucket.clear();
  for (std::size_t i = 0; i < patterns.size(); ++i) {
    if (!patterns[i].first.empty()) by_first_byte[static_cast<unsigned char>(patterns[i].first[0])].push_back(i);
  }
  for (auto& bucket : by_first_byte) {
    std::stable_sort(bucket.begin(), bucket.end(),
                     [&](std::size_t a, std::size_t b) { return patterns[a].first.size() > patterns[b].first.size(); });
  }
}

bool AddedVocabulary::Matcher::find(std::string_view text, std::size_t from, std::size_t& start, std::size_t& length,
                                    std::int32_t& id) const {
  for (std::size_t i = from; i < text.size(); ++i) {
    for (const std::size_t p : by_first_byte[static_cast<unsigned char>(text[i])]) {
      const std::string& pattern = patterns[p].first;
      if (text.compare(i, pattern.size(), pattern) == 0) {
        start = i;
        length = pattern.size();
        id = patterns[p].second;
        return true;
      }
    }
  }
  return false;
}

AddedVocabulary AddedVocabulary::parse(const json& value, const JsonPlace& place, const BpeModel& model,
                                       const Normalizer& normalizer) {
  AddedVocabulary v;
  if (value.is_null()) return v;
  if (!value.is_array()) json_fail(place, "must be an array, got " + json_brief(value));
  for (std::size_t i = 0; i < value.size(); ++i) {
    const JsonPlace at = place.at(i);
    const json& entry = value[i];
    AddedToken t;
    t.content = json_string(json_require(entry, "content", at), at.at("content"));
    t.single_word = json_bool_or(entry, "single_word", false, at);
    t.lstrip = json_bool_or(entry, "lstrip", false, at);
    t.rstrip = json_bool_or(entry, "rstrip", false, at);
    t.special = json_bool_or(entry, "special", false, at);
    t.normalized = json_bool_or(entry, "normalized", !t.special, at);
    if (const json* id = json_find(entry, "id", at)) json_id(*id, at.at("id"));  // checked, not used (see header)
    v.add(t, model);
  }
  // The match lists: special tokens first, then the others, split by their normalized flag;
  // normalized tokens are matched by their normalized content.
  for (const auto* list : {&v.special_, &v.added_}) {
    for (const AddedToken& t : *list) {
      const std::int32_t id = v.ids_.at(t.content);
      if (t.normalized) {
        v.normalized_content_[id] = normalizer.apply(t.content);
        v.normalized_.patterns.emplace_back(v.normalized_content_[id], id);
      } else {
        v.raw_.patterns.emplace_back(t.content, id);
      }
    }
  }
  v.raw_.build();
  v.normalized_.build();
  return v;
}

void AddedVocabulary::add(const AddedToken& token, const BpeModel& model) {
  if (token.special && !token.content.empty() && special_set_.insert(token.content).second) {
    special_.push_back(token);
  }
  if (token.content.empty() || seen_.count(token.key()) != 0) return;
  std::int32_t id;
  if (const auto it = ids_.find(token.content); it != ids_.end()) {
    id = it->second;
  } else if (const auto in_vocab = model.token_to_id(token.content)) {
    id = *in_vocab;
  } else {
    // HF: the next id after the highest added id, or the vocab's entry count to start with.
    const auto vocab_entries = static_cast<std::int64_t>(model.vocab_entries());
    std::int64_t next = vocab_entries;
    if (!ids_.empty()) {
      std::int64_t max = -1;
      for (const auto& [content, i] : ids_) max = std::max<std::int64_t>(max, i);
      if (max >= vocab_entries || vocab_entries == 0) next = max + 1;
    }
    if (next >= std::numeric_limits<std::int32_t>::max()) {
      throw macattn::Error("Tokenizer: added token \"" + token.content + "\" would get id " + std::to_string(next) +
                           ", beyond int32");
    }
    id = static_cast<std::int32_t>(next);
  }
  // A token re-added with other flags replaces the old entry under the same id.
  if (const auto old = tokens_.find(id); old != tokens_.end()) seen_.erase(old->second.key());
  ids_[token.content] = id;
  tokens_[id] = token;
  seen_.insert(token.key());
  max_id_ = std::max(max_id_, id);
  if (special_set_.count(token.content) == 0) added_.push_back(token);
}

std::optional<std::int32_t> AddedVocabulary::id_of(std::string_view content) const {
  const auto it = ids_.find(std::string(content));
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

const AddedToken* AddedVocabulary::token_of(std::int32_t id) const {
  const auto it = tokens_.find(id);
  return it == tokens_.end() ? nullptr : &it->second;
}

const std::string* AddedVocabulary::decode_text(std::int32_t id) const {
  const auto it = tokens_.find(id);
  if (it == tokens_.end()) return nullptr;
  const auto normalized = normalized_content_.find(id);
  return normalized != normalized_content_.end() ? &normalized->second : &it->second.content;
}

void AddedVocabulary::split(std::string_view text, bool normalized, std::vector<TextPiece>& out) const {
  const Matcher& matcher = normalized ? normalized_ : raw_;
  std::size_t start_offset = 0;
  std::size_t search = 0, start = 0, length = 0;
  std::int32_t id = -1;
  auto push_text = [&](std::size_t from, std::size_t to) {
    if (from < to) out.push_back({text.substr(from, to - from), -1});
  };
  while (search < text.size() && matcher.find(text, search, start, length, id)) {
    // Matches never overlap: the next search starts where this pattern match ended, even
    // when the match is discarded or rstrip extends it (as Aho-Corasick's find_iter does).
    search = start + length;
    std::size_t stop = start + length;
    const AddedToken& token = tokens_.at(id);
    if (token.single_word) {
      const bool space_before = start == 0 || !ends_with_word(text.substr(0, start));
      const bool space_after = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!space_before || !space_after) continue;
    }
    if (token.lstrip) start = std::max(space_run_at_end(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += space_run_at_start(text.substr(stop));
    // A match inside the whitespace an earlier rstrip took would end before its start (HF
    // panics there); keep the token, with no text of its own.
    stop = std::max(stop, start);
    push_text(start_offset, start);
    out.push_back({text.substr(start, stop - start), id});
    start_offset = stop;
  }
  push_text(start_offset, text.size());
}

}  // namespace macattn::engine::tok
