// tokenizer_tool: runs macattn's Tokenizer over a list of texts and prints what it made, for
// the comparison with Hugging Face `tokenizers` in test_tokenizer_vs_hf.py.
//
//   tokenizer_tool TOKENIZER_JSON TEXTS_JSON [TOKENIZER_CONFIG_JSON]
//
// TEXTS_JSON is {"texts": ["<hex bytes>", ...]}: hex, because the texts include invalid UTF-8
// that JSON strings cannot carry. Prints one JSON object: {"results": [{"ids", "ids_plain",
// "text", "text_skip"}, ...], "bos", "eos", "vocab_size"}, where ids_plain are the ids without
// special tokens added and text / text_skip are the decoded ids (hex) without / with
// skip_special_tokens. An error prints its message to stderr and exits 1.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/tokenizer/tokenizer.hpp"

namespace {

std::string from_hex(const std::string& hex) {
  if (hex.size() % 2 != 0) throw std::runtime_error("odd-length hex text");
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string to_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (const char c : bytes) {
    out.push_back(digits[static_cast<unsigned char>(c) >> 4]);
    out.push_back(digits[static_cast<unsigned char>(c) & 15]);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::cerr << "usage: tokenizer_tool TOKENIZER_JSON TEXTS_JSON [TOKENIZER_CONFIG_JSON]\n";
    return 2;
  }
  try {
    const auto tokenizer = macattn::engine::Tokenizer::load(argv[1], argc == 4 ? argv[3] : "");
    std::ifstream in(argv[2]);
    if (!in) throw std::runtime_error(std::string("cannot read ") + argv[2]);
    const nlohmann::json texts = nlohmann::json::parse(in).at("texts");
    nlohmann::json results = nlohmann::json::array();
    for (const auto& hex : texts) {
      const std::string text = from_hex(hex.get<std::string>());
      const auto ids = tokenizer.encode(text, true);
      results.push_back({{"ids", ids},
                         {"ids_plain", tokenizer.encode(text, false)},
                         {"text", to_hex(tokenizer.decode(ids, false))},
                         {"text_skip", to_hex(tokenizer.decode(ids, true))}});
    }
    nlohmann::json out = {{"results", results}, {"eos", tokenizer.eos_ids()}, {"vocab_size", tokenizer.vocab_size()}};
    out["bos"] = tokenizer.bos_id() ? nlohmann::json(*tokenizer.bos_id()) : nlohmann::json(nullptr);
    std::cout << out.dump() << "\n";
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
