#include "engine/io/safetensors.hpp"

#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "macattn/error.hpp"

namespace macattn::engine {

namespace {

// Headers of real checkpoints are a few hundred KB; anything far larger is hostile.
constexpr std::uint64_t kMaxHeaderBytes = 100u << 20;

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw Error(source + ": " + what);
}

std::int64_t as_nonnegative_int(const nlohmann::json& v, const std::string& source, const std::string& what) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      fail(source, what + " = " + v.dump() + " is too large");
    return static_cast<std::int64_t>(u);
  }
  if (v.is_number_integer()) {
    const auto i = v.get<std::int64_t>();
    if (i < 0) fail(source, what + " = " + std::to_string(i) + " is negative");
    return i;
  }
  fail(source, what + " = " + v.dump() + " is not a non-negative integer");
}

}  // namespace

std::size_t safetensors_dtype_size(const std::string& name) {
  if (name == "F64" || name == "I64" || name == "U64") return 8;
  if (name == "F32" || name == "I32" || name == "U32") return 4;
  if (name == "F16" || name == "BF16" || name == "I16" || name == "U16") return 2;
  if (name == "I8" || name == "U8" || name == "BOOL" || name == "F8_E4M3" || name == "F8_E5M2") return 1;
  return 0;
}

SafetensorsHeader parse_safetensors(const std::uint8_t* data, std::size_t size, const std::string& source) {
  if (size < 8 || data == nullptr)
    fail(source, "file of " + std::to_string(size) + " bytes is too short for a safetensors header");
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];  // little-endian
  if (header_len > size - 8)
    fail(source, "header length " + std::to_string(header_len) + " exceeds the file size " + std::to_string(size) +
                     " (truncated?)");
  if (header_len > kMaxHeaderBytes)
    fail(source, "header length " + std::to_string(header_len) + " is implausibly large");

  const char* text = reinterpret_cast<const char*>(data + 8);
  nlohmann::json header = nlohmann::json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) fail(source, "header is not valid JSON");
  if (!header.is_object()) fail(source, "header is not a JSON object");

  SafetensorsHeader out;
  out.data_start = 8 + static_cast<std::size_t>(header_len);
  const std::size_t data_size = size - out.data_start;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = "tensor '" + name + "'";
    if (!entry.is_object()) fail(source, where + " is not an object");
    const auto dt = entry.find("dtype");
    const auto sh = entry.find("shape");
    const auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string()) fail(source, where + " has no string field 'dtype'");
    if (sh == entry.end() || !sh->is_array()) fail(source, where + " has no array field 'shape'");
    if (off == entry.end() || !off->is_array() || off->size() != 2)
      fail(source, where + " has no field 'data_offsets' [begin, end]");

    SafetensorsEntry e;
    e.dtype_name = dt->get<std::string>();
    const std::size_t elem = safetensors_dtype_size(e.dtype_name);
    if (elem == 0) fail(source, where + " dtype = '" + e.dtype_name + "' is not a safetensors dtype");
    if (e.dtype_name == "F32") e.dtype = DType::f32;
    if (e.dtype_name == "F16") e.dtype = DType::f16;
    if (e.dtype_name == "BF16") e.dtype = DType::bf16;
    if (sh->size() > 8) fail(source, where + " shape has " + std::to_string(sh->size()) + " dimensions (at most 8)");

    // numel * elem must not overflow; bound it by the data section as we go.
    std::uint64_t numel = 1;
    for (std::size_t i = 0; i < sh->size(); ++i) {
      const std::int64_t d = as_nonnegative_int((*sh)[i], source, where + " shape[" + std::to_string(i) + "]");
      e.shape.push_back(d);
      if (d != 0 && numel > (std::numeric_limits<std::uint64_t>::max() / elem) / static_cast<std::uint64_t>(d))
        fail(source, where + " shape " + sh->dump() + " overflows");
      numel *= static_cast<std::uint64_t>(d);
    }
    const auto begin = static_cast<std::uint64_t>(as_nonnegative_int((*off)[0], source, where + " data_offsets[0]"));
    const auto end = static_cast<std::uint64_t>(as_nonnegative_int((*off)[1], source, where + " data_offsets[1]"));
    if (begin > end) fail(source, where + " data_offsets " + off->dump() + ": begin > end");
    if (end > data_size)
      fail(source, where + " data_offsets " + off->dump() + " end beyond the data section (" +
                       std::to_string(data_size) + " bytes; truncated?)");
    if (end - begin != numel * elem)
      fail(source, where + " data_offsets " + off->dump() + " hold " + std::to_string(end - begin) +
                       " bytes but shape " + sh->dump() + " of " + e.dtype_name + " needs " +
                       std::to_string(numel * elem));
    e.offset = out.data_start + static_cast<std::size_t>(begin);
    e.bytes = static_cast<std::size_t>(end - begin);
    e.numel = static_cast<std::int64_t>(numel);
    out.tensors.emplace(name, std::move(e));
  }
  return out;
}

}  // namespace macattn::engine
