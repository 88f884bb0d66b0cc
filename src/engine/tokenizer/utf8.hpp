// engine/tokenizer/utf8.hpp: UTF-8 helpers the tokenizer needs (lossy decoding of untrusted
// bytes, walking code points, the White_Space property).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace macattn::engine::tok {

/// `bytes` with every ill-formed sequence replaced by U+FFFD, one per maximal subpart (the
/// Unicode recommendation that Rust's from_utf8_lossy and Python's errors="replace" follow,
/// so the text HF tokenizes and the text we tokenize are the same).
std::string utf8_lossy(std::string_view bytes);

/// The code point that starts at `i` in well-formed UTF-8 `s`; advances `i` past it.
char32_t utf8_next(std::string_view s, std::size_t& i);

/// Bytes of the UTF-8 character that starts with lead byte `lead` (1 for a stray byte).
std::size_t utf8_char_len(unsigned char lead);

void utf8_append(std::string& out, char32_t cp);

/// Unicode White_Space (what Rust's char::is_whitespace and regex `\s` test).
bool is_white_space(char32_t cp);

}  // namespace macattn::engine::tok
