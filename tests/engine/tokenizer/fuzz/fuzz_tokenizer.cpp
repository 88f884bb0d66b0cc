// libFuzzer entry point for tokenizer.json parsing: the input is a tokenizer.json, optionally
// followed by a NUL byte and a text (JSON cannot contain a raw NUL, so the split is
// unambiguous); whatever loads then encodes and decodes a fixed text and that text. Any exception other than macattn::Error, any
// crash, leak or sanitizer report is a finding. Built as a libFuzzer target with
// MACATTN_BUILD_FUZZERS=ON (clang), and otherwise with replay_main.cpp as a corpus test.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/tokenizer/tokenizer.hpp"
#include "macattn/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string_view json = input.substr(0, nul);
  try {
    const auto tok = macattn::engine::Tokenizer::from_json(json);
    // Words, numbers, whitespace runs, CJK, an emoji, likely special tokens and a stray byte.
    const std::string_view sample = "Hello, world! It's 2024:\n\t  x=12345; 日本語 😀 <|endoftext|><s>\xff";
    for (const std::string_view text : {sample, nul == std::string_view::npos ? "" : input.substr(nul + 1)}) {
      const auto ids = tok.encode(text, true);
      (void)tok.decode(ids, false);
      (void)tok.decode(ids, true);
      for (const auto id : ids) (void)tok.token_bytes(id);
    }
    (void)tok.bos_id();
    (void)tok.eos_ids();
  } catch (const macattn::Error&) {
    // Rejecting a malformed file (or a regex that exceeds its budget) is the expected outcome.
  }
  return 0;
}
