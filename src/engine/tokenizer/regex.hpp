// engine/tokenizer/regex.hpp: the Split patterns of tokenizer.json, run by PCRE2.
//
// HF `tokenizers` runs them with Oniguruma (Ruby syntax, Unicode classes). PCRE2 in UTF + UCP
// mode reads the patterns these models ship the same way; the two differences that matter are
// bridged here: `^`/`$` are line anchors in Ruby (PCRE2_MULTILINE), and Ruby's `\s` includes
// U+0085 (NEL) where PCRE2's does not (the pattern is rewritten to add it).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace macattn::engine::tok {

class Regex {
 public:
  /// Compiles `pattern` (a literal string when `literal`); `where` names it in errors.
  Regex(std::string_view pattern, bool literal, std::string where);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  /// Byte ranges of the successive matches in well-formed UTF-8 `text`, iterated as Oniguruma's
  /// find_iter does (an empty match right after the previous match is skipped). Throws
  /// macattn::Error when a match exceeds the backtracking limit (a pathological pattern).
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view text) const;

  /// Whether the pattern matches somewhere in `text`.
  bool matches(std::string_view text) const;

 private:
  struct Code;
  std::unique_ptr<Code> code_;
  std::string where_;
};

}  // namespace macattn::engine::tok
