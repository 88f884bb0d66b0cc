// engine/tokenizer/regex.cpp: see regex.hpp.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/tokenizer/regex.hpp"

#include <pcre2.h>

#include "engine/tokenizer/utf8.hpp"
#include "macattn/error.hpp"

namespace macattn::engine::tok {

namespace {

// Backtracking budget per match attempt: far above what the shipped patterns need on any text
// (they are linear), low enough that a catastrophic pattern fails in well under a second.
constexpr uint32_t kMatchLimit = 10'000'000;

// Ruby's `\s` is White_Space, which includes U+0085; PCRE2's (Z categories + HT..CR) does not.
// Rewrites `\s` / `\S` outside classes and `\s` inside them; everything else is copied.
std::string add_nel_to_space_class(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 16);
  bool in_class = false;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[++i];
      if (e == 'Q') {  // \Q...\E is literal text: copy it untouched
        const std::size_t end = p.find("\\E", i + 1);
        const std::size_t stop = end == std::string_view::npos ? p.size() : end + 2;
        out.append(p.substr(i - 1, stop - (i - 1)));
        i = stop - 1;
      } else if (e == 's') {
        out += in_class ? "\\s\\x{85}" : "[\\s\\x{85}]";
      } else if (e == 'S' && !in_class) {
        out += "[^\\s\\x{85}]";
      } else {
        out += c;
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // [:alpha:] inside a class
      const std::size_t end = p.find(":]", i + 2);
      if (end != std::string_view::npos) {
        out.append(p.substr(i, end + 2 - i));
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

struct JitStack {
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
  ~JitStack() { pcre2_jit_stack_free(stack); }
};

}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};

Regex::Regex(std::string_view pattern, bool literal, std::string where)
    : code_(std::make_unique<Code>()), where_(std::move(where)) {
  const std::string source = literal ? std::string(pattern) : add_nel_to_space_class(pattern);
  uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
  if (literal) options = PCRE2_UTF | PCRE2_LITERAL;
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_->code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options, &error, &offset, nullptr);
  if (code_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    throw macattn::Error("Tokenizer: " + where_ + ": cannot compile regex " + std::string(pattern).substr(0, 80) +
                         " at offset " + std::to_string(offset) + ": " + reinterpret_cast<char*>(message));
  }
  // The JIT is an optimisation only; where it is unavailable the interpreter gives the same matches.
  code_->jit = pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

std::vector<std::pair<std::size_t, std::size_t>> Regex::find_all(std::string_view text) const {
  // Match data and context per call, the JIT stack per thread: a const Tokenizer may encode
  // from several threads at once.
  thread_local JitStack jit_stack;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code_->code, nullptr), &pcre2_match_data_free);
  std::unique_ptr<pcre2_match_context, decltype(&pcre2_match_context_free)> context(pcre2_match_context_create(nullptr),
                                                                                    &pcre2_match_context_free);
  if (!data || !context) throw std::bad_alloc();
  pcre2_set_match_limit(context.get(), kMatchLimit);
  if (code_->jit && jit_stack.stack != nullptr) pcre2_jit_stack_assign(context.get(), nullptr, jit_stack.stack);

  std::vector<std::pair<std::size_t, std::size_t>> matches;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  std::size_t last_end = 0;
  bool have_last = false;
  std::size_t last_match_end = 0;
  while (last_end <= text.size()) {
    const int rc =
        pcre2_match(code_->code, subject, text.size(), last_end, PCRE2_NO_UTF_CHECK, data.get(), context.get());
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      throw macattn::Error("Tokenizer: " + where_ + ": regex failed on a text of " + std::to_string(text.size()) +
                           " bytes: " + reinterpret_cast<char*>(message));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data.get());
    const std::size_t start = ov[0], end = ov[1];
    if (end < last_end || start > end) break;  // \K tricks; never loop backwards
    if (start == end && have_last && last_match_end == end) {
      // Oniguruma skips an empty match where the previous one ended and moves one character on.
      last_end += last_end < text.size() ? utf8_char_len(static_cast<unsigned char>(text[last_end])) : 1;
      continue;
    }
    last_end = end;
    have_last = true;
    last_match_end = end;
    matches.emplace_back(start, end);
  }
  return matches;
}

bool Regex::matches(std::string_view text) const {
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(code_->code, nullptr), &pcre2_match_data_free);
  if (!data) throw std::bad_alloc();
  return pcre2_match(code_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, PCRE2_NO_UTF_CHECK,
                     data.get(), nullptr) >= 0;
}

}  // namespace macattn::engine::tok
