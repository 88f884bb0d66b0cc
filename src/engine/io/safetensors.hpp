// engine/io/safetensors.hpp: the safetensors header parser (untrusted input).
//
// Format: 8-byte little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {...}}
// then the data section; offsets are relative to the data section's start (8 + N).
// parse_safetensors checks everything against the buffer size before anything is used:
// N within the buffer, JSON well formed, each entry's fields typed, begin <= end <= data
// size, and (end - begin) == product(shape) * element size without overflow.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "macattn/dtype.hpp"

namespace macattn::engine {

struct SafetensorsEntry {
  std::string dtype_name;      ///< as written ("BF16", "F32", "I64", ...)
  std::optional<DType> dtype;  ///< set for F32 / F16 / BF16, the types the engine computes with
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;  ///< absolute byte offset of the first element in the buffer
  std::size_t bytes = 0;
  std::int64_t numel = 0;
};

struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry> tensors;
  std::size_t data_start = 0;  ///< 8 + header length
};

/// Parses and validates the header of a safetensors buffer of `size` bytes (the whole file).
/// `source` names the file in errors. Throws macattn::Error, e.g.
/// "model.safetensors: tensor 'x' data_offsets [0, 4096] end beyond the data section (100 bytes)".
SafetensorsHeader parse_safetensors(const std::uint8_t* data, std::size_t size, const std::string& source);

/// Bytes per element of a safetensors dtype name, 0 if unknown.
std::size_t safetensors_dtype_size(const std::string& name);

}  // namespace macattn::engine
