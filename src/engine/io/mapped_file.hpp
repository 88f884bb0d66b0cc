// engine/io/mapped_file.hpp: a read-only memory mapping of a whole file (RAII).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace macattn::engine {

class MappedFile {
 public:
  /// Maps `path` read-only. Throws macattn::Error naming the path and the OS error when the
  /// file cannot be opened, is not a regular file, or cannot be mapped. An empty file maps to
  /// data() = nullptr, size() = 0.
  static MappedFile open(const std::filesystem::path& path, bool prefetch = false);

  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void release();
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::filesystem::path path_;
};

/// Reads a whole (small) text file; throws macattn::Error naming the path if it cannot.
std::string read_text_file(const std::filesystem::path& path, std::size_t max_bytes = 64u << 20);

}  // namespace macattn::engine
