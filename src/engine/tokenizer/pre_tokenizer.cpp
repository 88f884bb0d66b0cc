// engine/tokenizer/pre_tokenizer.cpp: see pre_tokenizer.hpp. The split rules follow HF
// `tokenizers` (NormalizedString::split): matches and the gaps between them become pieces,
// which the behaviour then keeps, drops or glues to a neighbour; empty pieces are dropped.
#include "engine/tokenizer/pre_tokenizer.hpp"

#include <algorithm>
#include <tuple>

#include "engine/tokenizer/byte_level.hpp"

namespace macattn::engine::tok {

namespace {

// GPT-2's pre-tokenizer regex, which HF's ByteLevel uses when use_regex is true.
constexpr const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::shared_ptr<const Regex> gpt2_regex() {
  static const auto regex = std::make_shared<const Regex>(kGpt2Pattern, false, "ByteLevel pre-tokenizer");
  return regex;
}

}  // namespace

PreTokenizer PreTokenizer::parse(const json& value, const JsonPlace& place) {
  PreTokenizer p;
  parse_into(value, place, 0, p.steps_);
  return p;
}

void PreTokenizer::parse_into(const json& value, const JsonPlace& place, int depth, std::vector<Step>& steps) {
  if (value.is_null()) return;
  if (depth > kMaxNesting) json_fail(place, "nested deeper than " + std::to_string(kMaxNesting) + " levels");
  const std::string type = json_string(json_require(value, "type", place), place.at("type"));
  Step step;
  if (type == "ByteLevel") {
    // Defaults are HF's ByteLevel::default() (all true) for fields a file leaves out.
    step.byte_level = true;
    step.add_prefix_space = json_bool_or(value, "add_prefix_space", true, place);
    if (json_bool_or(value, "use_regex", true, place)) step.regex = gpt2_regex();
    steps.push_back(step);
  } else if (type == "Split") {
    const JsonPlace pattern_place = place.at("pattern");
    const json& pattern = json_require(value, "pattern", place);
    const json* regex = json_find(pattern, "Regex", pattern_place);
    const json* literal = json_find(pattern, "String", pattern_place);
    if ((regex == nullptr) == (literal == nullptr)) {
      json_fail(pattern_place, "must be {\"Regex\": ...} or {\"String\": ...}, got " + json_brief(pattern));
    }
    const JsonPlace text_place = pattern_place.at(regex != nullptr ? "Regex" : "String");
    const std::string text = json_string(regex != nullptr ? *regex : *literal, text_place);
    step.regex = std::make_shared<const Regex>(text, literal != nullptr, place.file + ": " + text_place.field);
    const std::string behavior = json_string(json_require(value, "behavior", place), place.at("behavior"));
    if (behavior == "Removed") {
      step.behavior = Behavior::removed;
    } else if (behavior == "Isolated") {
      step.behavior = Behavior::isolated;
    } else if (behavior == "MergedWithPrevious") {
      step.behavior = Behavior::merged_with_previous;
    } else if (behavior == "MergedWithNext") {
      step.behavior = Behavior::merged_with_next;
    } else if (behavior == "Contiguous") {
      step.behavior = Behavior::contiguous;
    } else {
      json_fail(place.at("behavior"), "unknown behavior \"" + behavior +
                                          "\" (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
    }
    step.invert = json_bool_or(value, "invert", false, place);
    steps.push_back(step);
  } else if (type == "Sequence") {
    const JsonPlace list_place = place.at("pretokenizers");
    const json& list = json_require(value, "pretokenizers", place);
    if (!list.is_array()) json_fail(list_place, "must be an array, got " + json_brief(list));
    for (std::size_t i = 0; i < list.size(); ++i) parse_into(list[i], list_place.at(i), depth + 1, steps);
  } else {
    json_fail(place.at("type"), "unsupported pre-tokenizer \"" + type + "\" (supported: ByteLevel, Split, Sequence)");
  }
}

void PreTokenizer::apply(const Step& step, const std::string& piece, std::vector<std::string>& out) {
  std::string text = piece;
  if (step.byte_level && step.add_prefix_space && text.front() != ' ') text.insert(text.begin(), ' ');
  if (!step.regex) {
    out.push_back(step.byte_level ? byte_level_encode(text) : text);
    return;
  }
  // (start, end, is_match) covering the text: matches and the gaps between them.
  std::vector<std::tuple<std::size_t, std::size_t, bool>> parts;
  std::size_t prev = 0;
  for (const auto& [start, end] : step.regex->find_all(text)) {
    if (prev != start) parts.emplace_back(prev, start, step.invert);
    parts.emplace_back(start, end, !step.invert);
    prev = end;
  }
  if (prev != text.size()) parts.emplace_back(prev, text.size(), step.invert);

  // (start, end, keep) after the behaviour; ByteLevel's own split is Isolated.
  std::vector<std::tuple<std::size_t, std::size_t, bool>> pieces;
  const Behavior behavior = step.byte_level ? Behavior::isolated : step.behavior;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::isolated:
      for (const auto& [s, e, m] : parts) pieces.emplace_back(s, e, true);
      break;
    case Behavior::removed:
      for (const auto& [s, e, m] : parts) pieces.emplace_back(s, e, !m);
      break;
    case Behavior::contiguous:
      for (const auto& [s, e, m] : parts) {
        if (m == previous_match && !pieces.empty()) {
          std::get<1>(pieces.back()) = e;
        } else {
          pieces.emplace_back(s, e, true);
        }
        previous_match = m;
      }
      break;
    case Behavior::merged_with_previous:
      for (const auto& [s, e, m] : parts) {
        if (m && !previous_match && !pieces.empty()) {
          std::get<1>(pieces.back()) = e;
        } else {
          pieces.emplace_back(s, e, true);
        }
        previous_match = m;
      }
      break;
    case Behavior::merged_with_next:
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        const auto& [s, e, m] = *it;
        if (m && !previous_match && !pieces.empty()) {
          std::get<0>(pieces.back()) = s;
        } else {
          pieces.emplace_back(s, e, true);
        }
        previous_match = m;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
  }
  for (const auto& [s, e, keep] : pieces) {
    if (!keep || s == e) continue;
    const std::string_view word = std::string_view(text).substr(s, e - s);
    out.push_back(step.byte_level ? byte_level_encode(word) : std::string(word));
  }
}

std::vector<std::string> PreTokenizer::split(std::string piece) const {
  std::vector<std::string> words;
  words.push_back(std::move(piece));
  for (const Step& step : steps_) {
    std::vector<std::string> next;
    next.reserve(words.size());
    for (const std::string& w : words) apply(step, w, next);
    words = std::move(next);
  }
  return words;
}

}  // namespace macattn::engine::tok
