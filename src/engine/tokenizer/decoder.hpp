// engine/tokenizer/decoder.hpp: tokenizer.json "decoder": token strings back to bytes.
// Supported: ByteLevel (alone or as the one entry of a Sequence) and none (tokens joined
// with spaces, as HF does without a decoder).
#pragma once

#include <string>
#include <vector>

#include "engine/tokenizer/json_util.hpp"

namespace macattn::engine::tok {

class Decoder {
 public:
  static Decoder parse(const json& value, const JsonPlace& place);
  /// The bytes `tokens` stand for, before any UTF-8 repair (may end inside a character).
  std::string bytes(const std::vector<const std::string*>& tokens) const;

 private:
  bool byte_level_ = false;
};

}  // namespace macattn::engine::tok
