// AVX2 kernels (compiled with -mavx2 -mfma -mf16c; only called when the processor has them):
// the AVX-512 set's algorithms on 8-float registers, for the many processors without AVX-512.
// bf16 -> f32 is a 16-bit shift, f16 -> f32 vcvtph2ps; all math fp32. AVX2 has no masked
// 16-bit loads, so a ragged end (fewer than 8 elements) is copied into a zeroed buffer first.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "engine/cpu/gemm.hpp"

namespace macattn::engine::cpu::avx2 {

namespace {

// 8 elements of `dtype` from p as fp32 (all 8 readable).
template <DType T>
inline __m256 load8_full(const std::uint8_t* p) {
  if constexpr (T == DType::f32) return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  if constexpr (T == DType::bf16)
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  if constexpr (T == DType::f16) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// n in [0, 8] elements of `dtype` from p as fp32; lanes >= n are 0 and never read from p.
inline __m256 load8(const void* p, DType dtype, std::int64_t n) {
  const std::size_t es = dtype_size(dtype);
  alignas(32) std::uint8_t tmp[32] = {};
  const auto* src = static_cast<const std::uint8_t*>(p);
  if (n < 8) {
    std::memcpy(tmp, src, static_cast<std::size_t>(n > 0 ? n : 0) * es);
    src = tmp;
  }
  return with_dtype(dtype, [&]<DType T>() { return load8_full<T>(src); });
}

// Lane mask of the first n (0..8) lanes, for maskstore / maskload of fp32.
inline __m256i lanes_below(std::int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < 0 ? 0 : n > 8 ? 8 : n)), idx);
}

inline float hsum8(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

void pack(const void* const* rows, DType dtype, bool transposed, std::int64_t k, int nb, std::int64_t col0, float* Bp) {
  const std::size_t es = dtype_size(dtype);
  if (!transposed) {  // rows[kk][col0 .. col0+nb) is contiguous: four 8-wide loads per kk
    for (std::int64_t kk = 0; kk < k; ++kk) {
      const auto* src = static_cast<const std::uint8_t*>(rows[kk]) + col0 * es;
      for (int q = 0; q < kPanel / 8; ++q)
        _mm256_store_ps(Bp + kk * kPanel + 8 * q, load8(src + 8 * q * es, dtype, nb - 8 * q));
    }
    return;
  }
  // Transposed: 8 k-values of one row at a time, scattered into the column j.
  alignas(32) float tmp[8];
  for (int j = 0; j < kPanel; ++j) {
    if (j >= nb) {
      for (std::int64_t kk = 0; kk < k; ++kk) Bp[kk * kPanel + j] = 0.0f;
      continue;
    }
    const auto* src = static_cast<const std::uint8_t*>(rows[j]);
    for (std::int64_t kk = 0; kk < k; kk += 8) {
      const std::int64_t left = k - kk;
      _mm256_store_ps(tmp, load8(src + kk * es, dtype, left));
      const std::int64_t n = left < 8 ? left : 8;
      for (std::int64_t i = 0; i < n; ++i) Bp[(kk + i) * kPanel + j] = tmp[i];
    }
  }
}

// MR rows x 16 columns (half a panel, from column h16): 2*MR accumulators, B read once per k
// for all rows; 16 ymm registers hold at most 4 rows' accumulators with B and A's broadcast.
template <int MR>
inline void half_tile(const float* A, std::int64_t lda, std::int64_t k, const float* Bp, int h16, int nb, float* C,
                      std::int64_t ldc, bool accumulate) {
  __m256 c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm256_setzero_ps();
  for (std::int64_t kk = 0; kk < k; ++kk) {
    const __m256 b0 = _mm256_load_ps(Bp + kk * kPanel + h16);
    const __m256 b1 = _mm256_load_ps(Bp + kk * kPanel + h16 + 8);
    for (int r = 0; r < MR; ++r) {
      const __m256 a = _mm256_broadcast_ss(A + r * lda + kk);
      c0[r] = _mm256_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(a, b1, c1[r]);
    }
  }
  const __m256i m0 = lanes_below(nb - h16), m1 = lanes_below(nb - h16 - 8);
  for (int r = 0; r < MR; ++r) {
    float* c = C + r * ldc + h16;
    if (accumulate) {
      c0[r] = _mm256_add_ps(c0[r], _mm256_maskload_ps(c, m0));
      c1[r] = _mm256_add_ps(c1[r], _mm256_maskload_ps(c + 8, m1));
    }
    _mm256_maskstore_ps(c, m0, c0[r]);
    _mm256_maskstore_ps(c + 8, m1, c1[r]);
  }
}

template <int MR>
inline void tile(const float* A, std::int64_t lda, std::int64_t k, const float* Bp, int nb, float* C, std::int64_t ldc,
                 bool accumulate) {
  half_tile<MR>(A, lda, k, Bp, 0, nb, C, ldc, accumulate);
  if (nb > 16) half_tile<MR>(A, lda, k, Bp, 16, nb, C, ldc, accumulate);
}

void gemm(const float* A, std::int64_t lda, std::int64_t m, std::int64_t k, const float* Bp, int nb, float* C,
          std::int64_t ldc, bool accumulate) {
  for_row_blocks<4>(
      m, [&]<int MR>(std::int64_t r) { tile<MR>(A + r * lda, lda, k, Bp, nb, C + r * ldc, ldc, accumulate); });
}

// Four weight rows per pass so each x vector is loaded once for four dots (decode is bound by
// streaming W); the ragged end of k through load8's buffer.
template <DType T>
void matvec_t(const float* x, std::int64_t k, const void* W, std::int64_t ldw, std::int64_t rows, float* y) {
  constexpr std::size_t es = T == DType::f32 ? 4 : 2;
  const auto* base = static_cast<const std::uint8_t*>(W);
  const std::int64_t k8 = k / 8 * 8;
  const __m256 xt = k8 < k ? load8(x + k8, DType::f32, k - k8) : _mm256_setzero_ps();
  std::int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const std::uint8_t* w[4];
    for (int i = 0; i < 4; ++i) w[i] = base + (r + i) * ldw * es;
    __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (std::int64_t kk = 0; kk < k8; kk += 8) {
      const __m256 xv = _mm256_loadu_ps(x + kk);
      for (int i = 0; i < 4; ++i) a[i] = _mm256_fmadd_ps(xv, load8_full<T>(w[i] + kk * es), a[i]);
    }
    if (k8 < k)
      for (int i = 0; i < 4; ++i) a[i] = _mm256_fmadd_ps(xt, load8(w[i] + k8 * es, T, k - k8), a[i]);
    for (int i = 0; i < 4; ++i) y[r + i] = hsum8(a[i]);
  }
  for (; r < rows; ++r) {
    const std::uint8_t* w = base + r * ldw * es;
    __m256 acc = _mm256_setzero_ps();
    for (std::int64_t kk = 0; kk < k8; kk += 8)
      acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + kk), load8_full<T>(w + kk * es), acc);
    if (k8 < k) acc = _mm256_fmadd_ps(xt, load8(w + k8 * es, T, k - k8), acc);
    y[r] = hsum8(acc);
  }
}

void matvec(const float* x, std::int64_t k, const void* W, DType dtype, std::int64_t ldw, std::int64_t rows, float* y) {
  with_dtype(dtype, [&]<DType T>() { matvec_t<T>(x, k, W, ldw, rows, y); });
}

// exp(x) = 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2]; degree-6 polynomial (rel. error
// ~2e-7), as the AVX-512 set. 2^n is built in the exponent field, so x is clamped to
// [-87, 88.7] (n in [-126, 128)) and results below e^-87 (~1.6e-38, where fp32 turns
// subnormal) are 0.
inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 tiny = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.7f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // n = 128 (x near 88.7) does not fit the exponent field: 2^127 * 2 as two factors.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(ni, 1);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  const __m256 s2 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
  return _mm256_andnot_ps(tiny, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2));
}

float exp_shift_sum(float* x, std::int64_t n, float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  for (std::int64_t i = 0; i < n; i += 8) {
    const __m256i m = lanes_below(n - i);
    const __m256 v = _mm256_maskload_ps(x + i, m);  // -inf inputs (masked keys) give exactly 0
    const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(v, s)), _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(x + i, m, e);
    sum = _mm256_add_ps(sum, e);
  }
  return hsum8(sum);
}

const GemmKernels table{"avx2", pack, gemm, matvec, exp_shift_sum};

}  // namespace

const GemmKernels* kernels() {
  return &table;
}

}  // namespace macattn::engine::cpu::avx2
