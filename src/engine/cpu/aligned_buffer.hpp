// engine/cpu/aligned_buffer.hpp: a 64-byte aligned fp32 scratch array (the packed panels
// are read with aligned vector loads).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace macattn::engine::cpu {

class AlignedFloats {
 public:
  AlignedFloats() = default;
  explicit AlignedFloats(std::size_t n) { resize(n); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  AlignedFloats(AlignedFloats&& o) noexcept : data_(o.data_), size_(o.size_) {
    o.data_ = nullptr;
    o.size_ = 0;
  }
  AlignedFloats& operator=(AlignedFloats&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  ~AlignedFloats() { std::free(data_); }

  /// Grows to at least n floats (contents are not kept).
  void resize(std::size_t n) {
    if (n <= size_) return;
    std::free(data_);
    const std::size_t bytes = ((n * sizeof(float)) + 63) / 64 * 64;
    data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (data_ == nullptr) throw std::bad_alloc();
    size_ = n;
  }
  float* data() { return data_; }
  std::size_t size() const { return size_; }

 private:
  float* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace macattn::engine::cpu
