// engine/tokenizer/post_processor.hpp: tokenizer.json "post_processor" for one sequence: the
// ids it puts around the text's ids when special tokens are added (Llama-3's BOS).
// Supported: TemplateProcessing, ByteLevel (offsets only: no ids), RobertaProcessing and
// BertProcessing (cls ... sep), and Sequence of these.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/tokenizer/json_util.hpp"

namespace macattn::engine::tok {

class PostProcessor {
 public:
  static PostProcessor parse(const json& value, const JsonPlace& place);
  /// `ids` with the special tokens added, as HF's post_process(add_special_tokens=true).
  std::vector<std::int32_t> apply(const std::vector<std::int32_t>& ids) const;

 private:
  // One step: its output is `pieces` in order, the input ids standing where is_input is set.
  struct Step {
    std::vector<std::vector<std::int32_t>> pieces;
    std::vector<bool> is_input;
  };
  static void parse_into(const json& value, const JsonPlace& place, int depth, std::vector<Step>& steps);
  std::vector<Step> steps_;
};

}  // namespace macattn::engine::tok
