// src/core/convert_rows.hpp: runs of elements between a K/V, query or ring dtype and fp32,
// bit-identical to load_as_float / store_from_float element by element, with the dtype
// switch outside the loop and a branch-free bf16 rounding so that the loops vectorise.
// (Element by element, writing a batch-4 decode step's 128 ring rows took about 40 us of a
// 5 ms MAC step.) Internal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "macattn/dtype.hpp"

namespace macattn::detail {

/// dst[i] = element at + i of `data` as fp32, for i < n.
inline void load_row_as_float(const void* data, DType dtype, std::size_t at, float* dst, std::size_t n) {
  switch (dtype) {
    case DType::f32:
      std::memcpy(dst, static_cast<const float*>(data) + at, n * sizeof(float));
      return;
    case DType::bf16: {
      const std::uint16_t* src = static_cast<const std::uint16_t*>(data) + at;
      for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
      return;
    }
    case DType::f16: {
      const std::uint16_t* src = static_cast<const std::uint16_t*>(data) + at;
      for (std::size_t i = 0; i < n; ++i) dst[i] = f16_to_float(src[i]);
      return;
    }
  }
}

/// Element at + i of `data` = src[i] rounded to the dtype, for i < n.
inline void store_row_from_float(void* data, DType dtype, std::size_t at, const float* src, std::size_t n) {
  switch (dtype) {
    case DType::f32:
      std::memcpy(static_cast<float*>(data) + at, src, n * sizeof(float));
      return;
    case DType::bf16: {
      std::uint16_t* dst = static_cast<std::uint16_t*>(data) + at;
      for (std::size_t i = 0; i < n; ++i) {  // float_to_bf16 without its branch
        const std::uint32_t u = float_bits(src[i]);
        const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        dst[i] = static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
      }
      return;
    }
    case DType::f16: {
      std::uint16_t* dst = static_cast<std::uint16_t*>(data) + at;
      for (std::size_t i = 0; i < n; ++i) dst[i] = float_to_f16(src[i]);
      return;
    }
  }
}

}  // namespace macattn::detail
