// tests/engine/cli/test_utf8_stream.cpp: the streaming UTF-8 printer of `macattn generate`.
//
// Independent reference: whatever way the bytes are split into tokens, the streamed text must
// equal the text of all bytes at once, and no output may end inside a character.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "utf8_stream.hpp"

namespace {

using macattn_tool::Utf8Stream;

const std::string kText = "caf\xC3\xA9 \xE2\x82\xAC 10 \xF0\x9F\x98\x80!";  // café € 10 😀!
const std::string kReplacement = "\xEF\xBF\xBD";

// Every piece of output ends on a character boundary: its last lead byte's sequence is whole.
bool ends_on_boundary(const std::string& s) {
  if (s.empty()) return true;
  std::size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  const auto lead = static_cast<unsigned char>(s[i]);
  const std::size_t len = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  return s.size() - i == len;
}

TEST(Utf8Stream, AnySplitGivesTheWholeText) {
  // Every split of the text into pieces of 1..4 bytes (a byte-level token holds up to a few).
  for (std::size_t piece = 1; piece <= 4; ++piece) {
    for (std::size_t offset = 0; offset < piece; ++offset) {
      Utf8Stream stream;
      std::string out;
      std::size_t at = 0;
      std::size_t next = offset == 0 ? piece : offset;
      while (at < kText.size()) {
        const std::string chunk = stream.push(std::string_view(kText).substr(at, next));
        EXPECT_TRUE(ends_on_boundary(chunk)) << "piece " << piece << " offset " << offset;
        out += chunk;
        at += next;
        next = piece;
      }
      out += stream.finish();
      EXPECT_EQ(out, kText) << "piece " << piece << " offset " << offset;
    }
  }
}

TEST(Utf8Stream, HoldsBackAnUnfinishedCharacter) {
  Utf8Stream stream;
  EXPECT_EQ(stream.push("a\xF0\x9F"), "a");
  EXPECT_EQ(stream.push("\x98"), "");
  EXPECT_EQ(stream.push("\x80"), "\xF0\x9F\x98\x80");
}

TEST(Utf8Stream, InvalidBytesBecomeReplacementCharacters) {
  Utf8Stream stream;
  EXPECT_EQ(stream.push("\x80x"), kReplacement + "x");                                 // stray continuation byte
  EXPECT_EQ(stream.push("\xC3y"), kReplacement + "y");                                 // lead byte cut short
  EXPECT_EQ(stream.push("\xC0\xAF"), kReplacement + kReplacement);                     // overlong form: never valid
  EXPECT_EQ(stream.push("\xED\xA0\x80"), kReplacement + kReplacement + kReplacement);  // surrogate
  EXPECT_EQ(stream.push("\xE2\x82"), "");
  EXPECT_EQ(stream.finish(), kReplacement);  // generation ended inside a character
  EXPECT_EQ(stream.finish(), "");
}

}  // namespace
