// tests/test_backend_sweep.cpp: the fast CPU backend against the scalar reference backend, in
// the manner of ggml's test-backend-ops: one parametrised sweep over shapes (head dims
// 64/128/256, GQA 1/3/4/8/16), K/V and ring dtypes, contiguous and paged caches (NHD/HND,
// several page sizes), lengths that are not multiples of any tile, sinks; exact decode, prefill
// ring init and a MAC decode stream with hits and misses. Decisions (hit, matched position,
// distance) must be identical bit for bit; outputs, LSEs and rings equal within rounding.
// ctest runs this sweep once per kernel set the machine has (MACATTN_CPU_ISA=...).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <ostream>
#include <sstream>

#include "fixture.hpp"

namespace {

using macattn::Backend;
using macattn::DType;
using macattn::KVLayout;

struct SweepCase {
  int hq, hkv, d;
  DType kv, ring;
  int page_size;  // 0: contiguous
  KVLayout layout;
  int sinks;
};

std::string describe(const SweepCase& c) {
  std::ostringstream s;
  s << "hq" << c.hq << "_hkv" << c.hkv << "_d" << c.d << "_" << macattn::dtype_name(c.kv) << "_ring"
    << macattn::dtype_name(c.ring) << "_" << (c.page_size ? "paged" + std::to_string(c.page_size) : "contig")
    << (c.page_size ? macattn::kv_layout_name(c.layout) : "") << "_F" << c.sinks;
  return s.str();
}
std::string case_name(const ::testing::TestParamInfo<SweepCase>& info) { return describe(info.param); }
void PrintTo(const SweepCase& c, std::ostream* os) { *os << describe(c); }

/// A batch of caches viewed contiguous or paged (pages shuffled anew on every view).
struct Cache {
  fx::KVBatch kv;
  fx::PagedBuf paged;
  Cache(const SweepCase& c, const std::vector<std::int64_t>& lens, std::mt19937_64& rng)
      : kv(fx::random_kv(c.hkv, c.d, c.kv, lens, rng)) {}
  macattn::KVCacheView view(const SweepCase& c, const std::vector<std::int64_t>& lens, std::mt19937_64& rng) {
    if (c.page_size == 0) return kv.view(lens);
    paged = fx::make_paged(kv, lens, c.page_size, c.layout, rng);
    return paged.view();
  }
};

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - ref[i]) * (static_cast<double>(a[i]) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

/// Both rings hold the same q rows bit for bit and the same entries within `tol`.
::testing::AssertionResult rings_agree(const macattn::MacState& fast, const macattn::MacState& ref, double tol) {
  for (int slot = 0; slot < ref.window(); ++slot)
    for (int h = 0; h < ref.num_q_heads(); ++h) {
      const float lf = fast.lse_at(slot, h), lr = ref.lse_at(slot, h);
      if (std::isinf(lr) != std::isinf(lf) || (!std::isinf(lr) && std::fabs(lf - lr) > tol * (1 + std::fabs(lr))))
        return ::testing::AssertionFailure() << "lring slot " << slot << " head " << h << ": " << lf << " vs " << lr;
      for (int i = 0; i < ref.head_dim(); ++i) {
        if (fast.q_at(slot, h, i) != ref.q_at(slot, h, i))
          return ::testing::AssertionFailure() << "qring slot " << slot << " head " << h << " dim " << i;
        const float of = fast.o_at(slot, h, i), orf = ref.o_at(slot, h, i);
        if (std::fabs(of - orf) > tol * (1 + std::fabs(orf)))
          return ::testing::AssertionFailure() << "oring slot " << slot << " head " << h << " dim " << i << ": " << of
                                               << " vs " << orf;
      }
    }
  if (fast.position() != ref.position() || fast.ready() != ref.ready())
    return ::testing::AssertionFailure() << "position/ready differ";
  return ::testing::AssertionSuccess();
}

/// Tolerance of a ring value: one rounding to the ring dtype may land on either side.
double ring_tol(DType ring) { return ring == DType::f32 ? 1e-4 : ring == DType::f16 ? 2e-3 : 1.6e-2; }

class BackendSweep : public ::testing::TestWithParam<SweepCase> {
 protected:
  void SetUp() override {
    try {
      macattn::cpu_isa();
    } catch (const macattn::Error& e) {  // MACATTN_CPU_ISA names a kernel set this CPU lacks
      GTEST_SKIP() << e.what();
    }
  }
};

TEST_P(BackendSweep, ExactDecode) {
  const SweepCase c = GetParam();
  std::mt19937_64 rng(1000 + static_cast<std::uint64_t>(c.d * 31 + c.hkv));
  const std::vector<std::int64_t> lens{1, 37, 300 + c.d / 4 + 3, 0};
  Cache cache(c, lens, rng);
  const macattn::KVCacheView view = cache.view(c, lens, rng);
  const macattn::AttentionShape shape{c.hq, c.hkv, c.d, 0.0f};
  const fx::Buf q = fx::random_buf(DType::f32, lens.size() * static_cast<std::size_t>(c.hq * c.d), rng);
  std::vector<float> out_ref(q.size()), out_fast(q.size()), lse_ref(lens.size() * c.hq), lse_fast(lse_ref.size());
  macattn::exact_decode(shape, view, q.ctensor(), {out_ref.data(), DType::f32}, lse_ref.data(), Backend::reference);
  macattn::exact_decode(shape, view, q.ctensor(), {out_fast.data(), DType::f32}, lse_fast.data(), Backend::cpu);
  EXPECT_LT(rel_l2(out_fast, out_ref), 2e-6);
  for (std::size_t i = 0; i < lse_ref.size(); ++i) {
    if (std::isinf(lse_ref[i])) {
      EXPECT_EQ(lse_fast[i], lse_ref[i]) << "head " << i;  // the empty sequence
    } else {
      EXPECT_NEAR(lse_fast[i], lse_ref[i], 1e-5 * (1 + std::fabs(lse_ref[i]))) << "head " << i;
    }
  }
}

TEST_P(BackendSweep, PrefillThenMacDecodeStream) {
  const SweepCase c = GetParam();
  std::mt19937_64 rng(2000 + static_cast<std::uint64_t>(c.d * 7 + c.hq + c.page_size));
  const macattn::AttentionShape shape{c.hq, c.hkv, c.d, 0.0f};
  macattn::MacConfig cfg;
  cfg.window = 32;
  cfg.rect_offset = 8;
  cfg.tau = 0.5f;
  cfg.front_sinks = c.sinks;
  cfg.min_context = 60;
  const int steps = 40;
  const std::vector<std::int64_t> prompt{50, 97, 13};  // the third stays below min_context
  std::vector<std::int64_t> full;
  for (auto p : prompt) full.push_back(p + steps);
  Cache cache(c, full, rng);
  // Drifting pre-RoPE queries with jumps: hits and misses both happen.
  std::vector<fx::QStream> qs;
  for (auto n : full) qs.push_back(fx::drifting_queries(DType::f32, n, c.hq, c.d, rng, 0.02, 0.08, 1.0));

  std::vector<macattn::MacState> ref_states, fast_states;
  for (std::size_t b = 0; b < prompt.size(); ++b) {
    ref_states.emplace_back(shape, cfg, c.ring);
    fast_states.emplace_back(shape, cfg, c.ring);
  }
  auto ref_views = fx::views(ref_states);
  auto fast_views = fx::views(fast_states);
  // A third copy decoded by the fast backend without head stats (its scan may then stop early
  // on rows that cannot be hits): everything it produces must be bit-identical.
  std::vector<macattn::MacState> quiet_states;

  // Prefill init over the last min(P, W + 5) prompt positions (more rows than the ring keeps).
  std::vector<std::int64_t> first, count;
  std::vector<std::int32_t> indptr{0};
  for (auto p : prompt) {
    const std::int64_t n = std::min<std::int64_t>(p, cfg.window + 5);
    first.push_back(p - n);
    count.push_back(n);
    indptr.push_back(indptr.back() + static_cast<std::int32_t>(n));
  }
  {
    const macattn::KVCacheView view = cache.view(c, prompt, rng);
    const fx::Buf qpost = fx::gather_rows(qs, first, count, true), qpre = fx::gather_rows(qs, first, count, false);
    macattn::mac_prefill_init(shape, cfg, view, qpost.ctensor(), qpre.ctensor(), indptr, ref_views, Backend::reference);
    macattn::mac_prefill_init(shape, cfg, view, qpost.ctensor(), qpre.ctensor(), indptr, fast_views, Backend::cpu);
    for (std::size_t b = 0; b < prompt.size(); ++b)
      ASSERT_TRUE(rings_agree(fast_states[b], ref_states[b], ring_tol(c.ring))) << "after prefill, sequence " << b;
  }

  quiet_states = fast_states;
  auto quiet_views = fx::views(quiet_states);
  // A fourth copy with head stats but report_miss_matches off (the scan may stop early too):
  // the same output and decisions; a miss whose best row is at or over the threshold reports
  // no row. The reference is run with that config as well, from a copy of its rings.
  macattn::MacConfig terse_cfg = cfg;
  terse_cfg.report_miss_matches = false;
  const float threshold = cfg.threshold(c.d);
  std::vector<macattn::MacState> terse_states = fast_states;
  auto terse_views = fx::views(terse_states);
  std::int64_t hits = 0, misses = 0;
  const std::size_t n_heads = prompt.size() * static_cast<std::size_t>(c.hq);
  const double out_tol = c.ring == DType::f32 ? 1e-5 : 1e-2;
  for (int s = 0; s < steps; ++s) {
    std::vector<std::int64_t> lens, pos;
    for (auto p : prompt) {
      lens.push_back(p + s + 1);
      pos.push_back(p + s);
    }
    const macattn::KVCacheView view = cache.view(c, lens, rng);
    const fx::Buf qpost = fx::gather(qs, pos, true), qpre = fx::gather(qs, pos, false);
    std::vector<float> out_ref(n_heads * c.d), out_fast(out_ref.size()), lse_ref(n_heads), lse_fast(n_heads);
    std::vector<macattn::HeadStats> hs_ref(n_heads), hs_fast(n_heads);
    macattn::StepStats ss_ref, ss_fast;
    std::vector<macattn::MacState> terse_ref_states = ref_states;
    auto terse_ref_views = fx::views(terse_ref_states);
    std::vector<float> out_terse_ref(out_ref.size()), lse_terse_ref(n_heads), out_terse(out_ref.size()),
        lse_terse(n_heads);
    std::vector<macattn::HeadStats> hs_terse_ref(n_heads), hs_terse(n_heads);
    macattn::mac_decode(shape, terse_cfg, view, qpost.ctensor(), qpre.ctensor(), terse_ref_views,
                        {out_terse_ref.data(), DType::f32}, lse_terse_ref.data(), hs_terse_ref.data(), nullptr,
                        Backend::reference);
    macattn::mac_decode(shape, terse_cfg, view, qpost.ctensor(), qpre.ctensor(), terse_views,
                        {out_terse.data(), DType::f32}, lse_terse.data(), hs_terse.data(), nullptr, Backend::cpu);
    macattn::mac_decode(shape, cfg, view, qpost.ctensor(), qpre.ctensor(), ref_views, {out_ref.data(), DType::f32},
                        lse_ref.data(), hs_ref.data(), &ss_ref, Backend::reference);
    macattn::mac_decode(shape, cfg, view, qpost.ctensor(), qpre.ctensor(), fast_views, {out_fast.data(), DType::f32},
                        lse_fast.data(), hs_fast.data(), &ss_fast, Backend::cpu);
    std::vector<float> out_quiet(out_fast.size()), lse_quiet(n_heads);
    macattn::StepStats ss_quiet;
    macattn::mac_decode(shape, cfg, view, qpost.ctensor(), qpre.ctensor(), quiet_views, {out_quiet.data(), DType::f32},
                        lse_quiet.data(), nullptr, &ss_quiet, Backend::cpu);
    ASSERT_EQ(out_quiet, out_fast) << "step " << s << ": output without head stats differs";
    ASSERT_EQ(lse_quiet, lse_fast) << "step " << s;
    ASSERT_EQ(ss_quiet.heads_hit, ss_fast.heads_hit) << "step " << s;
    ASSERT_EQ(ss_quiet.kv_tokens_read, ss_fast.kv_tokens_read) << "step " << s;
    ASSERT_EQ(out_terse, out_fast) << "step " << s << ": output with report_miss_matches off differs";
    ASSERT_EQ(lse_terse, lse_fast) << "step " << s;
    ASSERT_EQ(out_terse_ref, out_ref) << "step " << s << ": reference output with report_miss_matches off differs";
    for (std::size_t i = 0; i < n_heads; ++i) {
      macattn::HeadStats want = hs_ref[i];
      if (!(want.match_distance < threshold)) {
        want.matched_position = -1;
        want.match_distance = std::numeric_limits<float>::infinity();
      }
      for (const macattn::HeadStats* got : {&hs_terse[i], &hs_terse_ref[i]}) {
        const char* who = got == &hs_terse[i] ? "cpu" : "reference";
        ASSERT_EQ(got->hit, want.hit) << who << " step " << s << " head " << i;
        ASSERT_EQ(got->matched_position, want.matched_position) << who << " step " << s << " head " << i;
        ASSERT_EQ(got->match_distance, want.match_distance) << who << " step " << s << " head " << i;
        ASSERT_EQ(got->band_len, want.band_len) << who << " step " << s << " head " << i;
        ASSERT_EQ(got->kv_tokens_read, want.kv_tokens_read) << who << " step " << s << " head " << i;
      }
    }
    for (std::size_t i = 0; i < n_heads; ++i) {
      ASSERT_EQ(hs_fast[i].hit, hs_ref[i].hit) << "step " << s << " head " << i;
      ASSERT_EQ(hs_fast[i].matched_position, hs_ref[i].matched_position) << "step " << s << " head " << i;
      ASSERT_EQ(hs_fast[i].match_distance, hs_ref[i].match_distance) << "step " << s << " head " << i;
      ASSERT_EQ(hs_fast[i].band_len, hs_ref[i].band_len) << "step " << s << " head " << i;
      ASSERT_EQ(hs_fast[i].kv_tokens_read, hs_ref[i].kv_tokens_read) << "step " << s << " head " << i;
      hits += hs_ref[i].hit;
      misses += 1 - hs_ref[i].hit;
    }
    EXPECT_EQ(ss_fast.heads_hit, ss_ref.heads_hit);
    EXPECT_EQ(ss_fast.groups_all_hit, ss_ref.groups_all_hit);
    EXPECT_EQ(ss_fast.kv_tokens_read, ss_ref.kv_tokens_read);
    EXPECT_EQ(ss_fast.kv_tokens_exact, ss_ref.kv_tokens_exact);
    EXPECT_EQ(ss_fast.ring_wipes, ss_ref.ring_wipes);
    ASSERT_LT(rel_l2(out_fast, out_ref), out_tol) << "step " << s;
    for (std::size_t i = 0; i < n_heads; ++i)
      ASSERT_NEAR(lse_fast[i], lse_ref[i], out_tol * (1 + std::fabs(lse_ref[i]))) << "step " << s << " head " << i;
    for (std::size_t b = 0; b < prompt.size(); ++b) {
      ASSERT_TRUE(rings_agree(fast_states[b], ref_states[b], ring_tol(c.ring))) << "step " << s << " sequence " << b;
      ASSERT_TRUE(rings_agree(quiet_states[b], fast_states[b], 0.0)) << "step " << s << " sequence " << b;
      ASSERT_TRUE(rings_agree(terse_states[b], fast_states[b], 0.0)) << "step " << s << " sequence " << b;
      // A reduced-precision ring may round an entry either way; continue both from the same
      // ring so that such differences cannot compound along reuse chains.
      ref_states[b] = fast_states[b];
    }
    ref_views = fx::views(ref_states);
  }
  EXPECT_GT(hits, 0) << "the stream must exercise hits";
  EXPECT_GT(misses, 0) << "the stream must exercise misses";
}

const SweepCase kCases[] = {
    // head dims and GQA ratios, f32 throughout (tight comparisons)
    {8, 8, 64, DType::f32, DType::f32, 0, KVLayout::NHD, 0},
    {16, 4, 128, DType::f32, DType::f32, 0, KVLayout::NHD, 0},
    {16, 2, 256, DType::f32, DType::f32, 0, KVLayout::NHD, 0},
    {8, 1, 128, DType::f32, DType::f32, 0, KVLayout::NHD, 2},
    {12, 4, 64, DType::f32, DType::f32, 0, KVLayout::NHD, 3},  // G = 3: query blocks 2 + 1
    {16, 1, 64, DType::f32, DType::f32, 0, KVLayout::NHD, 0},  // G = 16: two blocks of 8
    {40, 8, 64, DType::f32, DType::f32, 0, KVLayout::NHD, 0},  // the scan's heads in rows of 16: 16 + 16 + 8
    // K/V and ring dtypes
    {16, 4, 128, DType::bf16, DType::bf16, 0, KVLayout::NHD, 0},
    {16, 4, 128, DType::f16, DType::f16, 0, KVLayout::NHD, 0},
    {8, 1, 64, DType::bf16, DType::f32, 0, KVLayout::NHD, 1},
    // paged caches
    {16, 4, 128, DType::bf16, DType::bf16, 1, KVLayout::NHD, 0},
    {16, 4, 128, DType::f32, DType::f32, 16, KVLayout::HND, 2},
    {8, 2, 64, DType::f16, DType::f32, 64, KVLayout::NHD, 0},
    {8, 2, 256, DType::bf16, DType::bf16, 7, KVLayout::HND, 0},
    // a head dim without specialised kernels: the fast backend runs the reference
    {4, 2, 40, DType::f32, DType::f32, 0, KVLayout::NHD, 0},
};

INSTANTIATE_TEST_SUITE_P(Sweep, BackendSweep, ::testing::ValuesIn(kCases), case_name);

TEST(BackendSweepIsa, ReportsKernelSet) {
  std::string isa;
  try {
    isa = macattn::cpu_isa();
  } catch (const macattn::Error& e) {
    GTEST_SKIP() << e.what();
  }
  EXPECT_TRUE(isa == "avx512bf16" || isa == "avx512" || isa == "avx2" || isa == "portable") << isa;
  if (const char* forced = std::getenv("MACATTN_CPU_ISA")) {
    EXPECT_EQ(isa, forced);
  }
}

}  // namespace
