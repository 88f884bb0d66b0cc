// libFuzzer entry point: config.json parsing (ModelConfig::parse) on arbitrary text; the
// first byte splits the input between config.json and generation_config.json. Must parse
// to a config that passes validate() or throw macattn::Error.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "engine/model_config.hpp"
#include "macattn/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  // The first byte picks where config.json ends and generation_config.json begins.
  std::string_view cfg = all, gen;
  if (!all.empty()) {
    const std::string_view rest = all.substr(1);
    const std::size_t cut = rest.size() * static_cast<std::uint8_t>(all[0]) / 256;
    cfg = rest.substr(0, cut);
    gen = rest.substr(cut);
  }
  try {
    const auto c = macattn::engine::ModelConfig::parse(cfg, gen);
    c.validate();
    (void)c.to_string();
  } catch (const macattn::Error&) {
  }
  return 0;
}
