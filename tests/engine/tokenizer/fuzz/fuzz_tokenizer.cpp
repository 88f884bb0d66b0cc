// libFuzzer entry point for tokenizer.json parsing: the input is a tokenizer.json; whatever
// loads then encodes and decodes a fixed text. Any exception other than macattn::Error, any
// crash, leak or sanitizer report is a finding. Built as a libFuzzer target with
// MACATTN_BUILD_FUZZERS=ON (clang), and otherwise with replay_main.cpp as a corpus test.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/tokenizer/tokenizer.hpp"
#include "macattn/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto tok = macattn::engine::Tokenizer::from_json(text);
    // Words, numbers, whitespace runs, CJK, an emoji, likely special tokens and a stray byte.
    const std::string_view sample = "Hello, world! It's 2024:\n\t  x=12345; 日本語 😀 <|endoftext|><s>\xff";
    const auto ids = tok.encode(sample, true);
    (void)tok.decode(ids, false);
    (void)tok.decode(ids, true);
    for (const auto id : ids) (void)tok.token_bytes(id);
    (void)tok.bos_id();
    (void)tok.eos_ids();
  } catch (const macattn::Error&) {
    // Rejecting a malformed file (or a regex that exceeds its budget) is the expected outcome.
  }
  return 0;
}
