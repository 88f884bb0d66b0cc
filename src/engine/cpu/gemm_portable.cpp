// Portable kernels: plain loops the compiler may vectorise for the baseline ISA. The
// reference the AVX-512 set is tested against, and the fallback on other processors.
#include <cmath>
#include <cstring>

#include "engine/cpu/gemm.hpp"

namespace macattn::engine::cpu::portable {

namespace {

void pack(const void* const* rows, DType dtype, bool transposed, std::int64_t k, int nb, std::int64_t col0, float* Bp) {
  const std::size_t es = dtype_size(dtype);
  auto load = [&](const void* row, std::int64_t i) {
    std::uint8_t tmp[4];
    std::memcpy(tmp, static_cast<const std::uint8_t*>(row) + i * es, es);
    return load_as_float(tmp, dtype, 0);
  };
  for (std::int64_t kk = 0; kk < k; ++kk) {
    float* out = Bp + kk * kPanel;
    for (int j = 0; j < kPanel; ++j)
      out[j] = j >= nb ? 0.0f : transposed ? load(rows[j], kk) : load(rows[kk], col0 + j);
  }
}

void gemm(const float* A, std::int64_t lda, std::int64_t m, std::int64_t k, const float* Bp, int nb, float* C,
          std::int64_t ldc, bool accumulate) {
  for (std::int64_t r = 0; r < m; ++r) {
    float acc[kPanel] = {};
    const float* a = A + r * lda;
    for (std::int64_t kk = 0; kk < k; ++kk) {
      const float av = a[kk];
      const float* b = Bp + kk * kPanel;
      for (int j = 0; j < kPanel; ++j) acc[j] += av * b[j];
    }
    float* c = C + r * ldc;
    for (int j = 0; j < nb; ++j) c[j] = accumulate ? c[j] + acc[j] : acc[j];
  }
}

void matvec(const float* x, std::int64_t k, const void* W, DType dtype, std::int64_t ldw, std::int64_t rows, float* y) {
  const std::size_t es = dtype_size(dtype);
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::uint8_t* row = static_cast<const std::uint8_t*>(W) + r * ldw * es;
    float acc = 0.0f;
    if (dtype == DType::f32) {
      for (std::int64_t i = 0; i < k; ++i) {
        float w;
        std::memcpy(&w, row + i * 4, 4);
        acc += x[i] * w;
      }
    } else {
      for (std::int64_t i = 0; i < k; ++i) {
        std::uint16_t h;
        std::memcpy(&h, row + i * 2, 2);
        acc += x[i] * (dtype == DType::bf16 ? bf16_to_float(h) : f16_to_float(h));
      }
    }
    y[r] = acc;
  }
}

float exp_shift_sum(float* x, std::int64_t n, float shift) {
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

const GemmKernels table{"portable", pack, gemm, matvec, exp_shift_sum};

}  // namespace

const GemmKernels& kernels() {
  return table;
}

}  // namespace macattn::engine::cpu::portable
