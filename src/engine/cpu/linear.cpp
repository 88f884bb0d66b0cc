#include "engine/cpu/linear.hpp"

#include <string>

#include "engine/cpu/aligned_buffer.hpp"
#include "engine/cpu/gemm.hpp"
#include "macattn/error.hpp"

namespace macattn::engine::cpu {

namespace {

// Rows of W per matvec task: big enough to amortise the task, small enough to balance.
constexpr std::int64_t kMatvecRows = 64;
// Below this many multiply-adds a call stays on the calling thread: a fork/join costs
// microseconds, and far more when the cores are shared and a worker is descheduled.
constexpr std::int64_t kParallelMacs = std::int64_t{1} << 20;

}  // namespace

void linear_rows(const float* x, std::int64_t n, const WeightTensor& w, std::int64_t row0, std::int64_t rows, float* y,
                 std::int64_t ldy) {
  if (x == nullptr || y == nullptr || w.data == nullptr) throw Error("linear: null x, y or weight");
  if (n < 0 || row0 < 0 || rows < 0 || row0 + rows > w.rows || ldy < rows)
    throw Error("linear: n = " + std::to_string(n) + ", rows [" + std::to_string(row0) + ", " +
                std::to_string(row0 + rows) + ") of a weight with " + std::to_string(w.rows) +
                " rows, ldy = " + std::to_string(ldy));
  const GemmKernels& kern = gemm_kernels();
  const std::size_t es = dtype_size(w.dtype);
  const auto* base = static_cast<const std::uint8_t*>(w.data) + row0 * w.cols * es;
  const std::int64_t k = w.cols;
  const bool parallel = n * rows * k >= kParallelMacs;

  if (n < 4) {
    const std::int64_t tasks = (rows + kMatvecRows - 1) / kMatvecRows;
#pragma omp parallel for schedule(static) if (parallel)
    for (std::int64_t t = 0; t < tasks; ++t) {
      const std::int64_t r0 = t * kMatvecRows;
      const std::int64_t nr = std::min(kMatvecRows, rows - r0);
      for (std::int64_t i = 0; i < n; ++i) {
        kern.matvec(x + i * k, k, base + r0 * k * es, w.dtype, k, nr, y + i * ldy + r0);
      }
    }
    return;
  }
  const std::int64_t panels = (rows + kPanel - 1) / kPanel;
#pragma omp parallel if (parallel)
  {
    AlignedFloats packed(static_cast<std::size_t>(k) * kPanel);
    const void* ptrs[kPanel];
#pragma omp for schedule(dynamic)
    for (std::int64_t p = 0; p < panels; ++p) {
      const std::int64_t o0 = p * kPanel;
      const int nb = static_cast<int>(std::min<std::int64_t>(kPanel, rows - o0));
      for (int j = 0; j < nb; ++j) ptrs[j] = base + (o0 + j) * k * es;
      kern.pack(ptrs, w.dtype, /*transposed=*/true, k, nb, 0, packed.data());
      kern.gemm(x, k, n, k, packed.data(), nb, y + o0, ldy, /*accumulate=*/false);
    }
  }
}

void linear(const float* x, std::int64_t n, const WeightTensor& w, const float* bias, float* y) {
  linear_rows(x, n, w, 0, w.rows, y, w.rows);
  if (bias != nullptr) {
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t o = 0; o < w.rows; ++o) y[i * w.rows + o] += bias[o];
  }
}

}  // namespace macattn::engine::cpu
