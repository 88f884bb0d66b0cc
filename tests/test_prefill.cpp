// tests/test_prefill.cpp: mac_prefill_init rows against directly computed prefix states.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "sim.hpp"

namespace {

using macattn::DType;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct PrefillCase {
  const char* name;
  int hq, hkv, d, w, s, f;
  DType kv, q, ring;
};

void PrintTo(const PrefillCase& c, std::ostream* os) { *os << c.name; }

class PrefillInit : public ::testing::TestWithParam<PrefillCase> {
 protected:
  void SetUp() override {
    const auto& c = GetParam();
    shape = {c.hq, c.hkv, c.d, 0.0f};
    cfg.window = c.w;
    cfg.rect_offset = c.s;
    cfg.front_sinks = c.f;
    cfg.min_context = 0;
    p = oracle::make_params(shape, cfg);
  }
  // Builds KV and query streams of lengths `full`.
  void make(const std::vector<std::int64_t>& full, std::uint64_t seed) {
    const auto& c = GetParam();
    std::mt19937_64 rng(seed);
    kv = fx::random_kv(c.hkv, c.d, c.kv, full, rng);
    q.clear();
    for (auto l : full) q.push_back(fx::drifting_queries(c.q, l, c.hq, c.d, rng, 0.3, 0.2, 3.0));
    states.clear();
    rings.clear();
    for (std::size_t b = 0; b < full.size(); ++b) {
      states.emplace_back(shape, cfg, c.ring);
      rings.emplace_back(c.w, c.hq, c.d, c.ring);
    }
  }
  // One prefill call: sequence b has seq_len P[b] and rows for [P[b] - n[b], P[b]).
  void call(const std::vector<std::int64_t>& P, const std::vector<std::int64_t>& n) {
    std::vector<std::int64_t> first;
    std::vector<std::int32_t> indptr{0};
    for (std::size_t b = 0; b < P.size(); ++b) {
      first.push_back(P[b] - n[b]);
      indptr.push_back(indptr.back() + static_cast<std::int32_t>(n[b]));
    }
    const fx::Buf qp = fx::gather_rows(q, first, n, true), qr = fx::gather_rows(q, first, n, false);
    auto v = fx::views(states);
    macattn::mac_prefill_init(shape, cfg, kv.view(P), qp.ctensor(), qr.ctensor(), indptr, v);
    for (std::size_t b = 0; b < P.size(); ++b)
      oracle::prefill(p, kv.seqs[b], P[b], n[b], q[b].post_row(first[b]), q[b].pre_row(first[b]), rings[b]);
  }
  void expect_rings() {
    for (std::size_t b = 0; b < states.size(); ++b) EXPECT_TRUE(fx::ring_matches(states[b], rings[b])) << "seq " << b;
  }

  macattn::AttentionShape shape;
  macattn::MacConfig cfg;
  oracle::Params p;
  fx::KVBatch kv;
  std::vector<fx::QStream> q;
  std::vector<macattn::MacState> states;
  std::vector<oracle::Ring> rings;
};

TEST_P(PrefillInit, FullPromptRowsEqualPrefixStates) {
  const std::vector<std::int64_t> P{50, 7, 130, 1};
  make(P, 1);
  call(P, P);
  expect_rings();
  const int w = GetParam().w;
  for (std::size_t b = 0; b < P.size(); ++b) {
    EXPECT_EQ(states[b].position(), P[b]);
    EXPECT_TRUE(states[b].ready());
  }
  // P = 7 < W: slots of positions that do not exist stay wiped.
  for (int s = 7; s < w; ++s) EXPECT_EQ(states[1].lse_at(s, 0), kNegInf) << s;
  // Position 129 is in slot 129 mod W with its own q_pre.
  EXPECT_EQ(states[2].q_at(129 % w, 1, 2), oracle::round_to(GetParam().ring, q[2].pre_row(129)[GetParam().d + 2]));
}

TEST_P(PrefillInit, FewerRowsThanWindowWipeTheRest) {
  const std::vector<std::int64_t> P{50, 30, 9};
  make(P, 2);
  call(P, {4, 0, 9});
  expect_rings();
  const int w = GetParam().w;
  for (std::int64_t pos = 50 - w; pos < 46; ++pos) EXPECT_EQ(states[0].lse_at(static_cast<std::int32_t>(pos % w), 1), kNegInf);
  EXPECT_TRUE(std::isfinite(states[0].lse_at(49 % w, 1)));
  for (int s = 0; s < w; ++s) EXPECT_EQ(states[1].lse_at(s, 0), kNegInf);
  EXPECT_EQ(states[1].position(), 30);
  EXPECT_TRUE(states[1].ready());
}

TEST_P(PrefillInit, ChunkedPrefillKeepsThePreviousChunkRows) {
  const std::vector<std::int64_t> P{60, 20, 33};
  make(P, 3);
  call({40, 12, 33}, {40, 12, 33});
  expect_rings();
  call(P, {20, 8, 0});  // rings are ready at P - n: the first chunk's rows stay
  expect_rings();
  // Same result as one call over the whole prompt.
  std::vector<macattn::MacState> chunked = states;
  std::vector<oracle::Ring> chunked_rings = rings;
  make(P, 3);
  call(P, P);
  for (std::size_t b = 0; b < P.size(); ++b) EXPECT_TRUE(fx::ring_matches(chunked[b], rings[b])) << b;
}

TEST_P(PrefillInit, MisalignedChunkWipesFirst) {
  const std::vector<std::int64_t> P{60, 20};
  make(P, 4);
  call({40, 20}, {40, 20});
  call(P, {10, 3});  // seq 0: ring at 40, rows start at 50; seq 1: ring at 20, rows start at 17
  expect_rings();
  const int w = GetParam().w;
  for (std::int64_t pos = std::max<std::int64_t>(0, 60 - w); pos < 50; ++pos)
    EXPECT_EQ(states[0].lse_at(static_cast<std::int32_t>(pos % w), 0), kNegInf) << pos;
}

INSTANTIATE_TEST_SUITE_P(
    Configs, PrefillInit,
    ::testing::Values(PrefillCase{"w16_s5", 4, 2, 16, 16, 5, 0, DType::f32, DType::f32, DType::f32},
                      PrefillCase{"w16_s5_sinks3", 4, 2, 16, 16, 5, 3, DType::f32, DType::f32, DType::f32},
                      PrefillCase{"w8_s1_bf16", 4, 1, 8, 8, 1, 0, DType::bf16, DType::bf16, DType::bf16},
                      PrefillCase{"w32_s20_f16_sinks", 8, 2, 64, 32, 20, 2, DType::f16, DType::f32, DType::bf16}),
    [](const auto& i) { return std::string(i.param.name); });

// Decode right after prefill: a query equal to an earlier prompt query hits that row.
TEST(PrefillThenDecode, RepeatedQueryHitsPrefillRow) {
  fx::SimSpec sp;
  sp.shape = {4, 2, 16, 0.0f};
  sp.cfg.window = 16;
  sp.cfg.rect_offset = 4;
  sp.cfg.min_context = 0;
  sp.start_len = {41, 25};  // prompt 40 and 24 tokens, decode at t = 40 and 24
  sp.steps = 3;
  sp.jump_prob = 1.0;
  sp.prefill = true;
  sp.seed = 5;
  fx::Sim sim(sp);
  for (int h = 0; h < 4; ++h) {
    std::vector<float> row(16);
    for (int i = 0; i < 16; ++i) row[static_cast<std::size_t>(i)] = sim.q[0].pre_row(40 - 3 - h)[h * 16 + i];
    sim.set_pre(0, 40, h, row);  // head h of seq 0 repeats position 37 - h
  }
  ASSERT_TRUE(sim.step());
  EXPECT_EQ(sim.ss.ring_wipes, 0);
  for (int h = 0; h < 4; ++h) {
    EXPECT_EQ(sim.hs[static_cast<std::size_t>(h)].hit, 1) << h;
    EXPECT_EQ(sim.hs[static_cast<std::size_t>(h)].matched_position, 37 - h) << h;
    EXPECT_EQ(sim.hs[static_cast<std::size_t>(h)].band_len, 3 + h) << h;
    EXPECT_EQ(sim.hs[static_cast<std::size_t>(4 + h)].hit, 0) << h;
  }
  EXPECT_EQ(sim.ss.groups_all_hit, 2);
  ASSERT_TRUE(sim.step());
  ASSERT_TRUE(sim.step());
}

}  // namespace
