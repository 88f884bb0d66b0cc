// tests/test_backends.cpp: the fast CPU backend against the oracle, and against the reference
// backend (same decisions bit for bit).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "sim.hpp"

namespace {

using macattn::Backend;
using macattn::DType;

struct FastExactCase {
  int hq, hkv, d;
  DType kv, q;
};

void PrintTo(const FastExactCase& c, std::ostream* os) {
  *os << "Hq" << c.hq << " Hkv" << c.hkv << " D" << c.d << " kv " << macattn::dtype_name(c.kv) << " q " << macattn::dtype_name(c.q);
}

class FastExact : public ::testing::TestWithParam<FastExactCase> {};

TEST_P(FastExact, MatchesFp64Attention) {
  const auto c = GetParam();
  std::mt19937_64 rng(static_cast<std::uint64_t>(c.hq * 1000 + c.d * 10 + c.hkv) + static_cast<std::uint64_t>(c.kv));
  const macattn::AttentionShape shape{c.hq, c.hkv, c.d, 0.0f};
  const oracle::Params p = oracle::make_params(shape, macattn::MacConfig{});
  const std::vector<std::int64_t> lens{1, 100, 1500, 0, 33};
  fx::KVBatch kv = fx::random_kv(c.hkv, c.d, c.kv, lens, rng);
  const fx::Buf q = fx::random_buf(c.q, lens.size() * static_cast<std::size_t>(c.hq * c.d), rng);
  fx::Buf out = fx::fill_buf(c.q, q.size(), 9.0f), out_ref(c.q, q.size());
  std::vector<float> lse(lens.size() * static_cast<std::size_t>(c.hq), 9.0f), lse_ref(lse.size());
  macattn::exact_decode(shape, kv.view(), q.ctensor(), out.tensor(), lse.data(), Backend::cpu);
  std::vector<oracle::State> ref;
  for (std::size_t b = 0; b < lens.size(); ++b) {
    auto r = oracle::exact(p, kv.seqs[b], lens[b], q.val.data() + b * static_cast<std::size_t>(c.hq * c.d));
    ref.insert(ref.end(), r.begin(), r.end());
  }
  EXPECT_TRUE(fx::outputs_match(out, lse, ref, fx::tol_for(c.q)));
  if (c.q == DType::f32) {
    EXPECT_LT(fx::rel_l2(out, ref), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FastExact,
    ::testing::Values(FastExactCase{8, 8, 64, DType::f32, DType::f32}, FastExactCase{32, 8, 128, DType::bf16, DType::bf16},
                      FastExactCase{16, 2, 256, DType::f16, DType::f32}, FastExactCase{8, 1, 128, DType::f32, DType::f16},
                      FastExactCase{4, 2, 16, DType::f32, DType::f32},  // not a fast head dim: falls back
                      FastExactCase{12, 4, 64, DType::bf16, DType::f32}),
    [](const auto& i) {
      return "Hq" + std::to_string(i.param.hq) + "_Hkv" + std::to_string(i.param.hkv) + "_D" + std::to_string(i.param.d) +
             "_kv_" + macattn::dtype_name(i.param.kv) + "_q_" + macattn::dtype_name(i.param.q);
    });

struct FastSimCase {
  const char* name;
  int hq, hkv, d, w, s, f;
  std::vector<std::int64_t> start_len;
  DType kv, q, ring;
  bool prefill;
};

void PrintTo(const FastSimCase& c, std::ostream* os) { *os << c.name; }

fx::SimSpec fast_spec(const FastSimCase& c, Backend backend) {
  fx::SimSpec sp;
  sp.shape = {c.hq, c.hkv, c.d, 0.0f};
  sp.cfg.window = c.w;
  sp.cfg.rect_offset = c.s;
  sp.cfg.front_sinks = c.f;
  sp.cfg.min_context = 0;
  sp.start_len = c.start_len;
  sp.steps = 20;
  sp.kv_dtype = c.kv;
  sp.q_dtype = c.q;
  sp.ring_dtype = c.ring;
  sp.prefill = c.prefill;
  sp.seed = fx::seed_of(c.name);
  sp.backend = backend;
  return sp;
}

class FastMac : public ::testing::TestWithParam<FastSimCase> {};

// The fast backend step by step against the oracle, and in lockstep with the reference
// backend: identical decisions and distances (bitwise), identical q rows, close outputs.
TEST_P(FastMac, MatchesOracleAndReferenceDecisions) {
  fx::Sim fast(fast_spec(GetParam(), Backend::cpu)), ref(fast_spec(GetParam(), Backend::reference));
  // Outputs are not compared across backends here: each backend's ring holds its own rounding
  // of earlier entries, so both are checked against the oracle (in step()).
  std::int64_t hits = 0;
  ASSERT_TRUE(fx::lockstep(fast, ref, 20, &hits)) << "fast against reference";
  EXPECT_GT(hits, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, FastMac,
    ::testing::Values(FastSimCase{"d64_gqa4", 8, 2, 64, 16, 4, 0, {1, 40, 300}, DType::f32, DType::f32, DType::f32, false},
                      FastSimCase{"d128_bf16", 8, 1, 128, 32, 8, 2, {50, 9}, DType::bf16, DType::bf16, DType::bf16, true},
                      FastSimCase{"d256_f16", 4, 2, 256, 8, 3, 1, {20}, DType::f16, DType::f32, DType::bf16, true},
                      FastSimCase{"d64_gqa1_f16ring", 4, 4, 64, 8, 2, 0, {2, 700}, DType::f32, DType::f16, DType::f16, false}),
    [](const auto& i) { return std::string(i.param.name); });

// Every ring row the same (all distances equal): the match is the oldest candidate, t - W, on
// both backends. The fast scan splits the positions among tasks (four at batch 1 on two
// threads) and merges their bests; equal distances must resolve as one newest-first walk does.
TEST(FastScan, EqualDistancesKeepTheOldestPositionAcrossTasks) {
  const macattn::AttentionShape shape{32, 8, 128, 0.0f};
  macattn::MacConfig cfg;
  cfg.min_context = 0;
  const std::int64_t t = 2000;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd;
  const std::vector<std::int64_t> lens{t + 1};
  fx::KVBatch kv = fx::random_kv(8, 128, DType::bf16, lens, rng);
  std::vector<float> q_pre(32 * 128), q_post(32 * 128);
  for (auto& x : q_pre) x = macattn::bf16_to_float(macattn::float_to_bf16(nd(rng)));  // stored exactly
  for (auto& x : q_post) x = nd(rng);
  for (const float offset : {0.0f, 0.25f}) {  // distance 0, and equal nonzero distances (128 * 0.0625)
    std::vector<macattn::HeadStats> got[2];
    for (int k = 0; k < 2; ++k) {
      const Backend be = k == 0 ? Backend::cpu : Backend::reference;
      macattn::MacState ring(shape, cfg, DType::bf16);
      macattn::MacStateView v = ring.view();
      for (std::int32_t slot = 0; slot < cfg.window; ++slot)
        for (std::size_t i = 0; i < q_pre.size(); ++i) {
          const std::size_t e = static_cast<std::size_t>(slot) * q_pre.size() + i;
          macattn::store_from_float(v.qring, DType::bf16, e, q_pre[i] + offset);
          macattn::store_from_float(v.oring, DType::bf16, e, 0.01f * static_cast<float>(i % 7));
        }
      for (std::size_t r = 0; r < static_cast<std::size_t>(cfg.window) * 32; ++r) v.lring[r] = 3.0f;
      *v.position = t;
      *v.ready = 1;
      std::vector<float> out(q_post.size());
      got[k].resize(32);
      macattn::mac_decode(shape, cfg, kv.view(), {q_post.data(), DType::f32}, {q_pre.data(), DType::f32}, {&v, 1},
                          {out.data(), DType::f32}, nullptr, got[k].data(), nullptr, be);
    }
    for (int h = 0; h < 32; ++h) {
      EXPECT_EQ(got[0][static_cast<std::size_t>(h)].matched_position, t - cfg.window) << "fast, head " << h << ", offset " << offset;
      EXPECT_EQ(got[1][static_cast<std::size_t>(h)].matched_position, t - cfg.window) << "reference, head " << h;
      EXPECT_EQ(got[0][static_cast<std::size_t>(h)].hit, got[1][static_cast<std::size_t>(h)].hit) << h;
      EXPECT_EQ(0, std::memcmp(&got[0][static_cast<std::size_t>(h)].match_distance,
                               &got[1][static_cast<std::size_t>(h)].match_distance, sizeof(float))) << h;
    }
  }
}

}  // namespace
