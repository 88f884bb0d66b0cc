// engine/tokenizer/bpe.cpp: see bpe.hpp. Follows HF `tokenizers` models/bpe (merge_word,
// Word::merge_all) so ids match token for token, including its unk / byte_fallback paths.
#include "engine/tokenizer/bpe.hpp"

#include <cstdio>
#include <queue>

#include "engine/tokenizer/utf8.hpp"
#include "macattn/error.hpp"

namespace macattn::engine::tok {

namespace {

// "a b" -> ("a", "b"); exactly one space, as HF's convert_merges_to_hashmap requires.
bool split_merge_line(const std::string& line, std::string& a, std::string& b) {
  const std::size_t space = line.find(' ');
  if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) return false;
  a = line.substr(0, space);
  b = line.substr(space + 1);
  return true;
}

}  // namespace

BpeModel BpeModel::parse(const json& model, const JsonPlace& place) {
  BpeModel m;
  m.file_ = place.file;
  if (const json* type = json_find(model, "type", place)) {
    const std::string t = json_string(*type, place.at("type"));
    if (t != "BPE") json_fail(place.at("type"), "unsupported model \"" + t + "\" (only BPE)");
  }
  if (const json* dropout = json_find(model, "dropout", place); dropout != nullptr && !dropout->is_null()) {
    // Dropout makes encoding random; inference files never set it.
    if (!dropout->is_number() || dropout->get<double>() != 0.0) {
      json_fail(place.at("dropout"), "BPE dropout is not supported for inference, got " + json_brief(*dropout));
    }
  }
  m.unk_token_ = json_optional_string(model, "unk_token", place);
  m.continuing_subword_prefix_ = json_optional_string(model, "continuing_subword_prefix", place).value_or("");
  m.end_of_word_suffix_ = json_optional_string(model, "end_of_word_suffix", place).value_or("");
  m.fuse_unk_ = json_bool_or(model, "fuse_unk", false, place);
  m.byte_fallback_ = json_bool_or(model, "byte_fallback", false, place);
  m.ignore_merges_ = json_bool_or(model, "ignore_merges", false, place);

  const JsonPlace vocab_place = place.at("vocab");
  const json& vocab = json_require(model, "vocab", place);
  if (!vocab.is_object()) json_fail(vocab_place, "must be an object {token: id}, got " + json_brief(vocab));
  m.vocab_.reserve(vocab.size());
  for (const auto& [token, id_value] : vocab.items()) {
    const std::int32_t id = json_id(id_value, vocab_place.at(token));
    m.vocab_[token] = id;
    m.vocab_r_[id] = token;  // several tokens with one id: the last (in key order) decodes
    if (id > m.max_id_) m.max_id_ = id;
  }

  const JsonPlace merges_place = place.at("merges");
  const json& merges = json_require(model, "merges", place);
  if (!merges.is_array()) json_fail(merges_place, "must be an array, got " + json_brief(merges));
  m.merges_.reserve(merges.size());
  std::int32_t rank = 0;
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const JsonPlace at = merges_place.at(i);
    std::string a, b;
    if (merges[i].is_string()) {
      const std::string line = merges[i].get<std::string>();
      if (line.rfind("#version", 0) == 0) continue;  // merges.txt header, skipped as HF does
      if (!split_merge_line(line, a, b))
        json_fail(at, "must be \"left right\" with one space, got " + json_brief(merges[i]));
    } else if (merges[i].is_array() && merges[i].size() == 2) {
      a = json_string(merges[i][0], at.at(0));
      b = json_string(merges[i][1], at.at(1));
    } else {
      json_fail(at, "must be \"left right\" or [\"left\", \"right\"], got " + json_brief(merges[i]));
    }
    const auto ia = m.vocab_.find(a), ib = m.vocab_.find(b);
    if (ia == m.vocab_.end()) json_fail(at, "token " + json_brief(json(a)) + " is not in model.vocab");
    if (ib == m.vocab_.end()) json_fail(at, "token " + json_brief(json(b)) + " is not in model.vocab");
    const std::size_t prefix = m.continuing_subword_prefix_.size();
    const std::string joined = a + (b.compare(0, prefix, m.continuing_subword_prefix_) == 0 ? b.substr(prefix) : b);
    const auto inew = m.vocab_.find(joined);
    if (inew == m.vocab_.end()) json_fail(at, "merged token " + json_brief(json(joined)) + " is not in model.vocab");
    // A repeated pair takes its later rank, as HF's HashMap collect does.
    m.merges_[pair_key(ia->second, ib->second)] = Merge{rank++, inew->second};
  }
  return m;
}

std::optional<std::int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(std::int32_t id) const {
  const auto it = vocab_r_.find(id);
  return it == vocab_r_.end() ? nullptr : &it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<std::int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {  // Llama-3: a word that is itself a token is taken whole
    if (const auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  // One symbol per character (with prefix/suffix where configured); unknown characters become
  // unk (fused if fuse_unk), byte tokens <0xNN> (byte_fallback), or are dropped, as in HF.
  std::vector<std::int32_t> symbols;
  std::int32_t pending_unk = -1;  // an unk id not yet pushed (held back so fuse_unk can merge)
  auto unk_id = [&]() {
    const auto id = token_to_id(*unk_token_);
    if (!id)
      throw macattn::Error("Tokenizer: " + file_ + ": model.unk_token \"" + *unk_token_ + "\" is not in model.vocab");
    return *id;
  };
  for (std::size_t i = 0; i < word.size();) {
    const std::size_t start = i;
    utf8_next(word, i);
    std::string s(word.substr(start, i - start));
    if (start != 0) s = continuing_subword_prefix_ + s;
    if (i == word.size()) s += end_of_word_suffix_;
    if (const auto id = token_to_id(s)) {
      if (pending_unk >= 0) symbols.push_back(pending_unk);
      pending_unk = -1;
      symbols.push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      std::vector<std::int32_t> bytes;
      for (const char c : s) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", static_cast<unsigned char>(c));
        const auto id = token_to_id(name);
        if (!id) break;
        bytes.push_back(*id);
      }
      if (bytes.size() == s.size()) {
        symbols.insert(symbols.end(), bytes.begin(), bytes.end());
        continue;
      }
    }
    if (unk_token_) {
      if (pending_unk >= 0 && !fuse_unk_) symbols.push_back(pending_unk);
      if (pending_unk < 0 || !fuse_unk_) pending_unk = unk_id();
    }
  }
  if (pending_unk >= 0) symbols.push_back(pending_unk);
  merge_all(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

void BpeModel::merge_all(std::vector<std::int32_t>& symbols) const {
  // A doubly linked list over the symbols and a min-heap of candidate merges (rank, position);
  // entries made stale by an earlier merge are recognised and skipped when popped.
  const std::size_t n = symbols.size();
  if (n < 2) return;
  std::vector<std::ptrdiff_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (std::size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<std::ptrdiff_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<std::ptrdiff_t>(i + 1) : -1;
  }
  struct Candidate {
    std::int32_t rank;
    std::size_t pos;
    std::int32_t new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push = [&](std::size_t left, std::size_t right) {
    const auto it = merges_.find(pair_key(symbols[left], symbols[right]));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(i, i + 1);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    if (!alive[top.pos] || next[top.pos] < 0) continue;
    const auto right = static_cast<std::size_t>(next[top.pos]);
    const auto it = merges_.find(pair_key(symbols[top.pos], symbols[right]));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // stale entry
    symbols[top.pos] = top.new_id;
    alive[right] = false;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[static_cast<std::size_t>(next[right])] = static_cast<std::ptrdiff_t>(top.pos);
    if (prev[top.pos] >= 0) push(static_cast<std::size_t>(prev[top.pos]), top.pos);
    if (next[top.pos] >= 0) push(top.pos, static_cast<std::size_t>(next[top.pos]));
  }
  std::size_t kept = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (alive[i]) symbols[kept++] = symbols[i];
  }
  symbols.resize(kept);
}

}  // namespace macattn::engine::tok
