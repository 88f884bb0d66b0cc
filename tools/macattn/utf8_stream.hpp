// tools/macattn/utf8_stream.hpp: printing generated text token by token.
//
// A byte-level BPE token may hold part of a UTF-8 character (an emoji is often 2-4 tokens),
// so bytes are held back until the character they start is complete. Invalid bytes (a
// sequence that can never complete) are written as U+FFFD, as Hugging Face's decode does.
#pragma once

#include <string>
#include <string_view>

namespace macattn_tool {

class Utf8Stream {
 public:
  /// Appends a token's bytes; returns the text now complete (possibly empty).
  std::string push(std::string_view bytes);
  /// The held-back bytes at the end of generation (an unfinished character becomes U+FFFD).
  std::string finish();

 private:
  std::string pending_;
};

}  // namespace macattn_tool
