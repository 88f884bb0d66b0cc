// engine/tokenizer/normalizer.cpp: see normalizer.hpp.
#include "engine/tokenizer/normalizer.hpp"

#include <cstdlib>
#include <memory>

#include <utf8proc.h>

#include "macattn/error.hpp"

namespace macattn::engine::tok {

Normalizer Normalizer::parse(const json& value, const JsonPlace& place) {
  Normalizer n;
  parse_into(value, place, 0, n.forms_);
  return n;
}

void Normalizer::parse_into(const json& value, const JsonPlace& place, int depth, std::vector<Form>& forms) {
  if (value.is_null()) return;
  if (depth > kMaxNesting) json_fail(place, "nested deeper than " + std::to_string(kMaxNesting) + " levels");
  const std::string type = json_string(json_require(value, "type", place), place.at("type"));
  if (type == "NFC") {
    forms.push_back(Form::nfc);
  } else if (type == "NFD") {
    forms.push_back(Form::nfd);
  } else if (type == "NFKC") {
    forms.push_back(Form::nfkc);
  } else if (type == "NFKD") {
    forms.push_back(Form::nfkd);
  } else if (type == "Sequence") {
    const JsonPlace list_place = place.at("normalizers");
    const json& list = json_require(value, "normalizers", place);
    if (!list.is_array()) json_fail(list_place, "must be an array, got " + json_brief(list));
    for (std::size_t i = 0; i < list.size(); ++i) parse_into(list[i], list_place.at(i), depth + 1, forms);
  } else {
    json_fail(place.at("type"), "unsupported normalizer \"" + type +
                                    "\" (supported: NFC, NFD, NFKC, NFKD, Sequence; byte-level BPE models use these)");
  }
}

std::string Normalizer::apply(std::string_view text) const {
  std::string current(text);
  for (const Form form : forms_) {
    int options = UTF8PROC_STABLE;
    switch (form) {
      case Form::nfc:
        options |= UTF8PROC_COMPOSE;
        break;
      case Form::nfd:
        options |= UTF8PROC_DECOMPOSE;
        break;
      case Form::nfkc:
        options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
        break;
      case Form::nfkd:
        options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
        break;
    }
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(current.data()),
                     static_cast<utf8proc_ssize_t>(current.size()), &out, static_cast<utf8proc_option_t>(options));
    std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(out, &std::free);
    if (n < 0) {
      throw macattn::Error(std::string("Tokenizer: normalizer failed: ") + utf8proc_errmsg(n));
    }
    current.assign(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
  }
  return current;
}

}  // namespace macattn::engine::tok
