// tests/test_paged.cpp: a paged cache gives bitwise the same results as the contiguous one,
// for every backend, page size, layout and page permutation: exact decode, prefill rows, MAC
// decisions, outputs and rings.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "fixture.hpp"

namespace {

using macattn::Backend;
using macattn::DType;
using macattn::KVLayout;

using PagedParam = std::tuple<int, KVLayout, DType, Backend>;

KVLayout other(KVLayout l) { return l == KVLayout::NHD ? KVLayout::HND : KVLayout::NHD; }

// One call's results.
struct Result {
  fx::Buf out;
  std::vector<float> lse;
  std::vector<macattn::HeadStats> hs;
  macattn::StepStats ss;
};

bool bits_equal(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

::testing::AssertionResult same_decisions(const Result& a, const Result& b) {
  for (std::size_t i = 0; i < a.hs.size(); ++i) {
    const auto &x = a.hs[i], &y = b.hs[i];
    if (x.hit != y.hit || x.matched_position != y.matched_position || !bits_equal(x.match_distance, y.match_distance) ||
        x.band_len != y.band_len || x.kv_tokens_read != y.kv_tokens_read)
      return ::testing::AssertionFailure() << "head " << i << ": hit " << int(x.hit) << "/" << int(y.hit) << " m "
                                           << x.matched_position << "/" << y.matched_position << " d "
                                           << x.match_distance << "/" << y.match_distance;
  }
  if (a.ss.to_string() != b.ss.to_string())
    return ::testing::AssertionFailure() << a.ss.to_string() << " vs " << b.ss.to_string();
  return ::testing::AssertionSuccess();
}

// Outputs and LSE bitwise equal.
::testing::AssertionResult same_outputs(const Result& a, const Result& b) {
  for (std::size_t k = 0; k < a.out.size(); ++k) {
    const float x = a.out.get(k), y = b.out.get(k);
    if (!bits_equal(x, y))
      return ::testing::AssertionFailure() << "out[" << k << "] " << x << " vs " << y << " (diff " << x - y << ")";
  }
  for (std::size_t k = 0; k < a.lse.size(); ++k) {
    const float x = a.lse[k], y = b.lse[k];
    if (!bits_equal(x, y))
      return ::testing::AssertionFailure() << "lse[" << k << "] " << x << " vs " << y;
  }
  return ::testing::AssertionSuccess();
}

// Every ring element bitwise equal.
::testing::AssertionResult same_ring(const macattn::MacState& a, const macattn::MacState& b) {
  if (a.position() != b.position() || a.ready() != b.ready()) return ::testing::AssertionFailure() << "position/ready";
  for (int s = 0; s < a.window(); ++s)
    for (int h = 0; h < a.num_q_heads(); ++h) {
      const float la = a.lse_at(s, h), lb = b.lse_at(s, h);
      if (!bits_equal(la, lb))
        return ::testing::AssertionFailure() << "lring[" << s << "][" << h << "] " << la << " vs " << lb;
      for (int i = 0; i < a.head_dim(); ++i) {
        const float qa = a.q_at(s, h, i), qb = b.q_at(s, h, i), oa = a.o_at(s, h, i), ob = b.o_at(s, h, i);
        if (!bits_equal(qa, qb)) return ::testing::AssertionFailure() << "qring[" << s << "][" << h << "][" << i << "]";
        if (!bits_equal(oa, ob))
          return ::testing::AssertionFailure() << "oring[" << s << "][" << h << "][" << i << "] " << oa << " vs " << ob;
      }
    }
  return ::testing::AssertionSuccess();
}

class PagedVsContiguous : public ::testing::TestWithParam<PagedParam> {
 protected:
  int page_size() const { return std::get<0>(GetParam()); }
  KVLayout layout() const { return std::get<1>(GetParam()); }
  DType dtype() const { return std::get<2>(GetParam()); }
  Backend backend() const { return std::get<3>(GetParam()); }
  std::uint64_t seed() const {
    return 1000u * static_cast<unsigned>(page_size()) + 10u * static_cast<unsigned>(layout()) +
           static_cast<unsigned>(dtype()) + 7u * static_cast<unsigned>(backend());
  }
};

TEST_P(PagedVsContiguous, ExactDecode) {
  std::mt19937_64 rng(seed());
  const macattn::AttentionShape shape{8, 2, 64, 0.0f};
  const std::vector<std::int64_t> lens{0, 1, 37, 700, 64, 16};
  fx::KVBatch kv = fx::random_kv(2, 64, dtype(), lens, rng);
  const fx::Buf q = fx::random_buf(DType::f32, lens.size() * 8 * 64, rng);
  auto run = [&](const macattn::KVCacheView& view) {
    Result r{fx::fill_buf(DType::f32, q.size(), 3.0f), std::vector<float>(lens.size() * 8, 3.0f), {}, {}};
    macattn::exact_decode(shape, view, q.ctensor(), r.out.tensor(), r.lse.data(), backend());
    return r;
  };
  const Result contiguous = run(kv.view());
  const fx::PagedBuf first = fx::make_paged(kv, lens, page_size(), layout(), rng);
  ASSERT_EQ(first.view().storage(), macattn::KVCacheView::Storage::paged);
  for (std::size_t b = 0; b < lens.size(); ++b) ASSERT_EQ(first.view().seq_len(static_cast<std::int32_t>(b)), lens[b]);
  const Result paged = run(first.view());
  EXPECT_TRUE(same_outputs(paged, contiguous));
  for (int rep = 0; rep < 3; ++rep) {  // other permutations, and the other layout
    const fx::PagedBuf pb = fx::make_paged(kv, lens, page_size(), rep == 2 ? other(layout()) : layout(), rng);
    EXPECT_TRUE(same_outputs(run(pb.view()), paged)) << "rep " << rep;
  }
  // And the oracle agrees.
  const oracle::Params p = oracle::make_params(shape, macattn::MacConfig{});
  std::vector<oracle::State> ref;
  for (std::size_t b = 0; b < lens.size(); ++b) {
    auto r = oracle::exact(p, kv.seqs[b], lens[b], q.val.data() + b * 8 * 64);
    ref.insert(ref.end(), r.begin(), r.end());
  }
  EXPECT_TRUE(fx::outputs_match(paged.out, paged.lse, ref, fx::tol_for(DType::f32)));
}

TEST_P(PagedVsContiguous, PrefillAndMacDecode) {
  std::mt19937_64 rng(seed() + 1);
  const macattn::AttentionShape shape{4, 2, 64, 0.0f};
  macattn::MacConfig cfg;
  cfg.window = 8;
  cfg.rect_offset = 3;
  cfg.front_sinks = 1;
  cfg.min_context = 0;
  const DType qdt = DType::bf16;  // bf16 queries, outputs and rings
  const std::vector<std::int64_t> prompt{30, 1, 64};
  const int steps = 12;
  std::vector<std::int64_t> full;
  for (auto l : prompt) full.push_back(l + steps);
  fx::KVBatch kv = fx::random_kv(2, 64, dtype(), full, rng);
  std::vector<fx::QStream> q;
  for (auto l : full) q.push_back(fx::drifting_queries(qdt, l, 4, 64, rng, 0.3, 0.2, 3.0));
  // Three rings per sequence: contiguous, paged in `layout`, paged in the other layout.
  std::vector<macattn::MacState> sc, sp, so;
  for (std::size_t b = 0; b < full.size(); ++b) {
    sc.emplace_back(shape, cfg, qdt);
    sp.emplace_back(shape, cfg, qdt);
    so.emplace_back(shape, cfg, qdt);
  }
  {  // prefill
    std::vector<std::int32_t> indptr{0};
    const std::vector<std::int64_t> first(prompt.size(), 0);
    for (auto l : prompt) indptr.push_back(indptr.back() + static_cast<std::int32_t>(l));
    const fx::Buf qp = fx::gather_rows(q, first, prompt, true), qr = fx::gather_rows(q, first, prompt, false);
    auto vc = fx::views(sc), vp = fx::views(sp), vo = fx::views(so);
    macattn::mac_prefill_init(shape, cfg, kv.view(prompt), qp.ctensor(), qr.ctensor(), indptr, vc, backend());
    const fx::PagedBuf pb = fx::make_paged(kv, prompt, page_size(), layout(), rng);
    macattn::mac_prefill_init(shape, cfg, pb.view(), qp.ctensor(), qr.ctensor(), indptr, vp, backend());
    const fx::PagedBuf ob = fx::make_paged(kv, prompt, page_size(), other(layout()), rng);
    macattn::mac_prefill_init(shape, cfg, ob.view(), qp.ctensor(), qr.ctensor(), indptr, vo, backend());
    for (std::size_t b = 0; b < sc.size(); ++b) {
      ASSERT_TRUE(same_ring(sp[b], sc[b])) << "prefill seq " << b;
      ASSERT_TRUE(same_ring(so[b], sp[b])) << "prefill seq " << b;
    }
  }
  std::int64_t hits = 0;
  std::vector<std::int64_t> lens;
  for (auto l : prompt) lens.push_back(l + 1);
  for (int s = 0; s < steps; ++s) {
    std::vector<std::int64_t> pos;
    for (auto l : lens) pos.push_back(l - 1);
    const fx::Buf qp = fx::gather(q, pos, true), qr = fx::gather(q, pos, false);
    auto run = [&](const macattn::KVCacheView& view, std::vector<macattn::MacState>& st) {
      Result r{fx::Buf(qdt, qp.size()), std::vector<float>(12), std::vector<macattn::HeadStats>(12), {}};
      auto v = fx::views(st);
      macattn::mac_decode(shape, cfg, view, qp.ctensor(), qr.ctensor(), v, r.out.tensor(), r.lse.data(), r.hs.data(),
                          &r.ss, backend());
      return r;
    };
    const Result rc = run(kv.view(lens), sc);
    const fx::PagedBuf pb = fx::make_paged(kv, lens, page_size(), layout(), rng);
    const Result rp = run(pb.view(), sp);
    const fx::PagedBuf ob = fx::make_paged(kv, lens, page_size(), other(layout()), rng);
    const Result ro = run(ob.view(), so);
    ASSERT_TRUE(same_decisions(rp, rc)) << "step " << s;
    ASSERT_TRUE(same_outputs(rp, rc)) << "step " << s;
    ASSERT_TRUE(same_decisions(ro, rp)) << "step " << s;
    ASSERT_TRUE(same_outputs(ro, rp)) << "step " << s;
    hits += rc.ss.heads_hit;
    for (std::size_t b = 0; b < sc.size(); ++b) {
      ASSERT_TRUE(same_ring(sp[b], sc[b])) << "step " << s << " seq " << b;
      ASSERT_TRUE(same_ring(so[b], sp[b])) << "step " << s << " seq " << b;
    }
    for (auto& l : lens) ++l;
  }
  EXPECT_GT(hits, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Pages, PagedVsContiguous,
    ::testing::Combine(::testing::Values(1, 16, 64), ::testing::Values(KVLayout::NHD, KVLayout::HND),
                       ::testing::Values(DType::f32, DType::bf16), ::testing::Values(Backend::reference, Backend::cpu)),
    [](const ::testing::TestParamInfo<PagedParam>& i) {
      return "page" + std::to_string(std::get<0>(i.param)) + "_" + macattn::kv_layout_name(std::get<1>(i.param)) +
             "_" + macattn::dtype_name(std::get<2>(i.param)) + "_" + macattn::backend_name(std::get<3>(i.param));
    });

}  // namespace
