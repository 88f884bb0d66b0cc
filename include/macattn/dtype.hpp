// macattn/dtype.hpp: element types of K/V caches, queries, outputs and rings, with exact
// round-to-nearest-even conversions to and from fp32 (so users can fill buffers without
// depending on a half-precision library).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace macattn {

enum class DType : std::uint8_t {
  f32 = 0,   ///< IEEE binary32
  f16 = 1,   ///< IEEE binary16
  bf16 = 2,  ///< bfloat16 (the top 16 bits of binary32)
};

/// Bytes per element; throws macattn::Error for a value outside the enum.
std::size_t dtype_size(DType dtype);
/// "f32", "f16", "bf16"; "invalid" for a value outside the enum.
const char* dtype_name(DType dtype);
/// True for the three enumerators.
bool dtype_valid(DType dtype);

inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

/// fp32 -> bf16, round to nearest even; NaN stays a (quiet) NaN.
inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
inline float bf16_to_float(std::uint16_t h) { return bits_float(static_cast<std::uint32_t>(h) << 16); }

/// fp16 -> fp32 (exact: every binary16 value is a binary32 value).
inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return bits_float(sign);  // +-0
  // Subnormal: value = mant * 2^-24; normalise into binary32.
  int e = -1;
  do {
    ++e;
    mant <<= 1;
  } while ((mant & 0x400u) == 0);
  return bits_float(sign | ((112u - static_cast<std::uint32_t>(e)) << 23) | ((mant & 0x3ffu) << 13));
}

/// fp32 -> fp16, round to nearest even, overflow to inf, underflow through subnormals.
inline std::uint16_t float_to_f16(float f) {
  const std::uint32_t u = float_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);  // nan
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to >= 65536: inf
  if (a >= 0x38800000u) {  // normal binary16 range (>= 2^-14)
    std::uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
    r += 0xfffu + ((r >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | (r >> 13));
  }
  if (a < 0x33000000u) return sign;  // below half the smallest subnormal (2^-25): +-0
  // Subnormal: shift the 24-bit significand right, rounding to nearest even.
  const std::uint32_t exp = a >> 23;
  const std::uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 126u - exp;  // in [14, 24] here
  std::uint32_t r = mant >> shift;
  const std::uint32_t rem = mant & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1u);
  if (rem > half || (rem == half && (r & 1u))) ++r;
  return static_cast<std::uint16_t>(sign | r);
}

/// Reads element i of a buffer of the given dtype as fp32.
inline float load_as_float(const void* data, DType dtype, std::size_t i) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(data)[i];
    case DType::f16: return f16_to_float(static_cast<const std::uint16_t*>(data)[i]);
    case DType::bf16: return bf16_to_float(static_cast<const std::uint16_t*>(data)[i]);
  }
  return 0.0f;
}

/// Writes fp32 value v into element i of a buffer of the given dtype (rounded to nearest even).
inline void store_from_float(void* data, DType dtype, std::size_t i, float v) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(data)[i] = v; break;
    case DType::f16: static_cast<std::uint16_t*>(data)[i] = float_to_f16(v); break;
    case DType::bf16: static_cast<std::uint16_t*>(data)[i] = float_to_bf16(v); break;
  }
}

}  // namespace macattn
