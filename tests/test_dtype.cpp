// tests/test_dtype.cpp: fp32 <-> f16/bf16 conversions against independent references.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "macattn/dtype.hpp"
#include "macattn/error.hpp"

namespace {

using macattn::DType;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// binary16 value of a bit pattern, from the IEEE definition (not from the library).
double f16_value(std::uint16_t h) {
  const int sign = (h & 0x8000) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0x1f) return mant ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}

// Nearest binary16 pattern to x by search over all positive finite values; ties to even;
// |x| >= 65520 (the midpoint between 65504 and 2^16) is infinity.
std::uint16_t f16_nearest(float x) {
  static const std::vector<double> table = [] {
    std::vector<double> t;
    for (std::uint16_t h = 0; h <= 0x7bff; ++h) t.push_back(f16_value(h));
    t.push_back(65536.0);  // stands for infinity (pattern 0x7c00)
    return t;
  }();
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 65536.0) return sign | 0x7c00;
  const auto it = std::lower_bound(table.begin(), table.end(), a);  // first >= a
  const std::size_t hi = static_cast<std::size_t>(it - table.begin());
  if (table[hi] == a || hi == 0) return static_cast<std::uint16_t>(sign | hi);
  const std::size_t lo = hi - 1;
  const double dl = a - table[lo], dh = table[hi] - a;
  const std::size_t pick = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
  return static_cast<std::uint16_t>(sign | pick);
}

// Nearest bfloat16 pattern: the two candidates bracketing x (truncation and the next value
// up in magnitude), compared in double; ties to even; overflow past the midpoint is inf.
std::uint16_t bf16_nearest(float x) {
  const std::uint32_t u = macattn::float_bits(x);
  const std::uint32_t lo = u & 0xffff0000u;
  if (lo == u) return static_cast<std::uint16_t>(u >> 16);
  const std::uint32_t hi = lo + 0x10000u;
  const double a = std::fabs(static_cast<double>(x));
  const double vlo = std::fabs(static_cast<double>(macattn::bits_float(lo)));
  const double vhi = ((hi & 0x7fffffffu) == 0x7f800000u) ? std::ldexp(1.0, 128)
                                                          : std::fabs(static_cast<double>(macattn::bits_float(hi)));
  const double dl = a - vlo, dh = vhi - a;
  const std::uint32_t pick = dl < dh ? lo : dh < dl ? hi : (((lo >> 16) & 1u) == 0 ? lo : hi);
  return static_cast<std::uint16_t>(pick >> 16);
}

TEST(DType, SizesNamesAndValidity) {
  EXPECT_EQ(macattn::dtype_size(DType::f32), 4u);
  EXPECT_EQ(macattn::dtype_size(DType::f16), 2u);
  EXPECT_EQ(macattn::dtype_size(DType::bf16), 2u);
  EXPECT_STREQ(macattn::dtype_name(DType::f32), "f32");
  EXPECT_STREQ(macattn::dtype_name(DType::f16), "f16");
  EXPECT_STREQ(macattn::dtype_name(DType::bf16), "bf16");
  EXPECT_STREQ(macattn::dtype_name(static_cast<DType>(9)), "invalid");
  EXPECT_TRUE(macattn::dtype_valid(DType::bf16));
  EXPECT_FALSE(macattn::dtype_valid(static_cast<DType>(3)));
  EXPECT_THROW(macattn::dtype_size(static_cast<DType>(3)), macattn::Error);
}

TEST(F16, DecodeOfEveryPatternMatchesIeeeDefinition) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = macattn::f16_to_float(static_cast<std::uint16_t>(h));
    const double want = f16_value(static_cast<std::uint16_t>(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << h;
    } else {
      EXPECT_EQ(static_cast<double>(f), want) << std::hex << h;
      EXPECT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << h;
    }
  }
}

TEST(F16, EveryValueRoundTripsAndNanStaysNan) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = macattn::f16_to_float(static_cast<std::uint16_t>(h));
    const std::uint16_t back = macattn::float_to_f16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(macattn::f16_to_float(back))) << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(F16, MidpointsRoundToEvenIncludingSubnormalsAndOverflow) {
  for (std::uint32_t h = 0; h < 0x7bff; ++h) {  // consecutive positive finite pairs (h, h+1)
    const float a = macattn::f16_to_float(static_cast<std::uint16_t>(h));
    const float b = macattn::f16_to_float(static_cast<std::uint16_t>(h + 1));
    const float mid = (a + b) * 0.5f;  // exact: 12 significant bits
    ASSERT_EQ(static_cast<double>(mid), (f16_value(static_cast<std::uint16_t>(h)) + f16_value(static_cast<std::uint16_t>(h + 1))) / 2);
    const std::uint16_t even = static_cast<std::uint16_t>(h % 2 == 0 ? h : h + 1);
    ASSERT_EQ(macattn::float_to_f16(mid), even) << std::hex << h;
    ASSERT_EQ(macattn::float_to_f16(-mid), even | 0x8000) << std::hex << h;
    ASSERT_EQ(macattn::float_to_f16(std::nextafter(mid, 0.0f)), h) << std::hex << h;
    ASSERT_EQ(macattn::float_to_f16(std::nextafter(mid, 1e9f)), h + 1) << std::hex << h;
  }
  // Between 65504 (0x7bff, odd) and 2^16: the midpoint goes to the even side, infinity.
  EXPECT_EQ(macattn::float_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(macattn::float_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7bff);
  EXPECT_EQ(macattn::float_to_f16(-65520.0f), 0xfc00);
  EXPECT_EQ(macattn::float_to_f16(1e30f), 0x7c00);
  EXPECT_EQ(macattn::float_to_f16(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(macattn::float_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_TRUE(std::isnan(macattn::f16_to_float(macattn::float_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  // Below the smallest subnormal 2^-24: half of it ties to zero, anything above rounds up.
  EXPECT_EQ(macattn::float_to_f16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(macattn::float_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(macattn::float_to_f16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(macattn::float_to_f16(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(macattn::float_to_f16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 * 2^-24 -> 2 (even)
  EXPECT_EQ(macattn::float_to_f16(std::ldexp(5.0f, -25)), 0x0002);  // 2.5 * 2^-24 -> 2 (even)
  EXPECT_EQ(macattn::float_to_f16(std::ldexp(3.0f, -26)), 0x0001);  // 0.75 * 2^-24 -> 1
  EXPECT_EQ(macattn::float_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

TEST(F16, RandomFloatsMatchNearestValueSearch) {
  std::mt19937_64 rng(17);
  std::uniform_int_distribution<std::uint32_t> exp_d(90, 145), mant_d(0, 0x7fffff), sign_d(0, 1);
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t u = (sign_d(rng) << 31) | (exp_d(rng) << 23) | mant_d(rng);
    const float x = macattn::bits_float(u);
    ASSERT_EQ(macattn::float_to_f16(x), f16_nearest(x)) << x << " bits " << std::hex << u;
  }
}

TEST(BF16, EveryPatternDecodesToTopBitsAndRoundTrips) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = macattn::bf16_to_float(static_cast<std::uint16_t>(h));
    ASSERT_EQ(macattn::float_bits(f), h << 16);
    const std::uint16_t back = macattn::float_to_bf16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(macattn::bf16_to_float(back))) << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(BF16, RandomFloatsMatchNearestEvenReference) {
  std::mt19937_64 rng(23);
  std::uniform_int_distribution<std::uint32_t> bits;
  int tested = 0;
  while (tested < 300000) {
    std::uint32_t u = bits(rng);
    if (tested % 3 == 0) u = (u & 0xffff0000u) | 0x8000u;  // exact midpoints
    const float x = macattn::bits_float(u);
    if (std::isnan(x)) continue;
    ++tested;
    ASSERT_EQ(macattn::float_to_bf16(x), bf16_nearest(x)) << x << " bits " << std::hex << u;
  }
  // Spot values: 1 + 2^-8 is the midpoint of 1 and 1 + 2^-7 (ties to even 1.0);
  // 1 + 3*2^-8 ties to 1 + 2^-6 (even).
  EXPECT_EQ(macattn::float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(macattn::float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(macattn::float_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // overflows to inf
  EXPECT_EQ(macattn::float_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isnan(macattn::bf16_to_float(macattn::float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // A signalling-looking NaN whose payload sits only in the low 16 bits must stay NaN.
  EXPECT_TRUE(std::isnan(macattn::bf16_to_float(macattn::float_to_bf16(macattn::bits_float(0x7f800001u)))));
}

TEST(DType, LoadAndStoreRoundThroughEachDtype) {
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    std::vector<unsigned char> buf(4 * 8, 0);
    const float vals[4] = {1.0f, -2.5f, 1.0f / 3.0f, 70000.0f};
    for (int i = 0; i < 4; ++i) macattn::store_from_float(buf.data(), dt, i, vals[i]);
    for (int i = 0; i < 4; ++i) {
      float want = vals[i];
      if (dt == DType::f16) want = static_cast<float>(f16_value(f16_nearest(vals[i])));
      if (dt == DType::bf16) want = macattn::bits_float(static_cast<std::uint32_t>(bf16_nearest(vals[i])) << 16);
      EXPECT_EQ(macattn::load_as_float(buf.data(), dt, i), want) << macattn::dtype_name(dt) << " " << i;
    }
  }
}

}  // namespace
