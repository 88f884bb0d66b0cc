// engine/tokenizer/pre_tokenizer.hpp: tokenizer.json "pre_tokenizer": how a text piece is cut
// into words before BPE. Supported: ByteLevel (GPT-2: its regex, add_prefix_space, bytes to
// byte-level characters), Split (a regex or string, five delimiter behaviours, invert) and
// Sequence of these (Llama-3 / Qwen2: Split(regex, Isolated) then ByteLevel(use_regex=false)).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/json_util.hpp"
#include "engine/tokenizer/regex.hpp"

namespace macattn::engine::tok {

class PreTokenizer {
 public:
  /// `value` is the "pre_tokenizer" field (null = the whole piece is one word).
  static PreTokenizer parse(const json& value, const JsonPlace& place);
  /// The words of `piece` (well-formed UTF-8, not empty), in order, none empty.
  std::vector<std::string> split(std::string piece) const;

 private:
  enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };
  struct Step {
    bool byte_level = false;             // ByteLevel, else Split
    bool add_prefix_space = false;       // ByteLevel
    std::shared_ptr<const Regex> regex;  // Split's pattern, or ByteLevel's GPT-2 regex (null: use_regex=false)
    Behavior behavior = Behavior::isolated;
    bool invert = false;
  };
  static void parse_into(const json& value, const JsonPlace& place, int depth, std::vector<Step>& steps);
  static void apply(const Step& step, const std::string& piece, std::vector<std::string>& out);
  std::vector<Step> steps_;
};

}  // namespace macattn::engine::tok
