// engine/cpu/gemm.hpp: the small set of fp32-accumulating kernels the forward pass is built
// from, compiled per ISA (gemm_avx512.cpp, gemm_avx2.cpp, gemm_portable.cpp) and picked at run
// time.
//
// Why packed panels: prefill multiplies many activation rows by one weight block, so a
// weight block is converted (bf16/f16 -> f32) and laid out k-major once ("packed"), then a
// register-blocked kernel streams it for every row. Decode (one row) skips the packing and
// dots weight rows directly (matvec), because then each weight is used once.
#pragma once

#include <cstdint>

#include "macattn/dtype.hpp"

namespace macattn::engine::cpu {

/// Width of a packed panel: columns of B (outputs) per panel.
inline constexpr int kPanel = 32;

struct GemmKernels {
  const char* name;
  /// Packs one panel Bp [k, kPanel] fp32 (columns >= nb zero-filled), nb in [1, kPanel]:
  ///   transposed = true:  Bp[kk][j] = rows[j][kk]        (rows[j]: an output's weight row)
  ///   transposed = false: Bp[kk][j] = rows[kk][col0 + j] (rows[kk]: a V row; col0 picks columns)
  /// rows: nb (resp. k) pointers to elements of `dtype`, unaligned allowed.
  void (*pack)(const void* const* rows, DType dtype, bool transposed, std::int64_t k, int nb, std::int64_t col0,
               float* Bp);
  /// C[m, nb] = (accumulate ? C : 0) + A[m, k] * Bp[k, nb].  A: row stride lda; C: row stride ldc.
  void (*gemm)(const float* A, std::int64_t lda, std::int64_t m, std::int64_t k, const float* Bp, int nb, float* C,
               std::int64_t ldc, bool accumulate);
  /// y[r] = dot(x[0:k], W[r][0:k]) for r in [0, rows); W row r at W + r * ldw elements of dtype.
  void (*matvec)(const float* x, std::int64_t k, const void* W, DType dtype, std::int64_t ldw, std::int64_t rows,
                 float* y);
  /// x[i] = exp(x[i] - shift) for i < n; returns the sum of the results. x[i] = -inf gives 0.
  float (*exp_shift_sum)(float* x, std::int64_t n, float shift);
};

/// f.template operator()<T>() for the runtime storage type `dtype` (f32, bf16 or f16), so a
/// kernel templated on the type is picked once per call, not per element.
template <typename F>
inline decltype(auto) with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::bf16:
      return f.template operator()<DType::bf16>();
    case DType::f16:
      return f.template operator()<DType::f16>();
    case DType::f32:
      break;
  }
  return f.template operator()<DType::f32>();
}

/// Rows [0, m) of a GEMM in register blocks: tile.template operator()<MR>(r) for blocks of MaxMR
/// rows from r = 0, then one block of the m % MaxMR rows left. Header-only, so each ISA's file
/// instantiates it with its own tile (a lambda: a distinct type per file).
template <int MaxMR, typename Tile>
inline void for_row_blocks(std::int64_t m, Tile&& tile) {
  std::int64_t r = 0;
  for (; r + MaxMR <= m; r += MaxMR) tile.template operator()<MaxMR>(r);
  if constexpr (MaxMR > 1) {
    if (r < m) for_row_blocks<MaxMR - 1>(m - r, [&]<int MR>(std::int64_t q) { tile.template operator()<MR>(r + q); });
  }
}

/// The kernel set for this processor: "avx512" (AVX-512 F/BW/VL/DQ), else "avx2" (AVX2, FMA,
/// F16C), else "portable"; MACATTN_ENGINE_ISA=avx512|avx2|portable forces one (tests use it to
/// check each).
const GemmKernels& gemm_kernels();

namespace avx512 {
const GemmKernels* kernels();
}  // namespace avx512
namespace avx2 {
const GemmKernels* kernels();
}  // namespace avx2
namespace portable {
const GemmKernels& kernels();
}

}  // namespace macattn::engine::cpu
