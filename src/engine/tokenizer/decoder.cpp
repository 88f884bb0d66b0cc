// engine/tokenizer/decoder.cpp: see decoder.hpp.
#include "engine/tokenizer/decoder.hpp"

#include "engine/tokenizer/byte_level.hpp"

namespace macattn::engine::tok {

Decoder Decoder::parse(const json& value, const JsonPlace& place) {
  Decoder d;
  if (value.is_null()) return d;
  const std::string type = json_string(json_require(value, "type", place), place.at("type"));
  if (type == "ByteLevel") {
    d.byte_level_ = true;
  } else if (type == "Sequence") {
    // A Sequence of one ByteLevel is the same decoder; longer chains are not used by byte-level models.
    const JsonPlace list_place = place.at("decoders");
    const json& list = json_require(value, "decoders", place);
    if (!list.is_array() || list.size() != 1) {
      json_fail(list_place, "only a Sequence of one ByteLevel decoder is supported, got " + json_brief(list));
    }
    const JsonPlace at = list_place.at(0);
    const std::string inner = json_string(json_require(list[0], "type", at), at.at("type"));
    if (inner != "ByteLevel") json_fail(at.at("type"), "unsupported decoder \"" + inner + "\" (only ByteLevel)");
    d.byte_level_ = true;
  } else {
    json_fail(place.at("type"), "unsupported decoder \"" + type + "\" (supported: ByteLevel, Sequence)");
  }
  return d;
}

std::string Decoder::bytes(const std::vector<const std::string*>& tokens) const {
  std::string out;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (!byte_level_) {
      if (i > 0) out += ' ';
      out += *tokens[i];
    } else if (!byte_level_decode(*tokens[i], out)) {
      out += *tokens[i];  // a character outside the byte map: HF keeps the token's own bytes
    }
  }
  return out;
}

}  // namespace macattn::engine::tok
