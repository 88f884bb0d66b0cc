// engine/tokenizer/post_processor.cpp: see post_processor.hpp.
#include "engine/tokenizer/post_processor.hpp"

#include <string>

namespace macattn::engine::tok {

namespace {

// Roberta/Bert write a special token as ["text", id].
std::int32_t token_pair_id(const json& obj, const char* key, const JsonPlace& place) {
  const JsonPlace at = place.at(key);
  const json& pair = json_require(obj, key, place);
  if (!pair.is_array() || pair.size() != 2) json_fail(at, "must be [\"token\", id], got " + json_brief(pair));
  json_string(pair[0], at.at(0));
  return json_id(pair[1], at.at(1));
}

}  // namespace

PostProcessor PostProcessor::parse(const json& value, const JsonPlace& place) {
  PostProcessor p;
  parse_into(value, place, 0, p.steps_);
  return p;
}

void PostProcessor::parse_into(const json& value, const JsonPlace& place, int depth, std::vector<Step>& steps) {
  if (value.is_null()) return;
  if (depth > kMaxNesting) json_fail(place, "nested deeper than " + std::to_string(kMaxNesting) + " levels");
  const std::string type = json_string(json_require(value, "type", place), place.at("type"));
  if (type == "ByteLevel") {
    return;  // trims offsets, adds no ids
  }
  if (type == "Sequence") {
    const JsonPlace list_place = place.at("processors");
    const json& list = json_require(value, "processors", place);
    if (!list.is_array()) json_fail(list_place, "must be an array, got " + json_brief(list));
    for (std::size_t i = 0; i < list.size(); ++i) parse_into(list[i], list_place.at(i), depth + 1, steps);
    return;
  }
  Step step;
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    step.pieces = {{token_pair_id(value, "cls", place)}, {}, {token_pair_id(value, "sep", place)}};
    step.is_input = {false, true, false};
    steps.push_back(step);
    return;
  }
  if (type != "TemplateProcessing") {
    json_fail(place.at("type"), "unsupported post-processor \"" + type +
                                    "\" (supported: TemplateProcessing, ByteLevel, RobertaProcessing, "
                                    "BertProcessing, Sequence)");
  }
  const JsonPlace specials_place = place.at("special_tokens");
  const json* specials = json_find(value, "special_tokens", place);
  if (specials != nullptr && !specials->is_null() && !specials->is_object()) {
    json_fail(specials_place, "must be an object, got " + json_brief(*specials));
  }
  const JsonPlace single_place = place.at("single");
  const json& single = json_require(value, "single", place);
  if (!single.is_array()) json_fail(single_place, "must be an array of pieces, got " + json_brief(single));
  for (std::size_t i = 0; i < single.size(); ++i) {
    const JsonPlace at = single_place.at(i);
    const json& piece = single[i];
    if (const json* seq = json_find(piece, "Sequence", at)) {
      const std::string id = json_string(json_require(*seq, "id", at.at("Sequence")), at.at("Sequence").at("id"));
      if (id != "A")
        json_fail(at.at("Sequence").at("id"), "a single-sequence template can only use A, got \"" + id + "\"");
      step.pieces.emplace_back();
      step.is_input.push_back(true);
    } else if (const json* special = json_find(piece, "SpecialToken", at)) {
      const JsonPlace sp = at.at("SpecialToken");
      const std::string name = json_string(json_require(*special, "id", sp), sp.at("id"));
      const json* entry =
          specials == nullptr || specials->is_null() ? nullptr : json_find(*specials, name.c_str(), specials_place);
      if (entry == nullptr) json_fail(sp.at("id"), "\"" + name + "\" is not in " + specials_place.field);
      const JsonPlace ep = specials_place.at(name);
      const json& ids = json_require(*entry, "ids", ep);
      if (!ids.is_array()) json_fail(ep.at("ids"), "must be an array of ids, got " + json_brief(ids));
      const json* tokens = json_find(*entry, "tokens", ep);
      if (tokens != nullptr && (!tokens->is_array() || tokens->size() != ids.size())) {
        json_fail(ep.at("tokens"), "must be an array as long as ids, got " + json_brief(*tokens));
      }
      std::vector<std::int32_t> piece_ids;
      for (std::size_t k = 0; k < ids.size(); ++k) piece_ids.push_back(json_id(ids[k], ep.at("ids").at(k)));
      step.pieces.push_back(std::move(piece_ids));
      step.is_input.push_back(false);
    } else {
      json_fail(at, "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}, got " + json_brief(piece));
    }
  }
  steps.push_back(std::move(step));
}

std::vector<std::int32_t> PostProcessor::apply(const std::vector<std::int32_t>& ids) const {
  std::vector<std::int32_t> current = ids;
  for (const Step& step : steps_) {
    std::vector<std::int32_t> next;
    for (std::size_t i = 0; i < step.pieces.size(); ++i) {
      const auto& part = step.is_input[i] ? current : step.pieces[i];
      next.insert(next.end(), part.begin(), part.end());
    }
    current = std::move(next);
  }
  return current;
}

}  // namespace macattn::engine::tok
