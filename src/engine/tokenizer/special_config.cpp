// engine/tokenizer/special_config.cpp: see special_config.hpp.
#include "engine/tokenizer/special_config.hpp"

#include "engine/tokenizer/json_util.hpp"

namespace macattn::engine::tok {

namespace {

// transformers writes a token as "text" or as an AddedToken object {"content": "text", ...}.
std::optional<std::string> token_field(const json& config, const char* key, const JsonPlace& place) {
  const json* v = json_find(config, key, place);
  if (v == nullptr || v->is_null()) return std::nullopt;
  if (v->is_object()) return json_string(json_require(*v, "content", place.at(key)), place.at(key).at("content"));
  return json_string(*v, place.at(key));
}

std::optional<bool> flag_field(const json& config, const char* key, const JsonPlace& place) {
  const json* v = json_find(config, key, place);
  if (v == nullptr || v->is_null()) return std::nullopt;
  if (!v->is_boolean()) json_fail(place.at(key), "must be true or false, got " + json_brief(*v));
  return v->get<bool>();
}

}  // namespace

SpecialConfig SpecialConfig::parse(std::string_view text, const std::string& file) {
  SpecialConfig c;
  if (text.empty()) return c;
  const JsonPlace place{file, ""};
  json config;
  try {
    config = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    json_fail(place, std::string("not valid JSON: ") + e.what());
  }
  if (!config.is_object()) json_fail(place, "must be a JSON object, got " + json_brief(config));
  c.bos_token = token_field(config, "bos_token", place);
  c.eos_token = token_field(config, "eos_token", place);
  c.add_bos_token = flag_field(config, "add_bos_token", place);
  c.add_eos_token = flag_field(config, "add_eos_token", place);
  return c;
}

}  // namespace macattn::engine::tok
