// libFuzzer entry point: the safetensors header parser on arbitrary bytes. Any input must
// either parse (and then every entry lies inside the buffer) or throw macattn::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "engine/io/safetensors.hpp"
#include "macattn/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto header = macattn::engine::parse_safetensors(data, size, "fuzz.safetensors");
    for (const auto& [name, e] : header.tensors) {
      // The promise callers rely on: the bytes are in bounds.
      if (e.offset < header.data_start || e.offset > size || e.bytes > size - e.offset) std::abort();
      volatile std::uint8_t sink = 0;
      if (e.bytes > 0) sink = data[e.offset + e.bytes - 1];
      (void)sink;
    }
  } catch (const macattn::Error&) {
  }
  return 0;
}
