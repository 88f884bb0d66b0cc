// engine/tokenizer/normalizer.hpp: tokenizer.json "normalizer": Unicode normalization forms
// (Qwen2 uses NFC), alone or in a Sequence, applied with utf8proc.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer/json_util.hpp"

namespace macattn::engine::tok {

class Normalizer {
 public:
  /// `value` is the "normalizer" field (null = none).
  static Normalizer parse(const json& value, const JsonPlace& place);
  /// `text` (well-formed UTF-8) normalized; unchanged when there is no normalizer.
  std::string apply(std::string_view text) const;
  bool empty() const { return forms_.empty(); }

 private:
  enum class Form { nfc, nfd, nfkc, nfkd };
  static void parse_into(const json& value, const JsonPlace& place, int depth, std::vector<Form>& forms);
  std::vector<Form> forms_;
};

}  // namespace macattn::engine::tok
