// tests/test_mac_decode.cpp: multi-step MAC decode runs against the fp64 oracle.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <ostream>
#include <string>
#include <vector>

#include "sim.hpp"

namespace {

using macattn::DType;

struct SimCase {
  const char* name;
  int hq, hkv, d;
  int w, s, f;
  std::int64_t min_context;
  std::vector<std::int64_t> start_len;
  int steps;
  DType kv, q, ring;
  bool prefill;
};

void PrintTo(const SimCase& c, std::ostream* os) { *os << c.name; }

fx::SimSpec spec_of(const SimCase& c, std::uint64_t seed) {
  fx::SimSpec sp;
  sp.shape = {c.hq, c.hkv, c.d, 0.0f};
  sp.cfg.window = c.w;
  sp.cfg.rect_offset = c.s;
  sp.cfg.front_sinks = c.f;
  sp.cfg.tau = 0.45f;
  sp.cfg.min_context = c.min_context;
  sp.start_len = c.start_len;
  sp.steps = c.steps;
  sp.kv_dtype = c.kv;
  sp.q_dtype = c.q;
  sp.ring_dtype = c.ring;
  sp.prefill = c.prefill;
  sp.seed = seed;
  return sp;
}

class MacDecodeSim : public ::testing::TestWithParam<SimCase> {};

// Every step: decisions, stats, outputs and the whole ring equal the oracle's (the oracle
// re-reads the ring before each step, so reduced-precision rings are compared step by step).
TEST_P(MacDecodeSim, EveryStepMatchesOracle) {
  const SimCase& c = GetParam();
  fx::Sim sim(spec_of(c, fx::seed_of(c.name)));
  for (int i = 0; i < c.steps; ++i) ASSERT_TRUE(sim.step()) << "step " << i;
  EXPECT_GT(sim.heads_hit, 0);
  EXPECT_GT(sim.heads_missed, 0);
  EXPECT_EQ(sim.wipes, c.prefill ? 0 : static_cast<std::int64_t>(c.start_len.size()));
}

INSTANTIATE_TEST_SUITE_P(
    Configs, MacDecodeSim,
    ::testing::Values(
        SimCase{"gqa2_w8_s4", 4, 2, 16, 8, 4, 0, 0, {1, 20, 50}, 40, DType::f32, DType::f32, DType::f32, false},
        SimCase{"gqa1_w4_s1", 4, 4, 8, 4, 1, 0, 0, {2, 9}, 30, DType::f32, DType::f32, DType::f32, false},
        SimCase{"gqa4_d64_sinks_bf16ring", 8, 2, 64, 16, 8, 2, 3, {2, 70}, 30, DType::f32, DType::f32,
                DType::bf16, false},
        SimCase{"gqa4_w32_sinks_prefill", 4, 1, 16, 32, 16, 4, 0, {10, 40}, 60, DType::f32, DType::f32,
                DType::f32, true},
        SimCase{"bf16_everything", 4, 2, 16, 8, 3, 0, 0, {5, 30}, 30, DType::bf16, DType::bf16, DType::bf16, true},
        SimCase{"f16_kv_q_bf16_ring", 4, 2, 16, 8, 3, 1, 0, {5, 30}, 30, DType::f16, DType::f16, DType::bf16, false},
        SimCase{"f16_kv_f32_q", 4, 2, 16, 8, 3, 0, 2, {12}, 30, DType::f16, DType::f32, DType::f32, true},
        SimCase{"f32_kv_bf16_q_f32_ring", 4, 2, 16, 16, 5, 0, 0, {7, 3}, 30, DType::f32, DType::bf16, DType::f32,
                false},
        SimCase{"bf16_kv_f16_q_f16_ring", 4, 2, 16, 8, 3, 0, 0, {20}, 25, DType::bf16, DType::f16, DType::f16,
                false}),
    [](const auto& i) { return std::string(i.param.name); });

// The oracle keeps its own fp32 ring through many wrap-arounds of the window.
TEST(MacDecode, IndependentOracleRingOverManyWraps) {
  fx::SimSpec sp = spec_of(SimCase{"indep", 4, 2, 16, 8, 3, 1, 0, {1, 30}, 150, DType::f32, DType::f32, DType::f32,
                                   false},
                           7);
  sp.sync = false;
  fx::Sim sim(sp);
  for (int i = 0; i < sp.steps; ++i) ASSERT_TRUE(sim.step()) << "step " << i;
  EXPECT_GT(sim.heads_hit, 100);
  EXPECT_GT(sim.heads_missed, 100);
}

// All-miss MAC is exact attention: min_context out of reach, or tau = 0 with far queries.
TEST(MacDecode, AllMissEqualsExactAttention) {
  for (int variant = 0; variant < 2; ++variant) {
    SCOPED_TRACE(variant == 0 ? "min_context" : "tau0");
    fx::SimSpec sp = spec_of(SimCase{"allmiss", 8, 2, 16, 8, 3, variant, 2048, {1, 40, 90}, 25, DType::f32,
                                     DType::f32, DType::f32, false},
                             11 + variant);
    if (variant == 1) {
      sp.cfg.min_context = 0;
      sp.cfg.tau = 0.0f;      // thr = 2D = 32
      sp.jump_prob = 1.0;     // independent N(0, 25) rows: d ~ 50 * chi2(D), below 2D with p < 1e-8
      sp.jump = 5.0;
    }
    fx::Sim sim(sp);
    for (int i = 0; i < sp.steps; ++i) {
      const auto lens = sim.lens();
      ASSERT_TRUE(sim.step()) << "step " << i;
      EXPECT_EQ(sim.ss.heads_hit, 0);
      EXPECT_EQ(sim.ss.kv_tokens_read, sim.ss.kv_tokens_exact);
      // Against exact attention directly (not through the MAC oracle) and against exact_decode.
      std::vector<oracle::State> ex;
      for (int b = 0; b < 3; ++b) {
        auto r = oracle::exact(sim.p, sim.kv.seqs[static_cast<std::size_t>(b)], lens[static_cast<std::size_t>(b)],
                               sim.q[static_cast<std::size_t>(b)].post_row(lens[static_cast<std::size_t>(b)] - 1));
        ex.insert(ex.end(), r.begin(), r.end());
      }
      EXPECT_TRUE(fx::outputs_match(sim.out, sim.lse, ex, fx::tol_for(DType::f32)));
      std::vector<std::int64_t> pos;
      for (auto l : lens) pos.push_back(l - 1);
      const fx::Buf qp = fx::gather(sim.q, pos, true);
      fx::Buf out(DType::f32, qp.size());
      std::vector<float> lse(qp.size() / 16);
      macattn::exact_decode(sp.shape, sim.kv.view(lens), qp.ctensor(), out.tensor(), lse.data());
      for (std::size_t k = 0; k < out.size(); ++k) ASSERT_NEAR(out.get(k), sim.out.get(k), 1e-5) << k;
      for (std::size_t k = 0; k < lse.size(); ++k) ASSERT_NEAR(lse[k], sim.lse[k], 1e-5 * (1 + std::fabs(lse[k])));
    }
    EXPECT_EQ(sim.heads_hit, 0);
  }
}

// The row written at t: qring = q_pre(t) (rounded to the ring dtype), oring/lring = entry(t),
// for hit and miss heads alike, in slot t mod W, and no other slot changes.
TEST(MacDecode, RingRowWrittenEachStepForHitsAndMisses) {
  for (DType ring : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(macattn::dtype_name(ring));
    fx::Sim sim(spec_of(SimCase{"rows", 4, 2, 16, 8, 3, 0, 0, {10}, 40, DType::f32, DType::f32, ring, true}, 21));
    std::int64_t hit_rows = 0, miss_rows = 0;
    for (int i = 0; i < 40; ++i) {
      const std::int64_t t = sim.lens()[0] - 1;
      const oracle::Ring before = fx::ring_from_state(sim.states[0]);
      ASSERT_TRUE(sim.step());
      const auto& st = sim.states[0];
      for (int h = 0; h < 4; ++h) {
        const auto& e = sim.ref[0].heads[static_cast<std::size_t>(h)];
        (e.hit ? hit_rows : miss_rows) += 1;
        const std::int32_t slot = static_cast<std::int32_t>(t % 8);
        for (int i2 = 0; i2 < 16; ++i2)
          ASSERT_EQ(st.q_at(slot, h, i2), oracle::round_to(ring, sim.q[0].pre_row(t)[h * 16 + i2]));
        ASSERT_NEAR(st.lse_at(slot, h), e.entry.lse, 2e-5 * (1 + std::fabs(e.entry.lse)));
        for (int i2 = 0; i2 < 16; ++i2)
          ASSERT_NEAR(st.o_at(slot, h, i2), e.entry.o[static_cast<std::size_t>(i2)],
                      fx::tol_for(ring).rtol * std::fabs(e.entry.o[static_cast<std::size_t>(i2)]) + 2e-5);
        for (int s = 0; s < 8; ++s) {
          if (s == slot) continue;
          ASSERT_EQ(st.lse_at(s, h), before.lse(s, h));
          ASSERT_EQ(st.q_at(s, h, 3), before.qrow(s, h)[3]);
          ASSERT_EQ(st.o_at(s, h, 5), before.orow(s, h)[5]);
        }
      }
      EXPECT_EQ(st.position(), t + 1);
    }
    EXPECT_GT(hit_rows, 10);
    EXPECT_GT(miss_rows, 10);
  }
}

// Wrap-around: a match with the oldest candidate t - W, whose slot this very step overwrites;
// its band is W, the largest allowed.
TEST(MacDecode, WrapAroundMatchesOldestCandidateInTheSlotBeingOverwritten) {
  fx::SimSpec sp = spec_of(SimCase{"wrap", 2, 1, 16, 4, 2, 0, 0, {1}, 30, DType::f32, DType::f32, DType::f32, false}, 33);
  sp.jump_prob = 1.0;  // every query far from every other
  fx::Sim sim(sp);
  const std::int64_t t_star = 22;  // > 3W
  std::vector<float> row(16);
  for (int i = 0; i < 16; ++i) row[static_cast<std::size_t>(i)] = sim.q[0].pre_row(t_star - 4)[i];  // head 0
  sim.set_pre(0, t_star, 0, row);
  for (int i = 0; i < 30; ++i) {
    const std::int64_t t = sim.lens()[0] - 1;
    ASSERT_TRUE(sim.step()) << t;
    if (t == t_star) {
      EXPECT_EQ(sim.hs[0].hit, 1);
      EXPECT_EQ(sim.hs[0].matched_position, t_star - 4);
      EXPECT_EQ(sim.hs[0].band_len, 4);
      EXPECT_EQ(sim.hs[1].hit, 0);
    } else {
      EXPECT_EQ(sim.ss.heads_hit, 0) << t;
    }
    // Position p lives in slot p mod W: the slot of t holds q_pre(t).
    EXPECT_EQ(sim.states[0].q_at(static_cast<std::int32_t>(t % 4), 1, 7), sim.q[0].pre_row(t)[16 + 7]);
  }
}

// Before min_context no scan happens (matched -1, distance +inf) but rows are written;
// from t = min_context on, matching starts.
TEST(MacDecode, MinContextGatesMatching) {
  fx::SimSpec sp = spec_of(SimCase{"minctx", 2, 1, 8, 8, 2, 0, 10, {1}, 14, DType::f32, DType::f32, DType::f32, false}, 44);
  sp.drift = 0.0;
  sp.jump_prob = 0.0;  // the same query every step: every candidate ties
  fx::Sim sim(sp);
  for (int i = 0; i < 14; ++i) {
    const std::int64_t t = sim.lens()[0] - 1;
    ASSERT_TRUE(sim.step()) << t;
    for (int h = 0; h < 2; ++h) {
      const auto& s = sim.hs[static_cast<std::size_t>(h)];
      if (t < 10) {
        EXPECT_EQ(s.matched_position, -1) << t;
        EXPECT_EQ(s.match_distance, std::numeric_limits<float>::infinity()) << t;
        EXPECT_EQ(s.hit, 0) << t;
      } else {
        EXPECT_EQ(s.matched_position, t - 8) << t;  // the oldest of equal candidates
        EXPECT_EQ(s.match_distance, 0.0f) << t;
        EXPECT_EQ(s.hit, 1) << t;  // E(t - 8) = t - 9 > 0
        EXPECT_EQ(s.band_len, 8) << t;
      }
    }
    EXPECT_TRUE(std::isfinite(sim.states[0].lse_at(static_cast<std::int32_t>(t % 8), 0)) || t < 2) << t;
  }
}

// t + 1 <= S: every entry is empty (lring -inf, oring 0), no hit is possible, out is exact.
TEST(MacDecode, ShortContextEntriesAreEmptyAndOutputIsExact) {
  fx::SimSpec sp = spec_of(SimCase{"short", 4, 2, 8, 8, 20, 0, 0, {1}, 26, DType::f32, DType::f32, DType::f32, false}, 55);
  sp.drift = 0.0;
  sp.jump_prob = 0.0;
  fx::Sim sim(sp);
  for (int i = 0; i < 26; ++i) {
    const std::int64_t t = sim.lens()[0] - 1;
    ASSERT_TRUE(sim.step()) << t;
    EXPECT_EQ(sim.ss.heads_hit, 0) << t;
    for (int h = 0; h < 4; ++h) {
      EXPECT_EQ(sim.hs[static_cast<std::size_t>(h)].matched_position, t == 0 ? -1 : std::max<std::int64_t>(0, t - 8));
      if (t + 1 <= 20) {
        EXPECT_EQ(sim.states[0].lse_at(static_cast<std::int32_t>(t % 8), h), -std::numeric_limits<float>::infinity());
        EXPECT_EQ(sim.states[0].o_at(static_cast<std::int32_t>(t % 8), h, 0), 0.0f);
      }
    }
    const auto ex = oracle::exact(sim.p, sim.kv.seqs[0], t + 1, sim.q[0].post_row(t));
    EXPECT_TRUE(fx::outputs_match(sim.out, sim.lse, ex, fx::tol_for(DType::f32))) << t;
  }
}

// Ring staleness across steps: invalidate(), a skipped step, reset().
TEST(MacDecode, InvalidatedOrSkippedRingIsWipedThenRefills) {
  fx::SimSpec sp = spec_of(SimCase{"stale", 4, 2, 16, 8, 3, 0, 0, {1, 5}, 40, DType::f32, DType::f32, DType::bf16, false}, 66);
  sp.spare = 4;
  fx::Sim sim(sp);
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(sim.step());
  sim.states[1].invalidate();
  EXPECT_FALSE(sim.states[1].ready());
  ASSERT_TRUE(sim.step());
  EXPECT_EQ(sim.ss.ring_wipes, 1);
  for (int h = 0; h < 4; ++h) EXPECT_EQ(sim.hs[static_cast<std::size_t>(4 + h)].hit, 0);
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(sim.step());
  sim.advance(1);  // a token decoded outside MAC: both rings are one position behind
  ASSERT_TRUE(sim.step());
  EXPECT_EQ(sim.ss.ring_wipes, 2);
  EXPECT_EQ(sim.ss.heads_hit, 0);
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(sim.step());
  EXPECT_GT(sim.ss.heads_hit + sim.heads_hit, 0);
  sim.states[0].reset();
  EXPECT_EQ(sim.states[0].position(), 0);
  EXPECT_FALSE(sim.states[0].ready());
  EXPECT_EQ(sim.states[0].lse_at(3, 2), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(sim.states[0].q_at(3, 2, 1), 0.0f);
  ASSERT_TRUE(sim.step());
  EXPECT_EQ(sim.ss.ring_wipes, 1);
}

// lse, head_stats and step_stats are optional and change nothing else; step_stats is
// overwritten, not accumulated.
TEST(MacDecode, OptionalOutputsMayBeNullAndStepStatsAreOverwritten) {
  fx::Sim sim(spec_of(SimCase{"optional", 4, 2, 16, 8, 3, 0, 0, {20, 9}, 6, DType::f32, DType::f32, DType::bf16, true}, 77));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(sim.step());
  std::vector<macattn::MacState> copy = sim.states;  // the rings before the next step
  const auto lens = sim.lens();
  std::vector<std::int64_t> pos;
  for (auto l : lens) pos.push_back(l - 1);
  const fx::Buf qp = fx::gather(sim.q, pos, true), qr = fx::gather(sim.q, pos, false);
  fx::Buf out(DType::f32, qp.size());
  auto v = fx::views(copy);
  macattn::mac_decode(sim.spec.shape, sim.spec.cfg, sim.kv.view(lens), qp.ctensor(), qr.ctensor(), v, out.tensor(),
                      nullptr, nullptr, nullptr);
  ASSERT_TRUE(sim.step());  // the same step with every optional output
  EXPECT_EQ(out.raw, sim.out.raw);
  for (std::size_t b = 0; b < copy.size(); ++b) EXPECT_TRUE(fx::ring_matches(copy[b], fx::ring_from_state(sim.states[b])));
  // Run the copy's next step into a StepStats holding garbage: the result is this step's alone.
  macattn::StepStats ss;
  ss.heads = 1000;
  ss.heads_hit = 999;
  ss.groups_all_hit = 77;
  ss.kv_tokens_read = 123456;
  ss.ring_wipes = 5;
  std::vector<std::int64_t> lens2 = sim.lens(), pos2;
  for (auto l : lens2) pos2.push_back(l - 1);
  const fx::Buf qp2 = fx::gather(sim.q, pos2, true), qr2 = fx::gather(sim.q, pos2, false);
  macattn::mac_decode(sim.spec.shape, sim.spec.cfg, sim.kv.view(lens2), qp2.ctensor(), qr2.ctensor(), v, out.tensor(),
                      nullptr, nullptr, &ss);
  ASSERT_TRUE(sim.step());
  EXPECT_EQ(ss.to_string(), sim.ss.to_string());
  EXPECT_EQ(ss.heads, 8);
  EXPECT_EQ(ss.ring_wipes, 0);
}

TEST(MacState, ConstructionCopyAndMove) {
  macattn::AttentionShape shape{4, 2, 8, 0.0f};
  macattn::MacConfig cfg;
  cfg.window = 5;
  macattn::MacState a(shape, cfg, DType::bf16);
  EXPECT_EQ(a.position(), 0);
  EXPECT_FALSE(a.ready());
  EXPECT_EQ(a.window(), 5);
  EXPECT_EQ(a.num_q_heads(), 4);
  EXPECT_EQ(a.head_dim(), 8);
  EXPECT_EQ(a.ring_dtype(), DType::bf16);
  EXPECT_EQ(a.bytes(), 2u * 5 * 4 * 8 * 2 + 5 * 4 * 4);
  EXPECT_EQ(macattn::MacState(shape, cfg, DType::f32).bytes(), 2u * 5 * 4 * 8 * 4 + 5 * 4 * 4);
  for (int s = 0; s < 5; ++s)
    for (int h = 0; h < 4; ++h) EXPECT_EQ(a.lse_at(s, h), -std::numeric_limits<float>::infinity());
  macattn::MacStateView v = a.view();
  EXPECT_EQ(v.window, 5);
  EXPECT_EQ(v.num_q_heads, 4);
  EXPECT_EQ(v.head_dim, 8);
  EXPECT_EQ(v.ring_dtype, DType::bf16);
  static_cast<std::uint16_t*>(v.qring)[(2 * 4 + 1) * 8 + 3] = macattn::float_to_bf16(1.5f);
  v.lring[2 * 4 + 1] = 0.25f;
  *v.position = 7;
  *v.ready = 1;
  EXPECT_EQ(a.q_at(2, 1, 3), 1.5f);
  EXPECT_EQ(a.lse_at(2, 1), 0.25f);
  EXPECT_EQ(a.position(), 7);
  EXPECT_TRUE(a.ready());
  macattn::MacState b(a);  // deep copy
  EXPECT_EQ(b.q_at(2, 1, 3), 1.5f);
  EXPECT_EQ(b.position(), 7);
  b.view().lring[2 * 4 + 1] = 1.0f;
  EXPECT_EQ(a.lse_at(2, 1), 0.25f);
  EXPECT_NE(b.view().qring, a.view().qring);
  macattn::MacState c(std::move(b));
  EXPECT_EQ(c.lse_at(2, 1), 1.0f);
  EXPECT_EQ(c.view().lring[2 * 4 + 1], 1.0f);  // the view follows the moved storage
  a = c;
  EXPECT_EQ(a.lse_at(2, 1), 1.0f);
  EXPECT_NE(a.view().lring, c.view().lring);
  a.invalidate();
  EXPECT_FALSE(a.ready());
  EXPECT_EQ(a.lse_at(2, 1), 1.0f);  // invalidate marks, the next step wipes
  macattn::mac_state_wipe(a.view(), 42);
  EXPECT_EQ(a.position(), 42);
  EXPECT_TRUE(a.ready());
  EXPECT_EQ(a.lse_at(2, 1), -std::numeric_limits<float>::infinity());
  EXPECT_EQ(a.q_at(2, 1, 3), 0.0f);
}

TEST(StepStats, AddAndHitRate) {
  macattn::StepStats a, b;
  EXPECT_EQ(a.hit_rate(), 0.0);
  a.heads = 8;
  a.heads_hit = 2;
  a.groups = 2;
  a.kv_tokens_read = 10;
  b.heads = 8;
  b.heads_hit = 6;
  b.groups = 2;
  b.groups_all_hit = 1;
  b.kv_tokens_read = 5;
  b.kv_tokens_exact = 20;
  b.ring_wipes = 1;
  a.add(b);
  EXPECT_EQ(a.heads, 16);
  EXPECT_EQ(a.heads_hit, 8);
  EXPECT_EQ(a.groups, 4);
  EXPECT_EQ(a.groups_all_hit, 1);
  EXPECT_EQ(a.kv_tokens_read, 15);
  EXPECT_EQ(a.kv_tokens_exact, 20);
  EXPECT_EQ(a.ring_wipes, 1);
  EXPECT_DOUBLE_EQ(a.hit_rate(), 0.5);
}

}  // namespace
