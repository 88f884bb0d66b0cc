// engine/tokenizer/byte_level.cpp: see byte_level.hpp.
#include "engine/tokenizer/byte_level.hpp"

#include <array>

#include "engine/tokenizer/utf8.hpp"

namespace macattn::engine::tok {

namespace {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves; the other 68 bytes
// take U+0100.. in byte order, so every byte becomes one visible character.
struct ByteMap {
  std::array<char32_t, 256> to_char{};
  std::array<int, 0x144> to_byte{};  // code points used are < U+0144; -1 = not a byte
  ByteMap() {
    to_byte.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_char[b] = printable ? static_cast<char32_t>(b) : next++;
      to_byte[to_char[b]] = b;
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

std::string byte_level_encode(std::string_view bytes) {
  const ByteMap& map = byte_map();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) utf8_append(out, map.to_char[static_cast<unsigned char>(c)]);
  return out;
}

bool byte_level_decode(std::string_view token, std::string& out) {
  const ByteMap& map = byte_map();
  std::string bytes;
  bytes.reserve(token.size());
  for (std::size_t i = 0; i < token.size();) {
    const char32_t cp = utf8_next(token, i);
    if (cp >= map.to_byte.size() || map.to_byte[cp] < 0) return false;
    bytes.push_back(static_cast<char>(map.to_byte[cp]));
  }
  out += bytes;
  return true;
}

}  // namespace macattn::engine::tok
