// tests/test_validation.cpp: every bad input throws macattn::Error naming the bad thing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "fixture.hpp"

namespace {

using macattn::DType;
using ::testing::AllOf;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

#define EXPECT_ERROR(stmt, matcher) EXPECT_THAT([&] { stmt; }, ThrowsMessage<macattn::Error>(matcher))

macattn::AttentionShape shape_with(int hq, int hkv, int d, float scale = 0.0f) { return {hq, hkv, d, scale}; }

TEST(Validation, AttentionShape) {
  EXPECT_ERROR(shape_with(6, 4, 16).validate(), AnyOf(HasSubstr("num_q_heads"), HasSubstr("num_kv_heads")));
  EXPECT_ERROR(shape_with(0, 1, 16).validate(), HasSubstr("num_q_heads"));
  EXPECT_ERROR(shape_with(4, 0, 16).validate(), HasSubstr("num_kv_heads"));
  EXPECT_ERROR(shape_with(4, -2, 16).validate(), HasSubstr("num_kv_heads"));
  EXPECT_ERROR(shape_with(4, 2, 0).validate(), HasSubstr("head_dim"));
  EXPECT_ERROR(shape_with(4, 2, 1025).validate(), HasSubstr("head_dim"));
  EXPECT_ERROR(shape_with(4, 2, 16, kNaN).validate(), HasSubstr("softmax_scale"));
  EXPECT_ERROR(shape_with(4, 2, 16, -0.5f).validate(), HasSubstr("softmax_scale"));
  EXPECT_ERROR(shape_with(4, 2, 16, std::numeric_limits<float>::infinity()).validate(), HasSubstr("softmax_scale"));
  EXPECT_NO_THROW(shape_with(4, 2, 1024).validate());
  EXPECT_NO_THROW(shape_with(1, 1, 1).validate());
}

macattn::MacConfig config_with(void (*f)(macattn::MacConfig&)) {
  macattn::MacConfig c;
  f(c);
  return c;
}

TEST(Validation, MacConfig) {
  EXPECT_ERROR(config_with([](auto& c) { c.tau = kNaN; }).validate(), HasSubstr("tau"));
  EXPECT_ERROR(config_with([](auto& c) { c.tau = 1.0f; }).validate(), HasSubstr("tau"));
  EXPECT_ERROR(config_with([](auto& c) { c.tau = 1.5f; }).validate(), HasSubstr("tau"));
  EXPECT_ERROR(config_with([](auto& c) { c.tau = -0.1f; }).validate(), HasSubstr("tau"));
  EXPECT_ERROR(config_with([](auto& c) { c.window = 0; }).validate(), HasSubstr("window"));
  EXPECT_ERROR(config_with([](auto& c) { c.rect_offset = 0; }).validate(), HasSubstr("rect_offset"));
  EXPECT_ERROR(config_with([](auto& c) { c.front_sinks = -1; }).validate(), HasSubstr("front_sinks"));
  EXPECT_ERROR(config_with([](auto& c) { c.min_context = -1; }).validate(), HasSubstr("min_context"));
  EXPECT_NO_THROW(config_with([](auto& c) { c.tau = 0.0f; c.window = 1; c.rect_offset = 1; c.min_context = 0; }).validate());
  // The MacState constructor validates too.
  EXPECT_ERROR(macattn::MacState(shape_with(4, 2, 8), config_with([](auto& c) { c.window = 0; })), HasSubstr("window"));
  EXPECT_ERROR(macattn::MacState(shape_with(4, 3, 8), macattn::MacConfig{}), HasSubstr("num_"));
  EXPECT_ERROR(macattn::MacState(shape_with(4, 2, 8), macattn::MacConfig{}, static_cast<DType>(7)), HasSubstr("dtype"));
}

TEST(Validation, ContiguousView) {
  std::vector<float> data(64, 0.0f);
  std::vector<macattn::ContiguousSequence> seqs{{data.data(), data.data(), 2}};
  EXPECT_NO_THROW(macattn::KVCacheView::contiguous(seqs, 2, 8, DType::f32));
  EXPECT_ERROR(macattn::KVCacheView::contiguous(seqs, 0, 8, DType::f32), HasSubstr("num_kv_heads"));
  EXPECT_ERROR(macattn::KVCacheView::contiguous(seqs, 2, 0, DType::f32), HasSubstr("head_dim"));
  EXPECT_ERROR(macattn::KVCacheView::contiguous(seqs, 2, 8, static_cast<DType>(5)), HasSubstr("dtype"));
  seqs[0].length = -1;
  EXPECT_ERROR(macattn::KVCacheView::contiguous(seqs, 2, 8, DType::f32), HasSubstr("length"));
  seqs[0] = {nullptr, data.data(), 2};
  EXPECT_ERROR(macattn::KVCacheView::contiguous(seqs, 2, 8, DType::f32), HasSubstr("null"));
  seqs[0] = {data.data(), nullptr, 2};
  EXPECT_ERROR(macattn::KVCacheView::contiguous(seqs, 2, 8, DType::f32), HasSubstr("null"));
}

// A valid paged table (2 sequences, page size 4, 5 pages) that each case breaks once.
struct PagedTable {
  std::vector<float> pages = std::vector<float>(5 * 4 * 2 * 8, 0.0f);
  std::vector<std::int32_t> indptr{0, 2, 3};
  std::vector<std::int32_t> indices{3, 0, 4};
  std::vector<std::int32_t> last{2, 4};
  macattn::PagedKV pk() {
    macattn::PagedKV p;
    p.k_pages = pages.data();
    p.v_pages = pages.data();
    p.num_pages = 5;
    p.page_size = 4;
    p.layout = macattn::KVLayout::NHD;
    p.indptr = indptr.data();
    p.indices = indices.data();
    p.last_page_len = last.data();
    return p;
  }
  macattn::KVCacheView view() { return macattn::KVCacheView::paged(pk(), 2, 2, 8, DType::f32); }
};

TEST(Validation, PagedView) {
  {
    PagedTable t;
    const auto v = t.view();
    EXPECT_EQ(v.seq_len(0), 6);
    EXPECT_EQ(v.seq_len(1), 4);
  }
  {
    PagedTable t;
    t.indices[1] = 5;  // == num_pages
    EXPECT_ERROR(t.view(), HasSubstr("indices"));
  }
  {
    PagedTable t;
    t.indices[2] = -1;
    EXPECT_ERROR(t.view(), HasSubstr("indices"));
  }
  {
    PagedTable t;
    t.indptr = {0, 3, 2};
    EXPECT_ERROR(t.view(), HasSubstr("indptr"));
  }
  {
    PagedTable t;
    t.indptr = {1, 2, 3};
    EXPECT_ERROR(t.view(), HasSubstr("indptr"));
  }
  {
    PagedTable t;
    t.last[0] = 0;  // a sequence with pages needs >= 1 token in its last page
    EXPECT_ERROR(t.view(), HasSubstr("last_page_len"));
  }
  {
    PagedTable t;
    t.last[1] = 5;  // > page_size
    EXPECT_ERROR(t.view(), HasSubstr("last_page_len"));
  }
  {
    PagedTable t;
    auto p = t.pk();
    p.page_size = 0;
    EXPECT_ERROR(macattn::KVCacheView::paged(p, 2, 2, 8, DType::f32), HasSubstr("page_size"));
  }
  {
    PagedTable t;
    auto p = t.pk();
    p.k_pages = nullptr;
    EXPECT_ERROR(macattn::KVCacheView::paged(p, 2, 2, 8, DType::f32), AllOf(HasSubstr("k_pages"), HasSubstr("null")));
  }
  {
    PagedTable t;
    auto p = t.pk();
    p.indptr = nullptr;
    EXPECT_ERROR(macattn::KVCacheView::paged(p, 2, 2, 8, DType::f32), AllOf(HasSubstr("indptr"), HasSubstr("null")));
  }
  {
    PagedTable t;
    auto p = t.pk();
    p.layout = static_cast<macattn::KVLayout>(4);
    EXPECT_ERROR(macattn::KVCacheView::paged(p, 2, 2, 8, DType::f32), HasSubstr("layout"));
  }
  {
    PagedTable t;
    EXPECT_ERROR(macattn::KVCacheView::paged(t.pk(), -1, 2, 8, DType::f32), HasSubstr("batch"));
  }
  {  // a sequence without pages may have last_page_len 0
    PagedTable t;
    t.indptr = {0, 2, 2};
    t.last = {3, 0};
    EXPECT_EQ(t.view().seq_len(1), 0);
  }
}

// Valid inputs for the three entry points; each case breaks exactly one thing.
class EntryPoints : public ::testing::Test {
 protected:
  EntryPoints() : rng(5), shape{4, 2, 8, 0.0f} {
    cfg.window = 8;
    cfg.rect_offset = 2;
    cfg.min_context = 0;
    kv = fx::random_kv(2, 8, DType::f32, {5, 3}, rng);
    q = fx::random_buf(DType::f32, 2 * 4 * 8, rng);
    qp = fx::random_buf(DType::f32, 8 * 4 * 8, rng);  // 8 prefill rows
    out = fx::fill_buf(DType::f32, q.size(), 7.0f);
    lse.assign(8, 7.0f);
    states.emplace_back(shape, cfg, DType::f32);
    states.emplace_back(shape, cfg, DType::f32);
    indptr = {0, 5, 8};
  }
  void exact() { macattn::exact_decode(shape, kv.view(), q.ctensor(), out.tensor(), lse.data()); }
  void exact_with(macattn::ConstTensor qt, macattn::Tensor ot) { macattn::exact_decode(shape, kv.view(), qt, ot, lse.data()); }
  void mac(macattn::ConstTensor post, macattn::ConstTensor pre, std::vector<macattn::MacStateView> v) {
    macattn::mac_decode(shape, cfg, kv.view(), post, pre, v, out.tensor(), lse.data(), nullptr, nullptr);
  }
  void mac() { mac(q.ctensor(), q.ctensor(), fx::views(states)); }
  void prefill(std::vector<std::int32_t> ip, std::vector<macattn::MacStateView> v) {
    macattn::mac_prefill_init(shape, cfg, kv.view(), qp.ctensor(), qp.ctensor(), ip, v);
  }

  std::mt19937_64 rng;
  macattn::AttentionShape shape;
  macattn::MacConfig cfg;
  fx::KVBatch kv;
  fx::Buf q, qp, out;
  std::vector<float> lse;
  std::vector<macattn::MacState> states;
  std::vector<std::int32_t> indptr;
};

TEST_F(EntryPoints, ValidInputsRun) {
  EXPECT_NO_THROW(exact());
  EXPECT_NO_THROW(prefill(indptr, fx::views(states)));
  EXPECT_NO_THROW(mac());
}

TEST_F(EntryPoints, ExactDecodeRejects) {
  EXPECT_ERROR(exact_with({nullptr, DType::f32}, out.tensor()), HasSubstr("q_post"));
  EXPECT_ERROR(exact_with(q.ctensor(), {nullptr, DType::f32}), HasSubstr("out"));
  EXPECT_ERROR(exact_with(q.ctensor(), {out.data(), DType::bf16}), HasSubstr("out"));
  EXPECT_ERROR(exact_with({q.data(), static_cast<DType>(9)}, out.tensor()), AnyOf(HasSubstr("q_post"), HasSubstr("dtype")));
  shape.head_dim = 16;  // kv head_dim is 8
  EXPECT_ERROR(exact(), HasSubstr("head_dim"));
  shape = {4, 4, 8, 0.0f};  // kv has 2 KV heads
  EXPECT_ERROR(exact(), HasSubstr("num_kv_heads"));
  shape = {6, 4, 8, 0.0f};
  EXPECT_ERROR(exact(), AnyOf(HasSubstr("num_q_heads"), HasSubstr("num_kv_heads")));
  shape = {4, 2, 8, kNaN};
  EXPECT_ERROR(exact(), HasSubstr("softmax_scale"));
}

TEST_F(EntryPoints, MacDecodeRejects) {
  EXPECT_ERROR(mac({nullptr, DType::f32}, q.ctensor(), fx::views(states)), HasSubstr("q_post"));
  EXPECT_ERROR(mac(q.ctensor(), {nullptr, DType::f32}, fx::views(states)), HasSubstr("q_pre"));
  const fx::Buf qb = fx::random_buf(DType::bf16, q.size(), rng);
  EXPECT_ERROR(mac(q.ctensor(), qb.ctensor(), fx::views(states)), HasSubstr("q_pre"));
  EXPECT_ERROR(mac(q.ctensor(), q.ctensor(), {states[0].view()}), HasSubstr("states"));
  {
    macattn::MacConfig other = cfg;
    other.window = 16;
    macattn::MacState wrong(shape, other, DType::f32);
    EXPECT_ERROR(mac(q.ctensor(), q.ctensor(), {states[0].view(), wrong.view()}), AllOf(HasSubstr("state"), HasSubstr("window")));
  }
  {
    macattn::MacState wrong(shape_with(8, 2, 8), cfg, DType::f32);
    EXPECT_ERROR(mac(q.ctensor(), q.ctensor(), {wrong.view(), states[1].view()}), AllOf(HasSubstr("state"), HasSubstr("num_q_heads")));
  }
  {
    macattn::MacState wrong(shape_with(4, 2, 16), cfg, DType::f32);
    EXPECT_ERROR(mac(q.ctensor(), q.ctensor(), {states[0].view(), wrong.view()}), AllOf(HasSubstr("state"), HasSubstr("head_dim")));
  }
  for (int which = 0; which < 5; ++which) {
    auto v = fx::views(states);
    const char* name[5] = {"qring", "oring", "lring", "position", "ready"};
    if (which == 0) v[1].qring = nullptr;
    if (which == 1) v[1].oring = nullptr;
    if (which == 2) v[1].lring = nullptr;
    if (which == 3) v[1].position = nullptr;
    if (which == 4) v[1].ready = nullptr;
    EXPECT_ERROR(mac(q.ctensor(), q.ctensor(), v), HasSubstr(name[which]));
  }
  {
    auto v = fx::views(states);
    v[0].ring_dtype = static_cast<DType>(6);
    EXPECT_ERROR(mac(q.ctensor(), q.ctensor(), v), HasSubstr("dtype"));
  }
  EXPECT_ERROR(mac(q.ctensor(), q.ctensor(), {states[0].view(), states[0].view()}), HasSubstr("states"));  // one ring twice
  EXPECT_ERROR(macattn::mac_decode(shape, cfg, kv.view(), q.ctensor(), q.ctensor(), fx::views(states), out.tensor(),
                                   lse.data(), nullptr, nullptr, static_cast<macattn::Backend>(77)),
               HasSubstr("backend"));
  EXPECT_ERROR(macattn::exact_decode(shape, kv.view(), q.ctensor(), out.tensor(), lse.data(), static_cast<macattn::Backend>(77)),
               HasSubstr("backend"));
  cfg.tau = kNaN;
  EXPECT_ERROR(mac(), HasSubstr("tau"));
  cfg.tau = 0.45f;
  cfg.rect_offset = 0;
  EXPECT_ERROR(mac(), HasSubstr("rect_offset"));
  cfg.rect_offset = 2;
  // A decode step needs its current token: seq_len 0 is rejected.
  EXPECT_ERROR(macattn::mac_decode(shape, cfg, kv.view({5, 0}), q.ctensor(), q.ctensor(), fx::views(states), out.tensor(),
                                   lse.data(), nullptr, nullptr),
               AnyOf(HasSubstr("seq_len"), HasSubstr("empty"), HasSubstr("length")));
}

TEST_F(EntryPoints, FailedCallsWriteNothing) {
  ASSERT_NO_THROW(prefill(indptr, fx::views(states)));
  const oracle::Ring before0 = fx::ring_from_state(states[0]);
  macattn::MacConfig other = cfg;
  other.window = 4;
  macattn::MacState wrong(shape, other, DType::f32);
  fx::Buf out_before = out;
  std::vector<float> lse_before = lse;
  std::vector<macattn::HeadStats> hs(8);
  macattn::StepStats ss;
  ss.heads = 1234;
  EXPECT_THROW(macattn::mac_decode(shape, cfg, kv.view(), q.ctensor(), q.ctensor(), std::vector<macattn::MacStateView>{states[0].view(), wrong.view()},
                                   out.tensor(), lse.data(), hs.data(), &ss),
               macattn::Error);
  EXPECT_EQ(out.raw, out_before.raw);
  EXPECT_EQ(lse, lse_before);
  EXPECT_EQ(ss.heads, 1234);
  EXPECT_EQ(hs[0].matched_position, -1);
  EXPECT_TRUE(fx::ring_matches(states[0], before0));
  EXPECT_THROW(prefill({0, 5, 9}, fx::views(states)), macattn::Error);
  EXPECT_TRUE(fx::ring_matches(states[0], before0));
}

TEST_F(EntryPoints, PrefillRejects) {
  EXPECT_ERROR(prefill({0, 5}, fx::views(states)), HasSubstr("row_indptr"));        // size != B + 1
  EXPECT_ERROR(prefill({1, 5, 8}, fx::views(states)), HasSubstr("row_indptr"));     // [0] != 0
  EXPECT_ERROR(prefill({0, 5, 4}, fx::views(states)), HasSubstr("row_indptr"));     // decreasing
  EXPECT_ERROR(prefill({0, 6, 8}, fx::views(states)), AnyOf(HasSubstr("row_indptr"), HasSubstr("rows")));     // n_0 = 6 > P_0 = 5
  EXPECT_ERROR(prefill(indptr, {states[0].view()}), HasSubstr("states"));
  EXPECT_ERROR(macattn::mac_prefill_init(shape, cfg, kv.view(), qp.ctensor(), {nullptr, DType::f32}, indptr, fx::views(states)),
               HasSubstr("q_pre"));
  EXPECT_ERROR(macattn::mac_prefill_init(shape, cfg, kv.view(), {nullptr, DType::f32}, qp.ctensor(), indptr, fx::views(states)),
               HasSubstr("q_post"));
  const fx::Buf qb = fx::random_buf(DType::f16, qp.size(), rng);
  EXPECT_ERROR(macattn::mac_prefill_init(shape, cfg, kv.view(), qp.ctensor(), qb.ctensor(), indptr, fx::views(states)),
               HasSubstr("q_pre"));
  macattn::MacState wrong(shape_with(4, 2, 4), cfg, DType::f32);
  EXPECT_ERROR(prefill(indptr, {states[0].view(), wrong.view()}), AllOf(HasSubstr("state"), HasSubstr("head_dim")));
}

TEST(Validation, MergeStatesRejects) {
  std::vector<float> o(8, 0.0f), l(2, 0.0f), out(8), lo(2);
  EXPECT_ERROR(macattn::merge_states(2, 0, o.data(), l.data(), o.data(), l.data(), out.data(), lo.data()), HasSubstr("head_dim"));
  EXPECT_ERROR(macattn::merge_states(-1, 4, o.data(), l.data(), o.data(), l.data(), out.data(), lo.data()), HasSubstr("-1"));
  EXPECT_ERROR(macattn::merge_states(2, 4, nullptr, l.data(), o.data(), l.data(), out.data(), lo.data()), HasSubstr("o1"));
  EXPECT_ERROR(macattn::merge_states(2, 4, o.data(), l.data(), o.data(), nullptr, out.data(), lo.data()), HasSubstr("lse2"));
  EXPECT_ERROR(macattn::merge_states(2, 4, o.data(), l.data(), o.data(), l.data(), nullptr, lo.data()), HasSubstr("out"));
  l[0] = kNaN;
  EXPECT_ERROR(macattn::merge_states(2, 4, o.data(), l.data(), o.data(), l.data(), out.data(), lo.data()), HasSubstr("lse1"));
}

}  // namespace
