// tests/test_exact.cpp: exact_decode against fp64 attention, every shape and dtype.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "fixture.hpp"

namespace {

using macattn::DType;

struct ExactCase {
  int hq, hkv, d;
  float scale;
  std::vector<std::int64_t> lens;
};

std::string case_name(const ::testing::TestParamInfo<ExactCase>& info) {
  const auto& c = info.param;
  std::string s = "Hq" + std::to_string(c.hq) + "_Hkv" + std::to_string(c.hkv) + "_D" + std::to_string(c.d);
  if (c.scale != 0.0f) s += "_scaled";
  for (auto l : c.lens) s += "_" + std::to_string(l);
  return s;
}

// Runs exact_decode on random inputs and the oracle on the same (rounded) inputs.
void run_exact(const ExactCase& c, DType kv_dtype, DType q_dtype, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  macattn::AttentionShape shape{c.hq, c.hkv, c.d, c.scale};
  const oracle::Params p = oracle::make_params(shape, macattn::MacConfig{});
  fx::KVBatch kv = fx::random_kv(c.hkv, c.d, kv_dtype, c.lens, rng);
  const int B = kv.batch();
  const fx::Buf q = fx::random_buf(q_dtype, static_cast<std::size_t>(B) * c.hq * c.d, rng);
  fx::Buf out = fx::fill_buf(q_dtype, q.size(), 99.0f);
  std::vector<float> lse(static_cast<std::size_t>(B) * c.hq, 99.0f);
  macattn::exact_decode(shape, kv.view(), q.ctensor(), out.tensor(), lse.data());

  std::vector<oracle::State> ref;
  for (int b = 0; b < B; ++b) {
    auto r = oracle::exact(p, kv.seqs[b], c.lens[b], q.val.data() + b * c.hq * c.d);
    ref.insert(ref.end(), r.begin(), r.end());
  }
  EXPECT_TRUE(fx::outputs_match(out, lse, ref, fx::tol_for(q_dtype)));
  if (q_dtype == DType::f32) {
    EXPECT_LT(fx::rel_l2(out, ref), 1e-5);
  }
  // An empty sequence gives exactly 0 and -inf.
  for (int b = 0; b < B; ++b) {
    if (c.lens[b] != 0) continue;
    for (int h = 0; h < c.hq; ++h) {
      EXPECT_EQ(lse[static_cast<std::size_t>(b * c.hq + h)], -std::numeric_limits<float>::infinity());
      for (int i = 0; i < c.d; ++i) EXPECT_EQ(out.get(static_cast<std::size_t>((b * c.hq + h) * c.d + i)), 0.0f);
    }
  }
  // lse is optional and does not change the output.
  fx::Buf out2 = fx::fill_buf(q_dtype, q.size(), -5.0f);
  macattn::exact_decode(shape, kv.view(), q.ctensor(), out2.tensor(), nullptr);
  EXPECT_EQ(out2.raw, out.raw);
}

void PrintTo(const ExactCase& c, std::ostream* os) { *os << "Hq" << c.hq << " Hkv" << c.hkv << " D" << c.d; }

class ExactDecode : public ::testing::TestWithParam<ExactCase> {};

TEST_P(ExactDecode, MatchesFp64Attention) { run_exact(GetParam(), DType::f32, DType::f32, 1000 + GetParam().d * 7 + GetParam().hkv); }

INSTANTIATE_TEST_SUITE_P(
    Shapes, ExactDecode,
    ::testing::Values(ExactCase{4, 4, 8, 0.0f, {1, 37, 200}},      // GQA group 1
                      ExactCase{4, 2, 16, 0.0f, {5, 0, 64}},       // group 2, an empty sequence
                      ExactCase{8, 2, 64, 0.3f, {130, 1, 17}},     // group 4, explicit scale
                      ExactCase{4, 1, 16, 0.0f, {3, 250}},         // group 4, one KV head
                      ExactCase{2, 2, 8, 0.0f, {0}},               // only an empty sequence
                      ExactCase{4, 2, 8, 2.5f, {300, 299, 2}}),    // sharp softmax
    case_name);

struct DtypeCase {
  DType kv, q;
};

void PrintTo(const DtypeCase& c, std::ostream* os) {
  *os << "kv " << macattn::dtype_name(c.kv) << " q " << macattn::dtype_name(c.q);
}

class ExactDecodeDtypes : public ::testing::TestWithParam<DtypeCase> {};

TEST_P(ExactDecodeDtypes, MatchesFp64AttentionOnRoundedInputs) {
  const auto c = GetParam();
  run_exact(ExactCase{4, 2, 16, 0.0f, {1, 90, 33}}, c.kv, c.q,
            500 + 3 * static_cast<int>(c.kv) + static_cast<int>(c.q));
  run_exact(ExactCase{8, 2, 64, 0.0f, {150, 0}}, c.kv, c.q, 600 + 3 * static_cast<int>(c.kv) + static_cast<int>(c.q));
}

INSTANTIATE_TEST_SUITE_P(
    All, ExactDecodeDtypes,
    ::testing::Values(DtypeCase{DType::f32, DType::f32}, DtypeCase{DType::f32, DType::f16},
                      DtypeCase{DType::f32, DType::bf16}, DtypeCase{DType::f16, DType::f32},
                      DtypeCase{DType::f16, DType::f16}, DtypeCase{DType::f16, DType::bf16},
                      DtypeCase{DType::bf16, DType::f32}, DtypeCase{DType::bf16, DType::f16},
                      DtypeCase{DType::bf16, DType::bf16}),
    [](const ::testing::TestParamInfo<DtypeCase>& i) {
      return std::string("kv_") + macattn::dtype_name(i.param.kv) + "_q_" + macattn::dtype_name(i.param.q);
    });

TEST(ExactDecode, ShapeHelpers) {
  macattn::AttentionShape s{8, 2, 64, 0.0f};
  EXPECT_EQ(s.group_size(), 4);
  EXPECT_FLOAT_EQ(s.scale(), 0.125f);
  s.softmax_scale = 0.7f;
  EXPECT_EQ(s.scale(), 0.7f);
  EXPECT_NO_THROW(s.validate());
  EXPECT_STREQ(macattn::backend_name(macattn::Backend::reference), "reference");
}

}  // namespace
