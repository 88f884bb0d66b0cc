// tests/test_mac_rules.cpp: single MAC decode steps on rings written directly, checking each
// rule of MAC_ATTENTION.md §5 against definite expected values and the fp64 oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <ostream>
#include <random>
#include <vector>

#include "sim.hpp"

namespace {

using macattn::DType;
constexpr float kInf = std::numeric_limits<float>::infinity();

// A one-step simulation: sequences decode at positions ts[b], queries far apart (fresh
// N(0, 3^2) rows), f32 queries and KV.
fx::SimSpec one_step(int hq, int hkv, int d, int w, int s, int f, float tau, std::vector<std::int64_t> ts,
                     DType ring, std::uint64_t seed) {
  fx::SimSpec sp;
  sp.shape = {hq, hkv, d, 0.0f};
  sp.cfg.window = w;
  sp.cfg.rect_offset = s;
  sp.cfg.front_sinks = f;
  sp.cfg.tau = tau;
  sp.cfg.min_context = 0;
  for (auto t : ts) sp.start_len.push_back(t + 1);
  sp.steps = 1;
  sp.seed = seed;
  sp.jump_prob = 1.0;
  sp.ring_dtype = ring;
  return sp;
}

// A ring at position t, ready, every slot filled: q ~ N(0, 3^2), o ~ N(0, 1), lse ~ U(-1, 5).
oracle::Ring random_ring(const oracle::Params& p, std::int64_t t, DType dtype, std::mt19937_64& rng) {
  oracle::Ring r(p.w, p.hq, p.d, dtype);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(-1.0f, 5.0f);
  for (int s = 0; s < p.w; ++s)
    for (int h = 0; h < p.hq; ++h) {
      for (int i = 0; i < p.d; ++i) {
        r.qrow(s, h)[i] = oracle::round_to(dtype, 3.0f * nd(rng));
        r.orow(s, h)[i] = oracle::round_to(dtype, nd(rng));
      }
      r.lse(s, h) = ud(rng);
    }
  r.position = t;
  r.ready = true;
  return r;
}

// q_pre(t) of head h := ring row of position m plus N(0, noise^2).
void aim(fx::Sim& sim, int b, const oracle::Ring& ring, std::int64_t t, int h, std::int64_t m, double noise,
         std::mt19937_64& rng) {
  std::normal_distribution<double> nd(0.0, noise);
  std::vector<float> row(static_cast<std::size_t>(sim.p.d));
  for (int i = 0; i < sim.p.d; ++i) row[static_cast<std::size_t>(i)] = ring.qrow(m % sim.p.w, h)[i] + static_cast<float>(nd(rng));
  sim.set_pre(b, t, h, row);
}

const macattn::HeadStats& hs(const fx::Sim& sim, int b, int h) { return sim.hs[static_cast<std::size_t>(b * sim.p.hq + h)]; }

class ForcedHits : public ::testing::TestWithParam<DType> {};

// Hits at chosen positions: out = entry(m) + band [E(m), E(t)) + tail, entry(t) written back.
TEST_P(ForcedHits, ReuseEntryPlusBandPlusTail) {
  const DType ring_dtype = GetParam();
  fx::Sim sim(one_step(4, 2, 16, 16, 5, 0, 0.45f, {100, 40}, ring_dtype, 31));
  std::mt19937_64 rng(32);
  const std::int64_t t0 = 100, t1 = 40;
  oracle::Ring r0 = random_ring(sim.p, t0, ring_dtype, rng), r1 = random_ring(sim.p, t1, ring_dtype, rng);
  const std::int64_t m0[4] = {99, 90, 85, 84};  // bands 1, 10, 15, 16 (= W, the largest allowed)
  const std::int64_t m1[4] = {39, 24, 30, 35};
  for (int h = 0; h < 4; ++h) {
    aim(sim, 0, r0, t0, h, m0[h], 0.05, rng);
    aim(sim, 1, r1, t1, h, m1[h], 0.05, rng);
  }
  fx::write_ring(sim.states[0], r0);
  fx::write_ring(sim.states[1], r1);
  ASSERT_TRUE(sim.step());
  for (int h = 0; h < 4; ++h) {
    EXPECT_EQ(hs(sim, 0, h).hit, 1);
    EXPECT_EQ(hs(sim, 0, h).matched_position, m0[h]);
    EXPECT_EQ(hs(sim, 0, h).band_len, t0 - m0[h]);
    EXPECT_EQ(hs(sim, 0, h).kv_tokens_read, (t0 - m0[h]) + 5);
    EXPECT_EQ(hs(sim, 1, h).hit, 1);
    EXPECT_EQ(hs(sim, 1, h).matched_position, m1[h]);
    EXPECT_EQ(hs(sim, 1, h).band_len, t1 - m1[h]);
  }
  EXPECT_EQ(sim.ss.heads_hit, 8);
  EXPECT_EQ(sim.ss.groups_all_hit, 4);
  EXPECT_EQ(sim.ss.ring_wipes, 0);
  // The reused prefix really is the ring's: the output differs from exact attention.
  std::vector<oracle::State> exact = oracle::exact(sim.p, sim.kv.seqs[0], t0 + 1, sim.q[0].post_row(t0));
  EXPECT_GT(std::fabs(sim.out.get(0) - exact[0].o[0]) + std::fabs(sim.lse[0] - exact[0].lse), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(RingDtypes, ForcedHits, ::testing::Values(DType::f32, DType::bf16, DType::f16),
                         [](const auto& i) { return std::string(macattn::dtype_name(i.param)); });

// Slots of positions that do not exist yet (t < W) are never candidates.
TEST(MacRules, OnlyPositionsBeforeTAreCandidates) {
  fx::Sim sim(one_step(2, 1, 16, 16, 2, 0, 0.45f, {5}, DType::f32, 41));
  std::mt19937_64 rng(42);
  oracle::Ring r = random_ring(sim.p, 5, DType::f32, rng);
  aim(sim, 0, r, 5, 0, 10, 0.0, rng);  // slot 10 holds no position in [0, 5)
  aim(sim, 0, r, 5, 1, 3, 0.0, rng);   // position 3
  fx::write_ring(sim.states[0], r);
  ASSERT_TRUE(sim.step());
  EXPECT_EQ(hs(sim, 0, 0).hit, 0);
  EXPECT_GE(hs(sim, 0, 0).matched_position, 0);
  EXPECT_LT(hs(sim, 0, 0).matched_position, 5);
  EXPECT_GT(hs(sim, 0, 0).match_distance, 0.0f);
  EXPECT_EQ(hs(sim, 0, 1).hit, 1);
  EXPECT_EQ(hs(sim, 0, 1).matched_position, 3);
  EXPECT_EQ(hs(sim, 0, 1).match_distance, 0.0f);
}

// Exact ties go to the oldest position, not the lowest slot.
TEST(MacRules, TiesGoToOldestPosition) {
  // W = 8, t = 13: candidates 5..12 in slots 5,6,7,0,1,2,3,4.
  fx::Sim sim(one_step(4, 2, 8, 8, 2, 0, 0.45f, {13}, DType::f32, 51));
  std::mt19937_64 rng(52);
  oracle::Ring r = random_ring(sim.p, 13, DType::f32, rng);
  auto copy_row = [&](int h, std::int64_t from, std::int64_t to) {
    for (int i = 0; i < 8; ++i) r.qrow(to % 8, h)[i] = r.qrow(from % 8, h)[i];
  };
  copy_row(0, 6, 9);    // head 0: positions 6 (slot 6) and 9 (slot 1) identical -> 6
  copy_row(1, 8, 12);   // head 1: positions 8 (slot 0) and 12 (slot 4) -> 8
  copy_row(2, 5, 7);    // head 2: three-way tie 5, 7, 11 -> 5
  copy_row(2, 5, 11);
  copy_row(3, 10, 12);  // head 3: tie 10 and 12, but lring of 10 is -inf -> matched 10, miss
  r.lse(10 % 8, 3) = -kInf;
  aim(sim, 0, r, 13, 0, 9, 0.1, rng);
  aim(sim, 0, r, 13, 1, 12, 0.1, rng);
  aim(sim, 0, r, 13, 2, 11, 0.1, rng);
  aim(sim, 0, r, 13, 3, 12, 0.1, rng);
  fx::write_ring(sim.states[0], r);
  ASSERT_TRUE(sim.step());
  EXPECT_EQ(hs(sim, 0, 0).matched_position, 6);
  EXPECT_EQ(hs(sim, 0, 1).matched_position, 8);
  EXPECT_EQ(hs(sim, 0, 2).matched_position, 5);
  EXPECT_EQ(hs(sim, 0, 3).matched_position, 10);
  EXPECT_EQ(hs(sim, 0, 0).hit, 1);
  EXPECT_EQ(hs(sim, 0, 1).hit, 1);
  EXPECT_EQ(hs(sim, 0, 2).hit, 1);
  EXPECT_EQ(hs(sim, 0, 3).hit, 0);
  EXPECT_EQ(hs(sim, 0, 0).band_len, (13 + 1 - 2) - (6 + 1 - 2));
}

struct ThrCase {
  DType ring, q;
};
void PrintTo(const ThrCase& c, std::ostream* os) {
  *os << "ring " << macattn::dtype_name(c.ring) << " q " << macattn::dtype_name(c.q);
}
class StrictThreshold : public ::testing::TestWithParam<ThrCase> {};

// D = 8, tau = 0.5: thr = 4 exactly; d = 4 misses, anything below hits.
TEST_P(StrictThreshold, DistanceEqualToThresholdMisses) {
  auto sp = one_step(4, 1, 8, 8, 2, 0, 0.5f, {20}, GetParam().ring, 61);
  sp.q_dtype = GetParam().q;
  EXPECT_EQ(sp.cfg.threshold(8), 4.0f);
  fx::Sim sim(sp);
  std::mt19937_64 rng(62);
  oracle::Ring r = random_ring(sim.p, 20, GetParam().ring, rng);
  const std::vector<float> x{10, 11, 12, 13, 14, 15, 16, 17};  // far from the N(0, 9) rows
  for (int h = 0; h < 4; ++h) std::copy(x.begin(), x.end(), r.qrow(17 % 8, h));
  const float below = 1.0f - 1.0f / 16.0f;  // 10.9375 etc. are exact in bf16
  const float above = 1.0f + 1.0f / 16.0f;
  const std::vector<std::vector<float>> delta{{1, 1, 1, 1, 0, 0, 0, 0},          // d = 4: miss
                                              {1, 1, 1, below, 0, 0, 0, 0},      // d < 4: hit
                                              {1, 1, 1, above, 0, 0, 0, 0},      // d > 4: miss
                                              {0, 0, 0, 0, 0, 0, 0, 2}};         // d = 4: miss
  for (int h = 0; h < 4; ++h) {
    std::vector<float> row(8);
    for (int i = 0; i < 8; ++i) row[static_cast<std::size_t>(i)] = x[static_cast<std::size_t>(i)] + delta[static_cast<std::size_t>(h)][static_cast<std::size_t>(i)];
    sim.set_pre(0, 20, h, row);
  }
  fx::write_ring(sim.states[0], r);
  ASSERT_TRUE(sim.step());
  const float want_d[4] = {4.0f, 3.0f + below * below, 3.0f + above * above, 4.0f};
  const int want_hit[4] = {0, 1, 0, 0};
  for (int h = 0; h < 4; ++h) {
    EXPECT_EQ(hs(sim, 0, h).matched_position, 17) << h;
    EXPECT_EQ(hs(sim, 0, h).match_distance, want_d[h]) << h;
    EXPECT_EQ(hs(sim, 0, h).hit, want_hit[h]) << h;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, StrictThreshold,
                         ::testing::Values(ThrCase{DType::f32, DType::f32}, ThrCase{DType::bf16, DType::f32},
                                           ThrCase{DType::bf16, DType::bf16}, ThrCase{DType::f32, DType::f16}),
                         [](const auto& i) {
                           return std::string("ring_") + macattn::dtype_name(i.param.ring) + "_q_" +
                                  macattn::dtype_name(i.param.q);
                         });

TEST(MacRules, ThresholdIsComputedInFp32) {
  macattn::MacConfig c;
  for (float tau : {0.0f, 0.45f, 0.75f, 0.5f, 0.999f})
    for (int d : {1, 8, 64, 128}) {
      c.tau = tau;
      const float one = 1.0f - tau;
      EXPECT_FLOAT_EQ(c.threshold(d), 2.0f * static_cast<float>(d) * one * one) << tau << " " << d;
    }
  c.tau = 0.0f;
  EXPECT_EQ(c.threshold(16), 32.0f);
  c.tau = 0.75f;
  EXPECT_EQ(c.threshold(128), 16.0f);
}

// Front sinks: a hit adds the sink [0, min(F, E(m))); E(m) < F forbids the hit.
TEST(MacRules, FrontSinksAndTheEmGreaterOrEqualFRule) {
  // F = 3, S = 4, W = 8. Seq 0 at t = 50 (new_end 47), seq 1 at t = 10 (new_end 7),
  // seq 2 at t = 4 (new_end 1 < F).
  fx::Sim sim(one_step(4, 2, 16, 8, 4, 3, 0.45f, {50, 10, 4}, DType::f32, 71));
  std::mt19937_64 rng(72);
  oracle::Ring r0 = random_ring(sim.p, 50, DType::f32, rng), r1 = random_ring(sim.p, 10, DType::f32, rng),
               r2 = random_ring(sim.p, 4, DType::f32, rng);
  aim(sim, 0, r0, 50, 0, 45, 0.05, rng);  // E = 42 >= F: hit, band 5
  aim(sim, 0, r0, 50, 1, 49, 0.05, rng);  // E = 46: hit, band 1
  // head 2, 3 of seq 0: far queries, miss (exact)
  aim(sim, 1, r1, 10, 0, 5, 0.05, rng);  // E = 2 < F with a finite lse: miss
  aim(sim, 1, r1, 10, 1, 6, 0.05, rng);  // E = 3 = F: hit, band 4, sink [0, 3)
  aim(sim, 1, r1, 10, 2, 9, 0.05, rng);  // E = 6: hit, band 1
  aim(sim, 2, r2, 4, 0, 3, 0.05, rng);   // E = 0 < F: miss; entry [1, 1) empty
  fx::write_ring(sim.states[0], r0);
  fx::write_ring(sim.states[1], r1);
  fx::write_ring(sim.states[2], r2);
  ASSERT_TRUE(sim.step());
  EXPECT_EQ(hs(sim, 0, 0).hit, 1);
  EXPECT_EQ(hs(sim, 0, 0).band_len, 5);
  EXPECT_EQ(hs(sim, 0, 0).kv_tokens_read, 5 + 4 + 3);
  EXPECT_EQ(hs(sim, 0, 1).hit, 1);
  EXPECT_EQ(hs(sim, 0, 2).hit, 0);
  EXPECT_EQ(hs(sim, 0, 2).kv_tokens_read, 51);
  EXPECT_EQ(hs(sim, 1, 0).hit, 0);
  EXPECT_EQ(hs(sim, 1, 0).matched_position, 5);
  EXPECT_EQ(hs(sim, 1, 1).hit, 1);
  EXPECT_EQ(hs(sim, 1, 1).band_len, 4);
  EXPECT_EQ(hs(sim, 1, 1).kv_tokens_read, 4 + 4 + 3);
  EXPECT_EQ(hs(sim, 1, 2).hit, 1);
  EXPECT_EQ(hs(sim, 2, 0).hit, 0);
  EXPECT_EQ(hs(sim, 2, 0).matched_position, 3);
  // The written entry of a miss excludes the sinks: [min(F, new_end), new_end).
  EXPECT_EQ(sim.states[2].lse_at(4 % 8, 0), -kInf);  // [1, 1): empty
  // Miss heads are exact attention.
  for (int b = 0; b < 3; ++b) {
    const std::int64_t t = sim.lens()[static_cast<std::size_t>(b)] - 2;
    const auto ex = oracle::exact(sim.p, sim.kv.seqs[static_cast<std::size_t>(b)], t + 1, sim.q[static_cast<std::size_t>(b)].post_row(t));
    for (int h = 0; h < 4; ++h) {
      if (hs(sim, b, h).hit) continue;
      EXPECT_NEAR(sim.lse[static_cast<std::size_t>(b * 4 + h)], ex[static_cast<std::size_t>(h)].lse, 1e-4) << b << " " << h;
      for (int i = 0; i < 16; ++i)
        EXPECT_NEAR(sim.out.get(static_cast<std::size_t>((b * 4 + h) * 16 + i)), ex[static_cast<std::size_t>(h)].o[static_cast<std::size_t>(i)], 2e-5);
    }
  }
}

// GQA: heads decide alone, groups count as all-hit only if every head hits.
TEST(MacRules, GqaGroupsWithMixedHitsCountTokensPerGroup) {
  // Hq = 8, Hkv = 2 (groups of 4), W = 16, S = 4, F = 2.
  fx::Sim sim(one_step(8, 2, 16, 16, 4, 2, 0.45f, {60, 33}, DType::f32, 81));
  std::mt19937_64 rng(82);
  oracle::Ring r0 = random_ring(sim.p, 60, DType::f32, rng), r1 = random_ring(sim.p, 33, DType::f32, rng);
  const std::int64_t m0[8] = {59, 55, 50, 45, 58, 57, 56, -1};  // seq 0: group 0 all hit; group 1 one miss
  const std::int64_t m1[8] = {-1, -1, -1, -1, 32, 31, 30, 20};  // seq 1: group 0 all miss; group 1 all hit
  for (int h = 0; h < 8; ++h) {
    if (m0[h] >= 0) aim(sim, 0, r0, 60, h, m0[h], 0.05, rng);
    if (m1[h] >= 0) aim(sim, 1, r1, 33, h, m1[h], 0.05, rng);
  }
  fx::write_ring(sim.states[0], r0);
  fx::write_ring(sim.states[1], r1);
  ASSERT_TRUE(sim.step());
  for (int h = 0; h < 8; ++h) {
    EXPECT_EQ(hs(sim, 0, h).hit, m0[h] >= 0 ? 1 : 0) << h;
    EXPECT_EQ(hs(sim, 1, h).hit, m1[h] >= 0 ? 1 : 0) << h;
  }
  EXPECT_EQ(hs(sim, 0, 0).kv_tokens_read, 1 + 4 + 2);  // band [56, 57), tail [57, 61), sinks
  EXPECT_EQ(sim.ss.heads, 16);
  EXPECT_EQ(sim.ss.heads_hit, 11);
  EXPECT_EQ(sim.ss.groups, 4);
  EXPECT_EQ(sim.ss.groups_all_hit, 2);
  // seq 0 group 0: min E = 42 -> (61 - 42) + 2 = 21; group 1: 61;
  // seq 1 group 0: 34; group 1: min E = 17 -> (34 - 17) + 2 = 19.
  EXPECT_EQ(sim.ss.kv_tokens_read, 21 + 61 + 34 + 19);
  EXPECT_EQ(sim.ss.kv_tokens_exact, 2 * 61 + 2 * 34);
  EXPECT_DOUBLE_EQ(sim.ss.hit_rate(), 11.0 / 16.0);
}

// A ring that is not ready, or at another position than t, is wiped: every head misses.
TEST(MacRules, StaleRingIsWipedAndAllHeadsMiss) {
  fx::Sim sim(one_step(4, 2, 16, 16, 4, 0, 0.45f, {30, 30, 30}, DType::f32, 91));
  std::mt19937_64 rng(92);
  oracle::Ring good = random_ring(sim.p, 30, DType::f32, rng);
  oracle::Ring wrong_pos = good, not_ready = good;
  wrong_pos.position = 29;
  not_ready.ready = false;
  for (int h = 0; h < 4; ++h)
    for (int b = 0; b < 3; ++b) aim(sim, b, good, 30, h, 28, 0.0, rng);
  fx::write_ring(sim.states[0], good);
  fx::write_ring(sim.states[1], wrong_pos);
  fx::write_ring(sim.states[2], not_ready);
  ASSERT_TRUE(sim.step());
  EXPECT_EQ(sim.ss.ring_wipes, 2);
  EXPECT_EQ(sim.ss.heads_hit, 4);
  for (int h = 0; h < 4; ++h) {
    EXPECT_EQ(hs(sim, 0, h).hit, 1);
    EXPECT_EQ(hs(sim, 1, h).hit, 0);
    EXPECT_EQ(hs(sim, 2, h).hit, 0);
  }
  for (int b = 1; b < 3; ++b) {
    EXPECT_EQ(sim.states[static_cast<std::size_t>(b)].position(), 31);
    EXPECT_TRUE(sim.states[static_cast<std::size_t>(b)].ready());
    for (int s = 0; s < 16; ++s)
      for (int h = 0; h < 4; ++h) {
        if (s == 30 % 16) {
          EXPECT_TRUE(std::isfinite(sim.states[static_cast<std::size_t>(b)].lse_at(s, h)));
        } else {
          EXPECT_EQ(sim.states[static_cast<std::size_t>(b)].lse_at(s, h), -kInf);
          EXPECT_EQ(sim.states[static_cast<std::size_t>(b)].q_at(s, h, 0), 0.0f);
        }
      }
  }
}

}  // namespace
