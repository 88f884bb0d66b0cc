// engine/tokenizer/byte_level.hpp: GPT-2's byte <-> printable character map, which byte-level
// BPE vocabularies are written in (byte 0x20 is 'Ġ', 0x0A is 'Ċ', printable ASCII maps to itself).
#pragma once

#include <string>
#include <string_view>

namespace macattn::engine::tok {

/// Each byte of `bytes` as its byte-level character (UTF-8).
std::string byte_level_encode(std::string_view bytes);

/// Appends the bytes that byte-level token `token` stands for and returns true; returns false
/// (appending nothing) if a character of it is outside the map, as HF's ByteLevel decoder then
/// keeps the token's own UTF-8 bytes.
bool byte_level_decode(std::string_view token, std::string& out);

}  // namespace macattn::engine::tok
