// engine/tokenizer/json_util.hpp: typed access to tokenizer.json fields. Every failure throws
// macattn::Error naming the file, the field (a path such as "model.merges[12]") and the problem.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace macattn::engine::tok {

using json = nlohmann::json;

/// Where a value came from: the file (a path, or "tokenizer.json" for text) and the field.
struct JsonPlace {
  const std::string& file;
  std::string field;
  JsonPlace at(const std::string& key) const { return {file, field.empty() ? key : field + "." + key}; }
  JsonPlace at(std::size_t index) const { return {file, field + "[" + std::to_string(index) + "]"}; }
};

[[noreturn]] void json_fail(const JsonPlace& place, const std::string& problem);

/// A short, printable rendering of a bad value for error messages.
std::string json_brief(const json& value);

/// `obj[key]`, or nullptr when absent. `obj` must be an object (else throws).
const json* json_find(const json& obj, const char* key, const JsonPlace& place);
const json& json_require(const json& obj, const char* key, const JsonPlace& place);

std::string json_string(const json& value, const JsonPlace& place);
bool json_bool_or(const json& obj, const char* key, bool fallback, const JsonPlace& place);
/// An integer in [0, 2^31 - 2], so an id + 1 still fits in int32.
std::int32_t json_id(const json& value, const JsonPlace& place);
/// `obj[key]` as a string; absent or null gives nullopt.
std::optional<std::string> json_optional_string(const json& obj, const char* key, const JsonPlace& place);

/// Tokenizer parts nest (Sequence inside Sequence); deeper than this is refused, not recursed.
inline constexpr int kMaxNesting = 16;

}  // namespace macattn::engine::tok
