// tools/macattn/utf8_stream.cpp: see utf8_stream.hpp.
#include "utf8_stream.hpp"

namespace macattn_tool {

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the UTF-8 sequence that lead byte c starts; 0 if c cannot start one.
int sequence_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether the continuation byte at index i of a sequence led by `lead` is allowed (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF).
bool valid_continuation(unsigned char lead, int i, unsigned char c) {
  if (i == 1) {
    if (lead == 0xE0) return c >= 0xA0 && c <= 0xBF;
    if (lead == 0xED) return c >= 0x80 && c <= 0x9F;
    if (lead == 0xF0) return c >= 0x90 && c <= 0xBF;
    if (lead == 0xF4) return c >= 0x80 && c <= 0x8F;
  }
  return c >= 0x80 && c <= 0xBF;
}

}  // namespace

std::string Utf8Stream::push(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  std::size_t i = 0;
  while (i < pending_.size()) {
    const auto lead = static_cast<unsigned char>(pending_[i]);
    const int len = sequence_length(lead);
    if (len == 0) {  // a stray continuation or an impossible lead byte
      out += kReplacement;
      ++i;
      continue;
    }
    int have = 1;
    while (have < len && i + have < pending_.size() &&
           valid_continuation(lead, have, static_cast<unsigned char>(pending_[i + have])))
      ++have;
    if (have == len) {
      out.append(pending_, i, static_cast<std::size_t>(len));
      i += static_cast<std::size_t>(len);
    } else if (i + have == pending_.size()) {
      break;  // a valid start whose remaining bytes have not arrived yet: hold it back
    } else {
      out += kReplacement;  // broken by a byte that cannot continue it
      i += static_cast<std::size_t>(have);
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Stream::finish() {
  std::string out = pending_.empty() ? "" : std::string(kReplacement);
  pending_.clear();
  return out;
}

}  // namespace macattn_tool
