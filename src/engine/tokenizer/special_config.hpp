// engine/tokenizer/special_config.hpp: what tokenizer_config.json says about special tokens
// (bos_token, eos_token, add_bos_token, add_eos_token); everything else in it is ignored.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace macattn::engine::tok {

struct SpecialConfig {
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;

  /// Parses `text` (empty = no config); `file` names it in errors.
  static SpecialConfig parse(std::string_view text, const std::string& file);
};

}  // namespace macattn::engine::tok
