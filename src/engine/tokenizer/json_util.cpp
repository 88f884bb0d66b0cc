// engine/tokenizer/json_util.cpp: see json_util.hpp.
#include "engine/tokenizer/json_util.hpp"

#include <limits>

#include "macattn/error.hpp"

namespace macattn::engine::tok {

void json_fail(const JsonPlace& place, const std::string& problem) {
  throw macattn::Error("Tokenizer: " + place.file + ": " + (place.field.empty() ? "(top level)" : place.field) + ": " +
                       problem);
}

std::string json_brief(const json& value) {
  // Containers by size only: dumping one would recurse as deep as the (untrusted) nesting.
  if (value.is_array()) return "an array of " + std::to_string(value.size()) + " items";
  if (value.is_object()) return "an object with " + std::to_string(value.size()) + " keys";
  std::string s = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

const json* json_find(const json& obj, const char* key, const JsonPlace& place) {
  if (!obj.is_object()) json_fail(place, "must be an object, got " + json_brief(obj));
  const auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

const json& json_require(const json& obj, const char* key, const JsonPlace& place) {
  const json* v = json_find(obj, key, place);
  if (v == nullptr) json_fail(place.at(key), "missing");
  return *v;
}

std::string json_string(const json& value, const JsonPlace& place) {
  if (!value.is_string()) json_fail(place, "must be a string, got " + json_brief(value));
  return value.get<std::string>();
}

bool json_bool_or(const json& obj, const char* key, bool fallback, const JsonPlace& place) {
  const json* v = json_find(obj, key, place);
  if (v == nullptr || v->is_null()) return fallback;
  if (!v->is_boolean()) json_fail(place.at(key), "must be true or false, got " + json_brief(*v));
  return v->get<bool>();
}

std::int32_t json_id(const json& value, const JsonPlace& place) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int32_t>::max() - 1;
  if (value.is_number_unsigned() && value.get<std::uint64_t>() <= static_cast<std::uint64_t>(kMax)) {
    return static_cast<std::int32_t>(value.get<std::uint64_t>());
  }
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0 && value.get<std::int64_t>() <= kMax) {
    return static_cast<std::int32_t>(value.get<std::int64_t>());
  }
  json_fail(place, "must be an integer id in [0, " + std::to_string(kMax) + "], got " + json_brief(value));
}

std::optional<std::string> json_optional_string(const json& obj, const char* key, const JsonPlace& place) {
  const json* v = json_find(obj, key, place);
  if (v == nullptr || v->is_null()) return std::nullopt;
  return json_string(*v, place.at(key));
}

}  // namespace macattn::engine::tok
