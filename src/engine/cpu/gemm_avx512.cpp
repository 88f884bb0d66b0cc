// AVX-512 kernels (compiled with -mavx512f/bw/vl/dq -mfma -mf16c; only called when the
// processor has them). bf16 -> f32 is a 16-bit shift, f16 -> f32 vcvtph2ps; all math fp32.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "engine/cpu/gemm.hpp"

namespace macattn::engine::cpu::avx512 {

namespace {

inline __mmask16 tail_mask(std::int64_t left) {
  return left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1u);
}

// 16 (or fewer, masked) elements of `dtype` from p as fp32; masked-off lanes are 0.
inline __m512 load16(const void* p, DType dtype, __mmask16 m) {
  switch (dtype) {
    case DType::f32:
      return _mm512_maskz_loadu_ps(m, p);
    case DType::bf16: {
      const __m256i h = _mm256_maskz_loadu_epi16(m, p);
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case DType::f16:
      return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
  return _mm512_setzero_ps();
}

inline float load1(const void* p, DType dtype) {
  std::uint8_t tmp[4];
  std::memcpy(tmp, p, dtype_size(dtype));
  return load_as_float(tmp, dtype, 0);
}

void pack(const void* const* rows, DType dtype, bool transposed, std::int64_t k, int nb, std::int64_t col0, float* Bp) {
  const std::size_t es = dtype_size(dtype);
  if (!transposed) {  // rows[kk][col0 .. col0+nb) is contiguous: two vector loads per kk
    const __mmask16 m0 = tail_mask(nb), m1 = tail_mask(nb - 16 > 0 ? nb - 16 : 0);
    for (std::int64_t kk = 0; kk < k; ++kk) {
      const auto* src = static_cast<const std::uint8_t*>(rows[kk]) + col0 * es;
      _mm512_store_ps(Bp + kk * kPanel, load16(src, dtype, m0));
      _mm512_store_ps(Bp + kk * kPanel + 16, nb > 16 ? load16(src + 16 * es, dtype, m1) : _mm512_setzero_ps());
    }
    return;
  }
  // Transposed: 16 k-values of one row at a time, scattered into the column j.
  alignas(64) float tmp[16];
  for (int j = 0; j < kPanel; ++j) {
    if (j >= nb) {
      for (std::int64_t kk = 0; kk < k; ++kk) Bp[kk * kPanel + j] = 0.0f;
      continue;
    }
    const auto* src = static_cast<const std::uint8_t*>(rows[j]);
    for (std::int64_t kk = 0; kk < k; kk += 16) {
      const std::int64_t left = k - kk;
      _mm512_store_ps(tmp, load16(src + kk * es, dtype, tail_mask(left)));
      const std::int64_t n = left < 16 ? left : 16;
      for (std::int64_t i = 0; i < n; ++i) Bp[(kk + i) * kPanel + j] = tmp[i];
    }
  }
}

// MR rows x 32 columns: 2*MR accumulators, B read once per k for all rows.
template <int MR>
inline void tile(const float* A, std::int64_t lda, std::int64_t k, const float* Bp, int nb, float* C, std::int64_t ldc,
                 bool accumulate) {
  __m512 c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
  for (std::int64_t kk = 0; kk < k; ++kk) {
    const __m512 b0 = _mm512_load_ps(Bp + kk * kPanel);
    const __m512 b1 = _mm512_load_ps(Bp + kk * kPanel + 16);
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(A[r * lda + kk]);
      c0[r] = _mm512_fmadd_ps(a, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(a, b1, c1[r]);
    }
  }
  const __mmask16 m0 = tail_mask(nb), m1 = tail_mask(nb > 16 ? nb - 16 : 0);
  for (int r = 0; r < MR; ++r) {
    float* c = C + r * ldc;
    if (accumulate) {
      c0[r] = _mm512_add_ps(c0[r], _mm512_maskz_loadu_ps(m0, c));
      c1[r] = _mm512_add_ps(c1[r], _mm512_maskz_loadu_ps(m1, c + 16));
    }
    _mm512_mask_storeu_ps(c, m0, c0[r]);
    _mm512_mask_storeu_ps(c + 16, m1, c1[r]);
  }
}

void gemm(const float* A, std::int64_t lda, std::int64_t m, std::int64_t k, const float* Bp, int nb, float* C,
          std::int64_t ldc, bool accumulate) {
  for_row_blocks<6>(
      m, [&]<int MR>(std::int64_t r) { tile<MR>(A + r * lda, lda, k, Bp, nb, C + r * ldc, ldc, accumulate); });
}

template <DType T>
inline __m512 load16_t(const std::uint8_t* p, __mmask16 m) {
  return load16(p, T, m);  // T is a constant here: the switch folds away
}
template <DType T>
inline __m512 load16_full(const std::uint8_t* p) {
  if constexpr (T == DType::f32) return _mm512_loadu_ps(p);
  if constexpr (T == DType::bf16)
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  if constexpr (T == DType::f16) return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// Four weight rows per pass so each x vector is loaded once for four dots; the dtype is a
// template parameter and full 16-wide steps are unmasked (decode is bound by streaming W).
template <DType T>
void matvec_t(const float* x, std::int64_t k, const void* W, std::int64_t ldw, std::int64_t rows, float* y) {
  constexpr std::size_t es = T == DType::f32 ? 4 : 2;
  const auto* base = static_cast<const std::uint8_t*>(W);
  const std::int64_t k16 = k / 16 * 16;
  const __mmask16 mt = tail_mask(k - k16);
  std::int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const std::uint8_t* w0 = base + (r + 0) * ldw * es;
    const std::uint8_t* w1 = base + (r + 1) * ldw * es;
    const std::uint8_t* w2 = base + (r + 2) * ldw * es;
    const std::uint8_t* w3 = base + (r + 3) * ldw * es;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    for (std::int64_t kk = 0; kk < k16; kk += 16) {
      const __m512 xv = _mm512_loadu_ps(x + kk);
      a0 = _mm512_fmadd_ps(xv, load16_full<T>(w0 + kk * es), a0);
      a1 = _mm512_fmadd_ps(xv, load16_full<T>(w1 + kk * es), a1);
      a2 = _mm512_fmadd_ps(xv, load16_full<T>(w2 + kk * es), a2);
      a3 = _mm512_fmadd_ps(xv, load16_full<T>(w3 + kk * es), a3);
    }
    if (k16 < k) {
      const __m512 xv = _mm512_maskz_loadu_ps(mt, x + k16);
      a0 = _mm512_fmadd_ps(xv, load16_t<T>(w0 + k16 * es, mt), a0);
      a1 = _mm512_fmadd_ps(xv, load16_t<T>(w1 + k16 * es, mt), a1);
      a2 = _mm512_fmadd_ps(xv, load16_t<T>(w2 + k16 * es, mt), a2);
      a3 = _mm512_fmadd_ps(xv, load16_t<T>(w3 + k16 * es, mt), a3);
    }
    y[r] = _mm512_reduce_add_ps(a0);
    y[r + 1] = _mm512_reduce_add_ps(a1);
    y[r + 2] = _mm512_reduce_add_ps(a2);
    y[r + 3] = _mm512_reduce_add_ps(a3);
  }
  for (; r < rows; ++r) {
    const std::uint8_t* w = base + r * ldw * es;
    __m512 acc = _mm512_setzero_ps();
    for (std::int64_t kk = 0; kk < k; kk += 16) {
      const __mmask16 m = tail_mask(k - kk);
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + kk), load16_t<T>(w + kk * es, m), acc);
    }
    y[r] = _mm512_reduce_add_ps(acc);
  }
}

void matvec(const float* x, std::int64_t k, const void* W, DType dtype, std::int64_t ldw, std::int64_t rows, float* y) {
  with_dtype(dtype, [&]<DType T>() { matvec_t<T>(x, k, W, ldw, rows, y); });
}

// exp(x) = 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2]; degree-6 polynomial (rel. error
// ~2e-7). scalef applies 2^n and underflows to 0 cleanly for very negative x.
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

float exp_shift_sum(float* x, std::int64_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  for (std::int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 v = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s));
    // -inf inputs (masked keys) must give exactly 0, not 2^-150.
    const __mmask16 finite =
        _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(m, x + i), _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    const __m512 e = _mm512_maskz_mov_ps(finite, v);
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, e));
  }
  return _mm512_reduce_add_ps(sum);
}

const GemmKernels table{"avx512", pack, gemm, matvec, exp_shift_sum};

}  // namespace

const GemmKernels* kernels() {
  return &table;
}

}  // namespace macattn::engine::cpu::avx512
