// src/cpu/fast/simd.hpp: 16-float vectors through GCC/Clang vector extensions. The same source
// is compiled once per ISA (kernels_<isa>.cpp with its own -m flags): AVX-512 maps a v16f to
// one zmm register, AVX2 to two ymm, the portable build to four xmm. Internal; included only
// by the per-ISA kernel translation units.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "macattn/dtype.hpp"

namespace macattn::cpu::MACATTN_ISA_NS {

typedef float v16f __attribute__((vector_size(64)));
typedef std::int32_t v16i __attribute__((vector_size(64)));
typedef std::uint32_t v16u __attribute__((vector_size(64)));
typedef std::uint16_t v16h __attribute__((vector_size(32)));

/// All lanes = x. (Written out: `v16f{} + x` is lowered lane by lane when a v16f spans two
/// or four registers, which made the AVX2 build ten times slower.)
inline v16f splat(float x) { return v16f{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

inline v16f load_f32(const float* p) {
  v16f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store_f32(float* p, v16f v) { std::memcpy(p, &v, sizeof v); }

/// 16 elements of a K/V row of the given storage type, widened to fp32.
template <DType T>
inline v16f load16(const void* row, int i) {
  if constexpr (T == DType::f32) {
    return load_f32(static_cast<const float*>(row) + i);
  } else if constexpr (T == DType::bf16) {
#if defined(__AVX512F__)
    // One zero-extending load and a shift (the generic form costs two half-width extends).
    const __m512i w = _mm512_maskz_cvtepu16_epi32(
        0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const std::uint16_t*>(row) + i)));
    v16u u;
    std::memcpy(&u, &w, sizeof u);
    u <<= 16;
    v16f f;
    std::memcpy(&f, &u, sizeof f);
    return f;
#elif defined(__AVX2__)
    const auto* src = reinterpret_cast<const __m128i*>(static_cast<const std::uint16_t*>(row) + i);
    const __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(src)), 16);
    const __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(src + 1)), 16);
    v16f f;
    std::memcpy(&f, &lo, 32);
    std::memcpy(reinterpret_cast<char*>(&f) + 32, &hi, 32);
    return f;
#else
    v16h h;
    std::memcpy(&h, static_cast<const std::uint16_t*>(row) + i, sizeof h);
    const v16u u = __builtin_convertvector(h, v16u) << 16;
    v16f f;
    std::memcpy(&f, &u, sizeof f);
    return f;
#endif
  } else {
#if defined(__AVX512F__)
    const __m512 f = _mm512_maskz_cvtph_ps(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const std::uint16_t*>(row) + i)));
    v16f v;
    std::memcpy(&v, &f, sizeof v);
    return v;
#elif defined(__F16C__)
    const auto* p = static_cast<const std::uint16_t*>(row) + i;
    const __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const __m256 hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
    v16f v;
    std::memcpy(&v, &lo, 32);
    std::memcpy(reinterpret_cast<char*>(&v) + 32, &hi, 32);
    return v;
#else
    v16f v;
    const auto* p = static_cast<const std::uint16_t*>(row) + i;
    for (int l = 0; l < 16; ++l) v[l] = f16_to_float(p[l]);
    return v;
#endif
  }
}

typedef float v8f __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef float v2f __attribute__((vector_size(8)));

/// Sum of the 16 lanes, added pairwise by halves (lane l += lane l+8, then l+4, l+2, l+1):
/// exactly the order core/distance.hpp defines, so scan results match the reference bit for bit.
inline float hsum(v16f v) {
  const v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const v4f b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  const v2f c = __builtin_shufflevector(b, b, 0, 1) + __builtin_shufflevector(b, b, 2, 3);
  return c[0] + c[1];
}

/// a * b + c with a single rounding (the match distance is defined with fused multiply-adds).
inline v16f fma16(v16f a, v16f b, v16f c) {
#if defined(__AVX512F__)
  __m512 x, y, z;
  std::memcpy(&x, &a, 64);
  std::memcpy(&y, &b, 64);
  std::memcpy(&z, &c, 64);
  const __m512 r = _mm512_fmadd_ps(x, y, z);
  v16f out;
  std::memcpy(&out, &r, 64);
  return out;
#elif defined(__FMA__)
  __m256 x0, y0, z0, x1, y1, z1;
  std::memcpy(&x0, &a, 32);
  std::memcpy(&y0, &b, 32);
  std::memcpy(&z0, &c, 32);
  std::memcpy(&x1, reinterpret_cast<const char*>(&a) + 32, 32);
  std::memcpy(&y1, reinterpret_cast<const char*>(&b) + 32, 32);
  std::memcpy(&z1, reinterpret_cast<const char*>(&c) + 32, 32);
  const __m256 r0 = _mm256_fmadd_ps(x0, y0, z0), r1 = _mm256_fmadd_ps(x1, y1, z1);
  v16f out;
  std::memcpy(&out, &r0, 32);
  std::memcpy(reinterpret_cast<char*>(&out) + 32, &r1, 32);
  return out;
#else
  v16f out;
  for (int l = 0; l < 16; ++l) out[l] = std::fma(a[l], b[l], c[l]);
  return out;
#endif
}

/// True if some lane of v is greater than x (a NaN lane is not).
inline bool any_above(v16f v, float x) {
#if defined(__AVX512F__)
  __m512 y;
  std::memcpy(&y, &v, 64);
  return _mm512_cmp_ps_mask(y, _mm512_set1_ps(x), _CMP_GT_OQ) != 0;
#elif defined(__AVX2__)
  __m256 lo, hi;
  std::memcpy(&lo, &v, 32);
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + 32, 32);
  const __m256 y = _mm256_set1_ps(x);
  return (_mm256_movemask_ps(_mm256_cmp_ps(lo, y, _CMP_GT_OQ)) |
          _mm256_movemask_ps(_mm256_cmp_ps(hi, y, _CMP_GT_OQ))) != 0;
#else
  const v16i gt = v > splat(x);
  std::int32_t any = 0;
  for (int l = 0; l < 16; ++l) any |= gt[l];
  return any != 0;
#endif
}

inline float hmax(v16f v) {
  const v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  const v8f a2 = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const v8f m8 = a > a2 ? a : a2;
  const v4f b = __builtin_shufflevector(m8, m8, 0, 1, 2, 3), b2 = __builtin_shufflevector(m8, m8, 4, 5, 6, 7);
  const v4f m4 = b > b2 ? b : b2;
  const float x = m4[0] > m4[1] ? m4[0] : m4[1], y = m4[2] > m4[3] ? m4[2] : m4[3];
  return x > y ? x : y;
}

/// The first round of reduce_16x16 for two of its inputs (acc[2i], acc[2i+1]).
inline v16f reduce_pair(v16f a, v16f b) {
  return __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
         __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
}

/// The second round, from two first-round results (of acc[4i .. 4i+1] and acc[4i+2 .. 4i+3]).
inline v16f reduce_pairs(v16f r0, v16f r1) {
  return __builtin_shufflevector(r0, r1, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) +
         __builtin_shufflevector(r0, r1, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
}

/// The first two rounds of reduce_16x16 for a quarter of its inputs (acc[4i .. 4i+3]): the
/// vector s_i that the last rounds combine. Lets a caller reduce each four keys as soon as
/// their accumulators are done, in registers, instead of storing all sixteen.
inline v16f reduce_quarter(const v16f* acc4) {
  return reduce_pairs(reduce_pair(acc4[0], acc4[1]), reduce_pair(acc4[2], acc4[3]));
}

/// The last two rounds of reduce_16x16 from its four quarters (reduce_quarter of acc[0..3],
/// acc[4..7], acc[8..11], acc[12..15]).
inline v16f reduce_quarters(const v16f* s) {
  v16f u[2];
  for (int i = 0; i < 2; ++i) {
    const v16f a = s[2 * i], b = s[2 * i + 1];
    u[i] = __builtin_shufflevector(a, b, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
           __builtin_shufflevector(a, b, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  }
  const v16f w = __builtin_shufflevector(u[0], u[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
                 __builtin_shufflevector(u[0], u[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  return __builtin_shufflevector(w, w, 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15);
}

/// out[j] = sum of the 16 lanes of acc[j], for 16 vectors at once: four rounds of pairwise
/// shuffle-and-add (30 shuffles, 15 adds for 16 sums, instead of 16 horizontal sums). The
/// rounds leave the sums in bit-reversed lane order, which the last shuffle undoes. Each sum
/// adds lanes in hsum's order (l + l+8, then +4, +2, +1).
inline v16f reduce_16x16(const v16f* acc) {
  const v16f s[4] = {reduce_quarter(acc), reduce_quarter(acc + 4), reduce_quarter(acc + 8), reduce_quarter(acc + 12)};
  return reduce_quarters(s);
}

/// All 16 lanes = lane j of v, from registers. (Broadcasting from a 64-byte vector just
/// stored to memory would wait on store-to-load forwarding, which fails for a 4-byte load
/// inside a 64-byte store on the CPUs we measured: ~5x slower P*V.)
inline v16f lane_broadcast(v16f v, int j) {
#if defined(__AVX512F__)
  __m512 x;
  std::memcpy(&x, &v, 64);
  const __m512 r = _mm512_maskz_permutexvar_ps(0xffff, _mm512_set1_epi32(j), x);
  v16f out;
  std::memcpy(&out, &r, 64);
  return out;
#elif defined(__AVX2__)
  __m256 half;
  std::memcpy(&half, reinterpret_cast<const char*>(&v) + (j < 8 ? 0 : 32), 32);
  const __m256 b = _mm256_permutevar8x32_ps(half, _mm256_set1_epi32(j & 7));
  v16f out;
  std::memcpy(&out, &b, 32);
  std::memcpy(reinterpret_cast<char*>(&out) + 32, &b, 32);
  return out;
#else
  return splat(v[j]);
#endif
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(__AVX512F__)
/// exp_nonpositive on 8 lanes: the same steps (and constants) on one ymm register. With AVX2 a
/// v16f spans two registers, and GCC's lowering of the generic form moved its halves through
/// the stack (about 7 ns per key and KV head of the attention kernel).
inline __m256 exp_nonpositive8(__m256 x) {
  const __m256 lim = _mm256_set1_ps(-87.0f);
  const __m256 xc = _mm256_max_ps(x, lim);  // anything below -87 (-inf included) becomes -87
  const __m256 t = _mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f));
  const __m256 n = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(_mm256_sub_ps(t, _mm256_set1_ps(0.5f))));
  const __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860682030941723212e-6f),
                                    _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), xc));
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  return _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps(x, lim, _CMP_LT_OQ));
}
#endif

/// e^x for x <= 0 (softmax arguments), relative error below 2e-7 for x > -87; exactly 0 for
/// x = -inf (masked keys), and 0 below -87 where e^x is subnormal anyway.
inline v16f exp_nonpositive(v16f x) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(__AVX512F__)
  __m256 lo, hi;
  std::memcpy(&lo, &x, 32);
  std::memcpy(&hi, reinterpret_cast<const char*>(&x) + 32, 32);
  lo = exp_nonpositive8(lo);
  hi = exp_nonpositive8(hi);
  v16f out;
  std::memcpy(&out, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&out) + 32, &hi, 32);
  return out;
#else
  const v16f xc = x < splat(-87.0f) ? splat(-87.0f) : x;
  // e^x = 2^n * e^r with n = round(x / ln2) and r = x - n ln2 in [-ln2/2, ln2/2]. For t <= 0,
  // trunc(t - 0.5) = ceil(t - 0.5) is within 0.5 of t (conversion truncates toward zero).
  const v16f t = xc * splat(1.44269504088896341f);
  const v16f n = __builtin_convertvector(__builtin_convertvector(t - splat(0.5f), v16i), v16f);
  const v16f r = (xc - n * splat(0.693145751953125f)) - n * splat(1.42860682030941723212e-6f);
  // Degree-6 Taylor polynomial; on |r| <= 0.35 its error is below 1.3e-7.
  v16f p = splat(1.0f / 720.0f);
  p = p * r + splat(1.0f / 120.0f);
  p = p * r + splat(1.0f / 24.0f);
  p = p * r + splat(1.0f / 6.0f);
  p = p * r + splat(0.5f);
  p = p * r + splat(1.0f);
  p = p * r + splat(1.0f);
  const v16i ni = __builtin_convertvector(n, v16i);
  const v16i bits = (ni + 127) << 23;
  v16f scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const v16f e = p * scale;
  return x < splat(-87.0f) ? splat(0.0f) : e;
#endif
}

}  // namespace macattn::cpu::MACATTN_ISA_NS
