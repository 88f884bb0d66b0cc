// tests/test_bf16_dot.cpp: the avx512bf16 kernel set (bf16 K/V through vdpbf16ps, queries and
// softmax weights as two bf16 terms each) is the default where the CPU has AVX512_BF16, and at
// a Llama-3.1-8B shape over a long context it meets the same fp32 tolerances as the other
// kernel sets, for fp32 queries (two query terms) and for queries that are bf16 values (the
// kernel then skips the zero second term). ctest also runs this with each kernel set forced.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <vector>

#include "fixture.hpp"

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

class Bf16DotAccuracy : public ::testing::TestWithParam<DType> {};  // the query dtype

TEST_P(Bf16DotAccuracy, LongContextMatchesFp64) {
  try {
    macattn::cpu_isa();
  } catch (const macattn::Error& e) {
    GTEST_SKIP() << e.what();
  }
  const DType qtype = GetParam();
  std::mt19937_64 rng(77);
  const macattn::AttentionShape shape{32, 8, 128, 0.0f};
  const oracle::Params p = oracle::make_params(shape, macattn::MacConfig{});
  const std::vector<std::int64_t> lens{4096, 1, 301};
  fx::KVBatch kv = fx::random_kv(8, 128, DType::bf16, lens, rng);
  // Larger logits than unit-variance queries give (scores up to about 15): the error of a
  // rounded query grows with them.
  fx::Buf q = fx::random_buf(qtype, lens.size() * 32 * 128, rng);
  for (std::size_t i = 0; i < q.size(); ++i) q.set(i, 3.0f * q.get(i));
  fx::Buf out = fx::fill_buf(qtype, q.size(), 9.0f);  // outputs take the query dtype
  std::vector<float> lse(lens.size() * 32, 9.0f);
  macattn::exact_decode(shape, kv.view(), q.ctensor(), out.tensor(), lse.data(), Backend::cpu);
  std::vector<oracle::State> ref;
  for (std::size_t b = 0; b < lens.size(); ++b) {
    auto r = oracle::exact(p, kv.seqs[b], lens[b], q.val.data() + b * 32 * 128);
    ref.insert(ref.end(), r.begin(), r.end());
  }
  double lse_err = 0;
  for (std::size_t r = 0; r < ref.size(); ++r)
    lse_err = std::max(lse_err, std::fabs(lse[r] - ref[r].lse) / (1 + std::fabs(ref[r].lse)));
  const double rel = fx::rel_l2(out, ref);
  std::cout << "[ measured ] kernels " << macattn::cpu_isa() << ", queries " << macattn::dtype_name(qtype)
            << ": relative L2 " << rel << ", max LSE error / (1 + |lse|) " << lse_err << "\n";
  EXPECT_LT(rel, qtype == DType::f32 ? 1e-5 : 3e-3);  // bf16 outputs: rounding, 2^-9
  EXPECT_TRUE(fx::outputs_match(out, lse, ref, fx::tol_for(qtype)));  // LSE: fp32 tolerance either way
}

INSTANTIATE_TEST_SUITE_P(Queries, Bf16DotAccuracy, ::testing::Values(DType::f32, DType::bf16),
                         [](const auto& i) { return std::string(macattn::dtype_name(i.param)); });

}  // namespace
