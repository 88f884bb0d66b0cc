// tests/test_merge.cpp: merge_states (MAC_ATTENTION.md §2) against the fp64 merge.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "macattn/macattn.hpp"
#include "oracle.hpp"

namespace {

using ::testing::HasSubstr;
using ::testing::ThrowsMessage;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct MergeInputs {
  std::int64_t n;
  int d;
  std::vector<float> o1, o2, l1, l2;
};

MergeInputs random_inputs(std::int64_t n, int d, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(-8.0f, 8.0f);
  MergeInputs in{n, d, {}, {}, {}, {}};
  for (std::int64_t i = 0; i < n * d; ++i) {
    in.o1.push_back(nd(rng));
    in.o2.push_back(nd(rng));
  }
  for (std::int64_t i = 0; i < n; ++i) {
    in.l1.push_back(ud(rng));
    in.l2.push_back(ud(rng));
  }
  return in;
}

oracle::State state_of(const std::vector<float>& o, const std::vector<float>& l, std::int64_t r, int d) {
  oracle::State s;
  s.o.assign(o.begin() + r * d, o.begin() + (r + 1) * d);
  s.lse = l[static_cast<std::size_t>(r)];
  return s;
}

void expect_matches_oracle(const MergeInputs& in, const std::vector<float>& out, const std::vector<float>& lse) {
  for (std::int64_t r = 0; r < in.n; ++r) {
    const oracle::State want =
        oracle::merge(state_of(in.o1, in.l1, r, in.d), state_of(in.o2, in.l2, r, in.d));
    if (std::isinf(want.lse)) {
      EXPECT_EQ(lse[static_cast<std::size_t>(r)], kNegInf) << r;
    } else {
      EXPECT_NEAR(lse[static_cast<std::size_t>(r)], want.lse, 1e-6 * (1 + std::fabs(want.lse))) << r;
    }
    for (int i = 0; i < in.d; ++i)
      EXPECT_NEAR(out[static_cast<std::size_t>(r * in.d + i)], want.o[static_cast<std::size_t>(i)], 2e-6) << r << "," << i;
  }
}

class MergeRandom : public ::testing::TestWithParam<int> {};

TEST_P(MergeRandom, MatchesFp64Merge) {
  const int d = GetParam();
  MergeInputs in = random_inputs(41, d, 100 + d);
  in.l1[3] = 80.0f;  // far-apart LSEs must not overflow
  in.l2[3] = -80.0f;
  in.l1[4] = in.l2[4];  // equal weights
  std::vector<float> out(in.o1.size(), 7.0f), lse(static_cast<std::size_t>(in.n), 7.0f);
  macattn::merge_states(in.n, d, in.o1.data(), in.l1.data(), in.o2.data(), in.l2.data(), out.data(), lse.data());
  expect_matches_oracle(in, out, lse);
}
INSTANTIATE_TEST_SUITE_P(HeadDims, MergeRandom, ::testing::Values(1, 8, 64));

TEST(Merge, EmptySidesGiveTheOtherSideExactlyAndBothEmptyGiveZero) {
  MergeInputs in = random_inputs(3, 16, 5);
  in.l1[0] = kNegInf;  // row 0: left empty
  in.l2[1] = kNegInf;  // row 1: right empty
  in.l1[2] = kNegInf;  // row 2: both empty
  in.l2[2] = kNegInf;
  std::vector<float> out(in.o1.size(), 7.0f), lse(3, 7.0f);
  macattn::merge_states(3, 16, in.o1.data(), in.l1.data(), in.o2.data(), in.l2.data(), out.data(), lse.data());
  EXPECT_EQ(lse[0], in.l2[0]);
  EXPECT_EQ(lse[1], in.l1[1]);
  EXPECT_EQ(lse[2], kNegInf);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(out[static_cast<std::size_t>(i)], in.o2[static_cast<std::size_t>(i)]);
    EXPECT_EQ(out[static_cast<std::size_t>(16 + i)], in.o1[static_cast<std::size_t>(16 + i)]);
    EXPECT_EQ(out[static_cast<std::size_t>(32 + i)], 0.0f);
  }
}

TEST(Merge, OutputMayAliasEitherInput) {
  const MergeInputs in = random_inputs(9, 8, 77);
  std::vector<float> out(in.o1.size()), lse(9);
  macattn::merge_states(9, 8, in.o1.data(), in.l1.data(), in.o2.data(), in.l2.data(), out.data(), lse.data());
  expect_matches_oracle(in, out, lse);

  std::vector<float> a = in.o1, la = in.l1;  // out aliases o1, lse_out aliases lse1
  macattn::merge_states(9, 8, a.data(), la.data(), in.o2.data(), in.l2.data(), a.data(), la.data());
  EXPECT_EQ(a, out);
  EXPECT_EQ(la, lse);

  std::vector<float> b = in.o2, lb = in.l2;  // out aliases o2, lse_out aliases lse2
  macattn::merge_states(9, 8, in.o1.data(), in.l1.data(), b.data(), lb.data(), b.data(), lb.data());
  EXPECT_EQ(b, out);
  EXPECT_EQ(lb, lse);
}

TEST(Merge, IsCommutativeAndAssociativeToRounding) {
  const MergeInputs x = random_inputs(5, 8, 1), y = random_inputs(5, 8, 2), z = random_inputs(5, 8, 3);
  std::vector<float> xy(40), lxy(5), yx(40), lyx(5), xy_z(40), lxy_z(5), yz(40), lyz(5), x_yz(40), lx_yz(5);
  macattn::merge_states(5, 8, x.o1.data(), x.l1.data(), y.o1.data(), y.l1.data(), xy.data(), lxy.data());
  macattn::merge_states(5, 8, y.o1.data(), y.l1.data(), x.o1.data(), x.l1.data(), yx.data(), lyx.data());
  macattn::merge_states(5, 8, xy.data(), lxy.data(), z.o1.data(), z.l1.data(), xy_z.data(), lxy_z.data());
  macattn::merge_states(5, 8, y.o1.data(), y.l1.data(), z.o1.data(), z.l1.data(), yz.data(), lyz.data());
  macattn::merge_states(5, 8, x.o1.data(), x.l1.data(), yz.data(), lyz.data(), x_yz.data(), lx_yz.data());
  for (int i = 0; i < 40; ++i) {
    EXPECT_NEAR(xy[static_cast<std::size_t>(i)], yx[static_cast<std::size_t>(i)], 1e-6);
    EXPECT_NEAR(xy_z[static_cast<std::size_t>(i)], x_yz[static_cast<std::size_t>(i)], 2e-6);
  }
  for (int r = 0; r < 5; ++r) {
    EXPECT_NEAR(lxy[static_cast<std::size_t>(r)], lyx[static_cast<std::size_t>(r)], 1e-5);
    EXPECT_NEAR(lxy_z[static_cast<std::size_t>(r)], lx_yz[static_cast<std::size_t>(r)], 1e-5);
  }
}

TEST(Merge, RejectsNanLse) {
  MergeInputs in = random_inputs(2, 4, 9);
  in.l2[1] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> out(8), lse(2);
  EXPECT_THAT([&] { macattn::merge_states(2, 4, in.o1.data(), in.l1.data(), in.o2.data(), in.l2.data(), out.data(), lse.data()); },
              ThrowsMessage<macattn::Error>(HasSubstr("lse")));
}

}  // namespace
