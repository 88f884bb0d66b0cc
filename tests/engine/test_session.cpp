// Session behaviour: input validation, reset, statistics, and MAC decode through the engine
// (hit-free MAC equals exact; MAC with hits reads fewer K/V tokens; the audit's exact
// reference equals an exact session where MAC cannot change the cache).
#include <gtest/gtest.h>

#include "engine/model.hpp"
#include "engine/session.hpp"
#include "engine_test_util.hpp"
#include "macattn/error.hpp"

namespace {

using namespace macattn::engine;

const Model& llama() {
  static const Model m = Model::load(engine_test::fixtures() / "llama_f32");
  return m;
}

std::vector<std::int32_t> tokens(std::size_t n, std::uint32_t seed) {
  std::vector<std::int32_t> t(n);
  std::uint32_t x = seed;
  for (auto& v : t) v = static_cast<std::int32_t>((x = x * 1664525u + 1013904223u) >> 8) % 320;
  return t;
}

SessionOptions base() {
  SessionOptions o;
  o.kv_dtype = macattn::DType::f32;
  o.max_context = 512;
  o.kv_page_size = 16;
  return o;
}

void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    FAIL() << "no error";
  } catch (const macattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << "message: " << e.what();
  }
}

TEST(EngineSession, ValidatesInputs) {
  Session s(llama(), base());
  expect_error([&] { s.decode(320); }, "token = 320 is out of range [0, 320)");
  expect_error([&] { s.decode(-1); }, "token = -1 is out of range");
  const std::vector<std::int32_t> bad{1, 2, 999};
  expect_error([&] { s.prefill(bad); }, "tokens[2] = 999 is out of range");
  expect_error([&] { s.prefill(std::vector<std::int32_t>{}); }, "no tokens");
  expect_error([&] { s.prefill(tokens(4, 1), 0); }, "chunk_size = 0");
  EXPECT_EQ(s.position(), 0);
  SessionOptions small = base();
  small.max_context = 10;
  Session t(llama(), small);
  t.prefill(tokens(10, 2));
  expect_error([&] { t.decode(5); }, "exceeds the session's max_context 10");
  SessionOptions mask = base();
  mask.attention.mode = AttentionMode::mac;
  mask.attention.mac_layers = {true};
  expect_error([&] { Session u(llama(), mask); }, "mac_layers has 1 entries, the model has 2 layers");
  SessionOptions page = base();
  page.kv_page_size = 0;
  expect_error([&] { Session u(llama(), page); }, "kv_page_size = 0");
  SessionOptions mac = base();
  mac.attention.mode = AttentionMode::mac;
  mac.attention.mac.tau = 1.5f;
  expect_error([&] { Session u(llama(), mac); }, "tau");
}

TEST(EngineSession, ResetAndMoveReproduceLogits) {
  Session s(llama(), base());
  const auto prompt = tokens(30, 3);
  s.prefill(prompt, 8);
  s.decode(3);
  s.reset();  // back to position 0: the same inputs give the same logits again
  EXPECT_EQ(s.position(), 0);
  auto l = s.prefill(prompt, 8);
  const std::vector<float> la(l.begin(), l.end());
  l = s.decode(7);
  const std::vector<float> da(l.begin(), l.end());
  EXPECT_EQ(s.position(), 31);
  Session moved(std::move(s));
  moved.reset();
  l = moved.prefill(prompt, 8);
  EXPECT_EQ(std::vector<float>(l.begin(), l.end()), la);
  l = moved.decode(7);
  EXPECT_EQ(std::vector<float>(l.begin(), l.end()), da);
  EXPECT_EQ(moved.timings().prefill_tokens, 30);
  EXPECT_EQ(moved.timings().decode_tokens, 1);
}

// Decodes `steps` tokens after a prompt, returning every step's logits.
std::vector<std::vector<float>> run(Session& s, const std::vector<std::int32_t>& prompt,
                                    const std::vector<std::int32_t>& cont) {
  std::vector<std::vector<float>> out;
  auto l = s.prefill(prompt, 16);
  out.emplace_back(l.begin(), l.end());
  for (std::int32_t t : cont) {
    l = s.decode(t);
    out.emplace_back(l.begin(), l.end());
  }
  return out;
}

TEST(EngineSession, ExactStatsCountEveryToken) {
  Session s(llama(), base());
  run(s, tokens(40, 4), tokens(5, 5));
  for (const LayerStats& ls : s.layer_stats()) {
    EXPECT_EQ(ls.decode_steps, 5);
    EXPECT_EQ(ls.attention.heads_hit, 0);
    // Per step t: 2 KV heads x (t + 1) tokens, t = 40..44.
    EXPECT_EQ(ls.attention.kv_tokens_read, 2 * (41 + 42 + 43 + 44 + 45));
    EXPECT_EQ(ls.attention.kv_tokens_exact, ls.attention.kv_tokens_read);
    EXPECT_EQ(ls.kv_bytes_read, ls.attention.kv_tokens_read * 2 * 16 * 4);
  }
}

TEST(EngineSession, HitFreeMacEqualsExact) {
  const auto prompt = tokens(40, 6), cont = tokens(20, 7);
  Session exact(llama(), base());
  const auto want = run(exact, prompt, cont);
  for (int variant = 0; variant < 2; ++variant) {
    SessionOptions o = base();
    o.attention.mode = AttentionMode::mac;
    o.attention.ring_dtype = macattn::DType::f32;
    o.attention.mac.window = 16;
    o.attention.mac.rect_offset = 4;
    o.attention.mac.min_context = 0;
    if (variant == 0)
      o.attention.mac.tau = 0.999999f;  // threshold ~0: no query ever matches
    else
      o.attention.mac.min_context = std::int64_t{1} << 40;  // never old enough to match
    Session mac(llama(), o);
    const auto got = run(mac, prompt, cont);
    for (std::size_t i = 0; i < got.size(); ++i) EXPECT_LT(engine_test::rel_err(got[i], want[i]), 1e-5) << "step " << i;
    const auto st = mac.total_attention_stats();
    EXPECT_EQ(st.heads_hit, 0);
    EXPECT_EQ(st.heads, 20 * 2 * 4);
    EXPECT_EQ(st.kv_tokens_read, st.kv_tokens_exact);
  }
}

TEST(EngineSession, MacWithHitsReadsLessAndAuditReports) {
  const auto prompt = tokens(40, 8), cont = tokens(30, 9);
  SessionOptions o = base();
  o.attention.mode = AttentionMode::mac;
  o.attention.mac.window = 16;
  o.attention.mac.rect_offset = 4;
  o.attention.mac.tau = 0.0f;  // threshold 2D: nearly every query matches
  o.attention.mac.min_context = 0;
  o.attention.mac_layers = {false, true};
  o.attention.audit = true;
  Session mac(llama(), o);
  Session exact(llama(), base());
  auto lm = mac.prefill(prompt, 16);
  auto le = exact.prefill(prompt, 16);
  int steps = 0;
  for (std::int32_t t : cont) {
    lm = mac.decode(t);
    le = exact.decode(t);
    ++steps;
    ASSERT_TRUE(mac.last_audit().has_value());
    const AuditStep& a = *mac.last_audit();
    // Layer 0 decodes exactly, and layer 1's output feeds no cache, so the cache equals the
    // exact session's: the audit's exact reference must pick the exact session's token.
    EXPECT_EQ(a.greedy_exact, engine_test::argmax(le));
    EXPECT_EQ(a.greedy_mac, engine_test::argmax(lm));
    EXPECT_EQ(a.rel_l2[0], 0.0);
  }
  const auto& ls = mac.layer_stats();
  EXPECT_FALSE(ls[0].mac_enabled);
  EXPECT_EQ(ls[0].attention.heads_hit, 0);
  EXPECT_TRUE(ls[1].mac_enabled);
  EXPECT_GT(ls[1].attention.heads_hit, 0);
  EXPECT_LT(ls[1].attention.kv_tokens_read, ls[1].attention.kv_tokens_exact);
  EXPECT_EQ(ls[1].audit_steps, steps);
  EXPECT_GT(ls[1].audit_rel_l2_max, 0.0);  // reuse is approximate: it must differ from exact
  EXPECT_LT(ls[1].audit_rel_l2_mean(), 1.0);
}

}  // namespace

namespace {

// Prefill in many small chunks initialises the rings only from the chunks that reach the
// last W positions; the rings must come out as from one big chunk (same hits, same logits).
TEST(EngineSession, ChunkedPrefillLeavesTheSameRings) {
  const auto prompt = tokens(100, 10), cont = tokens(20, 11);
  SessionOptions o = base();
  o.attention.mode = AttentionMode::mac;
  o.attention.ring_dtype = macattn::DType::f32;
  o.attention.mac.window = 16;
  o.attention.mac.rect_offset = 4;
  o.attention.mac.tau = 0.0f;
  o.attention.mac.min_context = 0;
  std::vector<std::vector<float>> logits[2];
  macattn::StepStats stats[2];
  const std::int32_t chunks[2] = {6, 100};
  for (int i = 0; i < 2; ++i) {
    Session s(llama(), o);
    s.prefill(std::span(prompt).first(50), chunks[i]);
    s.prefill(std::span(prompt).subspan(50), chunks[i]);  // a second call continues the rings
    for (std::int32_t t : cont) {
      const auto l = s.decode(t);
      logits[i].emplace_back(l.begin(), l.end());
    }
    stats[i] = s.total_attention_stats();
  }
  EXPECT_GT(stats[0].heads_hit, 0);
  EXPECT_EQ(stats[0].heads_hit, stats[1].heads_hit);
  EXPECT_EQ(stats[0].ring_wipes, 0);
  EXPECT_EQ(stats[1].ring_wipes, 0);
  for (std::size_t i = 0; i < cont.size(); ++i) EXPECT_LT(engine_test::rel_err(logits[0][i], logits[1][i]), 1e-4) << i;
}

}  // namespace
