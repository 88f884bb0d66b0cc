// tests/test_bf16_dot.cpp: the avx512bf16 kernel set (bf16 K/V through vdpbf16ps, queries and
// softmax weights as two bf16 terms each) is the default where the CPU has AVX512_BF16, and at
// a Llama-3.1-8B shape over a long context it meets the same fp32 tolerances as the other
// kernel sets, for fp32 queries (two query terms) and for queries that are bf16 values (the
// kernel then skips the zero second term). ctest also runs this with each kernel set forced.
// With macattn::set_cpu_products(bf16) one term each (GPU-kernel rounding), within 1e-2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <vector>

#include "fixture.hpp"
#include "sim.hpp"

namespace {

using macattn::Backend;
using macattn::DType;

TEST(Bf16Dot, DefaultWhereTheCpuHasAvx512Bf16) {
  // (Not a skip when MACATTN_CPU_ISA is set: the forced-ISA ctest runs treat any skip as
  // "this CPU lacks the kernel set".)
  const char* forced = std::getenv("MACATTN_CPU_ISA");
  if (forced != nullptr && *forced != '\0') return;
  const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  if (has) EXPECT_STREQ(macattn::cpu_isa(), "avx512bf16");
  else EXPECT_STRNE(macattn::cpu_isa(), "avx512bf16");
}

/// exact_decode on the cpu backend at a Llama-3.1-8B shape over a long context (4096, 1 and 301
/// tokens, bf16 K/V), queries of qtype scaled to larger logits than unit-variance ones give
/// (scores up to about 15: the error of a rounded query grows with them), against the fp64
/// oracle.
struct LongContextRun {
  fx::Buf out;
  std::vector<float> lse;
  std::vector<oracle::State> ref;
  double rel = 0, lse_err = 0;  // relative L2 of the outputs; max |lse - ref| / (1 + |ref|)
};
LongContextRun long_context_run(DType qtype, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const macattn::AttentionShape shape{32, 8, 128, 0.0f};
  const oracle::Params p = oracle::make_params(shape, macattn::MacConfig{});
  const std::vector<std::int64_t> lens{4096, 1, 301};
  fx::KVBatch kv = fx::random_kv(8, 128, DType::bf16, lens, rng);
  fx::Buf q = fx::random_buf(qtype, lens.size() * 32 * 128, rng);
  for (std::size_t i = 0; i < q.size(); ++i) q.set(i, 3.0f * q.get(i));
  LongContextRun run{fx::fill_buf(qtype, q.size(), 9.0f), std::vector<float>(lens.size() * 32, 9.0f), {}};  // outputs take the query dtype
  macattn::exact_decode(shape, kv.view(), q.ctensor(), run.out.tensor(), run.lse.data(), Backend::cpu);
  for (std::size_t b = 0; b < lens.size(); ++b) {
    auto r = oracle::exact(p, kv.seqs[b], lens[b], q.val.data() + b * 32 * 128);
    run.ref.insert(run.ref.end(), r.begin(), r.end());
  }
  for (std::size_t r = 0; r < run.ref.size(); ++r)
    run.lse_err = std::max(run.lse_err, std::fabs(run.lse[r] - run.ref[r].lse) / (1 + std::fabs(run.ref[r].lse)));
  run.rel = fx::rel_l2(run.out, run.ref);
  return run;
}

class Bf16DotAccuracy : public ::testing::TestWithParam<DType> {};  // the query dtype

TEST_P(Bf16DotAccuracy, LongContextMatchesFp64) {
  try {
    macattn::cpu_isa();
  } catch (const macattn::Error& e) {
    GTEST_SKIP() << e.what();
  }
  const DType qtype = GetParam();
  const LongContextRun run = long_context_run(qtype, 77);
  std::cout << "[ measured ] kernels " << macattn::cpu_isa() << ", queries " << macattn::dtype_name(qtype)
            << ": relative L2 " << run.rel << ", max LSE error / (1 + |lse|) " << run.lse_err << "\n";
  EXPECT_LT(run.rel, qtype == DType::f32 ? 1e-5 : 3e-3);  // bf16 outputs: rounding, 2^-9
  EXPECT_TRUE(fx::outputs_match(run.out, run.lse, run.ref, fx::tol_for(qtype)));  // LSE: fp32 tolerance either way
}

INSTANTIATE_TEST_SUITE_P(Queries, Bf16DotAccuracy, ::testing::Values(DType::f32, DType::bf16),
                         [](const auto& i) { return std::string(macattn::dtype_name(i.param)); });

// macattn::set_cpu_products(bf16): one bf16 term per query and weight, as GPU kernels round
// them. Restores the setting it found.
class Bf16Products : public ::testing::Test {
 protected:
  void SetUp() override {
    try {
      macattn::cpu_isa();
    } catch (const macattn::Error& e) {
      GTEST_SKIP() << e.what();
    }
    saved_ = macattn::cpu_products();
    macattn::set_cpu_products(macattn::CpuProducts::bf16);
  }
  void TearDown() override { macattn::set_cpu_products(saved_); }
  macattn::CpuProducts saved_ = macattn::CpuProducts::fp32;
};

TEST(CpuProducts, DefaultIsFp32AndTheSettingRoundTrips) {
  const char* env = std::getenv("MACATTN_CPU_PRODUCTS");
  if (env == nullptr || *env == '\0') {
    EXPECT_EQ(macattn::cpu_products(), macattn::CpuProducts::fp32);
  }
  const macattn::CpuProducts saved = macattn::cpu_products();
  macattn::set_cpu_products(macattn::CpuProducts::bf16);
  EXPECT_EQ(macattn::cpu_products(), macattn::CpuProducts::bf16);
  EXPECT_STREQ(macattn::cpu_products_name(macattn::cpu_products()), "bf16");
  macattn::set_cpu_products(macattn::CpuProducts::fp32);
  EXPECT_STREQ(macattn::cpu_products_name(macattn::cpu_products()), "fp32");
  try {
    macattn::set_cpu_products(static_cast<macattn::CpuProducts>(7));
    ADD_FAILURE() << "no error for an invalid value";
  } catch (const macattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find('7'), std::string::npos) << e.what();
  }
  EXPECT_EQ(macattn::cpu_products(), macattn::CpuProducts::fp32);  // unchanged by the bad call
  EXPECT_STREQ(macattn::cpu_products_name(static_cast<macattn::CpuProducts>(7)), "invalid");
  macattn::set_cpu_products(saved);
}

// Runs for real under ctest's cpu_products_bad_environment (MACATTN_CPU_PRODUCTS=f8); there a
// skip fails the test.
TEST(CpuProducts, EnvironmentValueIsChecked) {
  const char* env = std::getenv("MACATTN_CPU_PRODUCTS");
  if (env == nullptr || std::string(env) != "f8") GTEST_SKIP() << "runs under ctest's cpu_products_bad_environment";
  try {
    macattn::cpu_products();
    ADD_FAILURE() << "no error for MACATTN_CPU_PRODUCTS=f8";
  } catch (const macattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("MACATTN_CPU_PRODUCTS='f8'"), std::string::npos) << e.what();
  }
}

// Within the tolerance the GPU kernels are held to (relative L2 1e-2), and visibly rounded
// where the avx512bf16 set runs (so the setting is not ignored); other sets compute in fp32.
TEST_F(Bf16Products, LongContextWithinGpuTolerance) {
  const LongContextRun run = long_context_run(DType::f32, 78);
  const double rel = run.rel, lse_err = run.lse_err;
  std::cout << "[ measured ] kernels " << macattn::cpu_isa() << ", bf16 products: relative L2 " << rel
            << ", max LSE error / (1 + |lse|) " << lse_err << "\n";
  EXPECT_LT(rel, 1e-2);
  EXPECT_LT(lse_err, 1e-2);
  if (std::strcmp(macattn::cpu_isa(), "avx512bf16") == 0) {
    EXPECT_GT(rel, 1e-4);  // rounded: the one-term path ran
  } else {
    EXPECT_LT(rel, 1e-5);  // other kernel sets ignore the setting
  }
}

// MAC decode with bf16 products: the scan is fp32 either way, so hits, matched rows and
// distances stay those of the reference backend bit for bit; outputs within bf16 tolerance of
// the oracle (checked by Sim::step).
TEST_F(Bf16Products, MacDecisionsMatchTheReference) {
  fx::SimSpec sp;
  sp.shape = {8, 1, 128, 0.0f};
  sp.cfg.window = 32;
  sp.cfg.rect_offset = 8;
  sp.cfg.front_sinks = 2;
  sp.cfg.min_context = 0;
  sp.start_len = {50, 9};
  sp.steps = 20;
  sp.kv_dtype = DType::bf16;
  sp.q_dtype = DType::bf16;
  sp.ring_dtype = DType::bf16;
  sp.prefill = true;
  sp.seed = fx::seed_of("bf16_products");
  // Weights rounded to bf16 (2^-9 relative each) move an output element by up to ~2^-9 of
  // the values it sums (V entries are O(1) here), however small the element itself: an
  // absolute floor of 5e-3 (relative L2 stays near 2e-3, see LongContextWithinGpuTolerance).
  sp.tol = fx::Tol{std::ldexp(1.0, -7), 5e-3, 1e-2};
  fx::SimSpec rp = sp;
  sp.backend = Backend::cpu;
  rp.backend = Backend::reference;
  fx::Sim fast(sp), ref(rp);
  std::int64_t hits = 0;
  ASSERT_TRUE(fx::lockstep(fast, ref, 20, &hits)) << "fast (bf16 products) against reference";
  EXPECT_GT(hits, 0);
}

}  // namespace
