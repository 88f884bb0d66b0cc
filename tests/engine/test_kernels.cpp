// The forward pass's building blocks against simple fp64 loops: the packed GEMM, matvec and
// exp kernels of both kernel sets, linear(), RMSNorm, RoPE, and the blocked causal prefill
// attention against its one-row-at-a-time double reference.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>

#include "engine/cpu/gemm.hpp"
#include "engine/cpu/linear.hpp"
#include "engine/cpu/ops.hpp"
#include "engine/cpu/prefill_attention.hpp"
#include "engine/paged_kv_cache.hpp"
#include "macattn/error.hpp"

namespace {

using namespace macattn;
using namespace macattn::engine;

std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// A weight stored in `dtype`, plus its exact fp32 values (what the kernels must read).
struct StoredWeight {
  std::vector<std::uint8_t> bytes;
  std::vector<float> values;
  WeightTensor tensor;
  StoredWeight(std::int64_t rows, std::int64_t cols, DType dtype, std::uint32_t seed) {
    values = random_floats(static_cast<std::size_t>(rows * cols), seed);
    bytes.resize(values.size() * dtype_size(dtype));
    for (std::size_t i = 0; i < values.size(); ++i) {
      store_from_float(bytes.data(), dtype, i, values[i]);
      values[i] = load_as_float(bytes.data(), dtype, i);
    }
    tensor = WeightTensor{bytes.data(), dtype, rows, cols};
  }
};

std::vector<const cpu::GemmKernels*> kernel_sets() {
  std::vector<const cpu::GemmKernels*> k{&cpu::portable::kernels()};
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && cpu::avx512::kernels() != nullptr)
    k.push_back(cpu::avx512::kernels());
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    k.push_back(cpu::avx2::kernels());
  return k;
}

TEST(EngineKernels, PackGemmMatvecAgainstDoubleLoops) {
  for (const cpu::GemmKernels* kern : kernel_sets()) {
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      const std::int64_t m = 13, k = 37;
      const int nb = 23;
      StoredWeight w(nb, k, dt, 7);
      const auto a = random_floats(static_cast<std::size_t>(m * k), 8);
      std::vector<const void*> rows(nb);
      for (int j = 0; j < nb; ++j) rows[j] = w.bytes.data() + j * k * dtype_size(dt);
      std::vector<float> packed(k * cpu::kPanel + 16);
      float* bp =
          packed.data() + (16 - reinterpret_cast<std::uintptr_t>(packed.data()) / 4 % 16) % 16;  // 64-byte aligned
      kern->pack(rows.data(), dt, true, k, nb, 0, bp);
      std::vector<float> c(m * nb, 1.0f);
      kern->gemm(a.data(), k, m, k, bp, nb, c.data(), nb, /*accumulate=*/true);
      std::vector<float> y(nb);
      for (std::int64_t r = 0; r < m; ++r) {
        kern->matvec(a.data() + r * k, k, w.bytes.data(), dt, k, nb, y.data());
        for (int j = 0; j < nb; ++j) {
          double want = 0;
          for (std::int64_t i = 0; i < k; ++i) want += static_cast<double>(a[r * k + i]) * w.values[j * k + i];
          EXPECT_NEAR(c[r * nb + j], want + 1.0, 1e-4) << kern->name << " " << dtype_name(dt);
          EXPECT_NEAR(y[j], want, 1e-4) << kern->name << " matvec " << dtype_name(dt);
        }
      }
      // Non-transposed packing: columns col0.. of row kk.
      kern->pack(rows.data(), dt, false, nb, 20, 5, bp);
      for (int kk = 0; kk < nb; ++kk)
        for (int j = 0; j < cpu::kPanel; ++j)
          EXPECT_EQ(bp[kk * cpu::kPanel + j], j < 20 ? w.values[kk * k + 5 + j] : 0.0f);
    }
  }
}

TEST(EngineKernels, ExpShiftSum) {
  for (const cpu::GemmKernels* kern : kernel_sets()) {
    auto x = random_floats(37, 3, 20.0f);
    x[5] = -INFINITY;
    const auto orig = x;
    const float sum = kern->exp_shift_sum(x.data(), 37, 4.0f);
    double want_sum = 0;
    for (int i = 0; i < 37; ++i) {
      const double want = std::exp(static_cast<double>(orig[i]) - 4.0);
      want_sum += want;
      EXPECT_NEAR(x[i], want, 2e-6 * want + 1e-30) << kern->name << " i=" << i;
    }
    EXPECT_EQ(x[5], 0.0f);
    EXPECT_NEAR(sum, want_sum, 1e-5 * want_sum);
  }
}

TEST(EngineKernels, LinearAllPathsWithBias) {
  for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
    StoredWeight w(70, 100, dt, 11);
    const auto bias = random_floats(70, 12);
    for (std::int64_t n : {1, 3, 4, 37}) {
      const auto x = random_floats(static_cast<std::size_t>(n * 100), 13);
      std::vector<float> y(n * 70);
      cpu::linear(x.data(), n, w.tensor, bias.data(), y.data());
      for (std::int64_t r = 0; r < n; ++r)
        for (std::int64_t o = 0; o < 70; ++o) {
          double want = bias[o];
          for (std::int64_t i = 0; i < 100; ++i) want += static_cast<double>(x[r * 100 + i]) * w.values[o * 100 + i];
          ASSERT_NEAR(y[r * 70 + o], want, 1e-4) << dtype_name(dt) << " n=" << n;
        }
    }
  }
  std::vector<float> y(4);
  StoredWeight w(4, 4, DType::f32, 1);
  EXPECT_THROW(cpu::linear_rows(y.data(), 1, w.tensor, 2, 3, y.data(), 3), macattn::Error);
}

TEST(EngineKernels, RmsNorm) {
  const auto x = random_floats(3 * 50, 21, 3.0f);
  const auto w = random_floats(50, 22);
  std::vector<float> y(x.size());
  cpu::rms_norm(x.data(), 3, 50, w.data(), 1e-5f, y.data());
  for (int r = 0; r < 3; ++r) {
    double ss = 0;
    for (int i = 0; i < 50; ++i) ss += static_cast<double>(x[r * 50 + i]) * x[r * 50 + i];
    const double inv = 1.0 / std::sqrt(ss / 50 + 1e-5);
    for (int i = 0; i < 50; ++i) EXPECT_NEAR(y[r * 50 + i], w[i] * x[r * 50 + i] * inv, 1e-5);
  }
}

TEST(EngineKernels, RopeRotateHalfAndLlama3Frequencies) {
  ModelConfig c;
  c.head_dim = 16;
  c.rope_theta = 10000.0;
  const cpu::Rope plain(c);
  auto x = random_floats(2 * 16, 31);
  const auto orig = x;
  std::vector<float> cs(8), sn(8);
  const std::int64_t pos = 1234;
  plain.angles(pos, cs.data(), sn.data());
  plain.apply(x.data(), 2, cs.data(), sn.data());
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 8; ++i) {
      const double f = std::pow(10000.0, -2.0 * i / 16);
      const double a = pos * f;
      const double x1 = orig[h * 16 + i], x2 = orig[h * 16 + i + 8];
      // fp32 angle rounding at pos 1234: |pos * f| * 2^-24 ~ 1e-4 rad at most.
      EXPECT_NEAR(x[h * 16 + i], x1 * std::cos(a) - x2 * std::sin(a), 5e-4);
      EXPECT_NEAR(x[h * 16 + i + 8], x2 * std::cos(a) + x1 * std::sin(a), 5e-4);
    }
  // llama3: wavelengths above old_len/low are divided by factor, below old_len/high kept.
  c.rope_scaling.type = RopeScaling::Type::llama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 64;
  const cpu::Rope scaled(c);
  int low = 0, high = 0, mid = 0;
  for (int i = 0; i < 8; ++i) {
    const double f = plain.inv_freq()[i];
    const double wl = 2 * std::numbers::pi / f;
    const double g = scaled.inv_freq()[i];
    if (wl < 16) {
      EXPECT_FLOAT_EQ(g, f);
      ++high;
    } else if (wl > 64) {
      EXPECT_NEAR(g, f / 8, 1e-7 * f);
      ++low;
    } else {
      const double s = (64 / wl - 1.0) / 3.0;
      EXPECT_NEAR(g, (1 - s) * f / 8 + s * f, 1e-6 * f);
      ++mid;
    }
  }
  EXPECT_GT(low, 0);
  EXPECT_GT(high, 0);
  EXPECT_GT(mid, 0);
}

TEST(EngineKernels, PrefillAttentionMatchesDoubleReference) {
  for (DType dt : {DType::f32, DType::bf16}) {
    for (int D : {16, 64}) {
      const AttentionShape shape{8, 2, D, 0.0f};
      const std::int64_t total = 203;
      PagedKVCache cache(1, 2, D, 256, 16, dt);
      const auto k = random_floats(total * 2 * D, 41);
      const auto v = random_floats(total * 2 * D, 42);
      cache.write(0, 0, total, k.data(), v.data());
      for (std::int64_t p0 : {0L, 70L}) {
        const std::int64_t n = total - p0;
        const auto q = random_floats(n * 8 * D, 43, 0.7f);
        std::vector<float> got(q.size()), want(q.size());
        const auto kv = cache.view(0, total);
        cpu::prefill_attention(shape, kv, p0, n, q.data(), got.data());
        cpu::prefill_attention_reference(shape, kv, p0, n, q.data(), want.data());
        for (std::size_t i = 0; i < got.size(); ++i)
          ASSERT_NEAR(got[i], want[i], 2e-5) << "D=" << D << " p0=" << p0 << " i=" << i;
      }
    }
  }
}

TEST(EngineKernels, PrefillAttentionRejectsInconsistentLength) {
  const AttentionShape shape{4, 2, 16, 0.0f};
  PagedKVCache cache(1, 2, 16, 64, 16, DType::f32);
  std::vector<float> q(4 * 16 * 3), out(q.size());
  EXPECT_THROW(cpu::prefill_attention(shape, cache.view(0, 5), 0, 3, q.data(), out.data()), macattn::Error);
}

}  // namespace
