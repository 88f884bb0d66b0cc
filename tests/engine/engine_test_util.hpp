// Shared helpers of the engine tests: fixture paths, reading reference.safetensors, temp
// directories and the relative error used against transformers.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include <unistd.h>

#include "engine/io/mapped_file.hpp"
#include "engine/io/safetensors.hpp"

namespace engine_test {

inline std::filesystem::path source_dir() {
  return MACATTN_SOURCE_DIR;
}
inline std::filesystem::path fixtures() {
  return source_dir() / "tests/engine/fixtures";
}

/// One fixture's reference outputs (from tools/engine/make_fixtures.py).
struct Reference {
  std::vector<std::int32_t> prompt_ids;
  std::vector<float> logits;  // [P, V]
  std::vector<std::int32_t> greedy_ids;
  std::vector<float> margins;
  std::int64_t vocab = 0;
};

template <typename T>
std::vector<T> read_tensor(const macattn::engine::MappedFile& f, const macattn::engine::SafetensorsHeader& h,
                           const std::string& name) {
  const auto& e = h.tensors.at(name);
  std::vector<T> out(e.bytes / sizeof(T));
  std::memcpy(out.data(), f.data() + e.offset, e.bytes);
  return out;
}

inline Reference load_reference(const std::filesystem::path& dir) {
  const auto f = macattn::engine::MappedFile::open(dir / "reference.safetensors");
  const auto h = macattn::engine::parse_safetensors(f.data(), f.size(), f.path().string());
  Reference r;
  r.prompt_ids = read_tensor<std::int32_t>(f, h, "prompt_ids");
  r.logits = read_tensor<float>(f, h, "logits");
  r.greedy_ids = read_tensor<std::int32_t>(f, h, "greedy_ids");
  r.margins = read_tensor<float>(f, h, "margins");
  r.vocab = h.tensors.at("logits").shape.at(1);
  return r;
}

/// max|a - b| / max|b| over one row: the relative error the issue asks to keep below 1e-3.
inline double rel_err(std::span<const float> a, std::span<const float> b) {
  double diff = 0, ref = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::fabs(static_cast<double>(b[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

inline std::int32_t argmax(std::span<const float> v) {
  return static_cast<std::int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

/// A fresh empty directory under the build's temp space, removed on destruction.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& name) {
    path = std::filesystem::temp_directory_path() / ("macattn_engine_test_" + name + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
inline void write_file(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

}  // namespace engine_test
