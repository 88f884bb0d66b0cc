// tests/engine/cli/test_sampling.cpp: engine/sampling against an independent computation.
//
// The reference here states each rule directly instead of sorting and cutting: a token is in
// the top-k set iff fewer than k tokens rank above it; it is in the top-p nucleus iff the
// mass ranked above it is still below top_p. Sampled frequencies are checked against the
// exact renormalised distribution with a chi-square bound.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <vector>

#include "engine/sampling.hpp"
#include "macattn/error.hpp"

namespace {

using macattn::engine::argmax_token;
using macattn::engine::Sampler;
using macattn::engine::sampling_distribution;
using macattn::engine::SamplingParams;

// i ranks above j: larger logit, or equal logit and lower id.
bool ranks_above(const std::vector<float>& logits, std::size_t i, std::size_t j) {
  return logits[i] > logits[j] || (logits[i] == logits[j] && i < j);
}

// The exact distribution by definition: softmax(l / T) over top-k, renormalised, then the
// nucleus of that, renormalised. Returns id -> probability (zero-probability ids absent).
std::map<std::int32_t, double> reference_distribution(const std::vector<float>& logits, double temp, int top_k,
                                                      double top_p) {
  const std::size_t n = logits.size();
  std::vector<double> w(n);
  double z = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    std::size_t above = 0;
    for (std::size_t j = 0; j < n; ++j) above += ranks_above(logits, j, i) ? 1 : 0;
    const bool in_top_k = top_k == 0 || above < static_cast<std::size_t>(top_k);
    w[i] = in_top_k ? std::exp(static_cast<double>(logits[i]) / temp) : 0.0;
    z += w[i];
  }
  std::map<std::int32_t, double> out;
  double kept = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    if (w[i] == 0.0) continue;
    double mass_above = 0.0;
    for (std::size_t j = 0; j < n; ++j)
      if (ranks_above(logits, j, i)) mass_above += w[j] / z;
    if (top_p >= 1.0 || mass_above < top_p) {
      out[static_cast<std::int32_t>(i)] = w[i] / z;
      kept += w[i] / z;
    }
  }
  for (auto& [id, p] : out) p /= kept;
  return out;
}

std::map<std::int32_t, double> as_map(const std::vector<macattn::engine::TokenProbability>& d) {
  std::map<std::int32_t, double> m;
  for (const auto& t : d) m[t.id] = t.probability;
  return m;
}

const std::vector<float> kLogits = {1.0f, 3.0f, 0.5f, 3.0f, -1.0f, 2.0f, 0.0f, 2.5f};

TEST(Sampling, GreedyIsArgmaxWithTiesToLowestId) {
  EXPECT_EQ(argmax_token(kLogits), 1);  // ids 1 and 3 tie at 3.0
  const float ninf = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(argmax_token(std::vector<float>{ninf, -5.0f, ninf}), 1);
  EXPECT_EQ(argmax_token(std::vector<float>{7.0f}), 0);
  Sampler greedy(SamplingParams{});
  for (int i = 0; i < 5; ++i) EXPECT_EQ(greedy.sample(kLogits), 1);
  // Greedy ignores top-k / top-p: the argmax always.
  Sampler greedy_cut(SamplingParams{.temperature = 0.0f, .top_k = 3, .top_p = 0.1f, .seed = 9});
  EXPECT_EQ(greedy_cut.sample(kLogits), 1);
}

TEST(Sampling, DistributionMatchesReference) {
  for (double temp : {0.3, 1.0, 1.7}) {
    for (int top_k : {0, 1, 2, 3, 5, 8, 20}) {
      for (double top_p : {0.05, 0.4, 0.6, 0.9, 1.0}) {
        const SamplingParams p{.temperature = float(temp), .top_k = top_k, .top_p = float(top_p)};
        const auto got = as_map(sampling_distribution(kLogits, p));
        const auto want = reference_distribution(kLogits, double(p.temperature), top_k, double(p.top_p));
        ASSERT_EQ(got.size(), want.size()) << p.to_string();
        for (const auto& [id, prob] : want) {
          ASSERT_TRUE(got.count(id)) << p.to_string() << " lacks token " << id;
          EXPECT_NEAR(got.at(id), prob, 1e-12) << p.to_string() << " token " << id;
        }
      }
    }
  }
}

TEST(Sampling, SupportSetsAreExact) {
  // top-k 2 with the tie at 3.0: ids 1 and 3; top-k 3 adds 7 (2.5).
  EXPECT_EQ(as_map(sampling_distribution(kLogits, {.temperature = 1.0f, .top_k = 2})).size(), 2u);
  std::set<std::int32_t> k3;
  for (const auto& t : sampling_distribution(kLogits, {.temperature = 1.0f, .top_k = 3})) k3.insert(t.id);
  EXPECT_EQ(k3, (std::set<std::int32_t>{1, 3, 7}));
  // top-k 1 at a tie keeps the lowest id.
  const auto k1 = sampling_distribution(kLogits, {.temperature = 1.0f, .top_k = 1});
  ASSERT_EQ(k1.size(), 1u);
  EXPECT_EQ(k1[0].id, 1);
  // A tiny nucleus keeps exactly the most likely token.
  const auto p_small = sampling_distribution(kLogits, {.temperature = 1.0f, .top_p = 0.01f});
  ASSERT_EQ(p_small.size(), 1u);
  EXPECT_EQ(p_small[0].id, 1);
  EXPECT_DOUBLE_EQ(p_small[0].probability, 1.0);
  // Masked tokens are never in the support.
  const float ninf = -std::numeric_limits<float>::infinity();
  const std::vector<float> masked = {0.0f, ninf, 0.0f};
  const auto m = as_map(sampling_distribution(masked, {.temperature = 1.0f}));
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m.count(1), 0u);
}

// Pearson's chi-square of counts against probabilities (every category of `want`).
double chi_square(const std::map<std::int32_t, int>& counts, const std::map<std::int32_t, double>& want, int draws) {
  double chi2 = 0.0;
  for (const auto& [id, p] : want) {
    const double expected = p * draws;
    const double observed = counts.count(id) ? counts.at(id) : 0;
    chi2 += (observed - expected) * (observed - expected) / expected;
  }
  return chi2;
}

TEST(Sampling, FrequenciesMatchTheExactDistribution) {
  const int draws = 200000;
  for (const SamplingParams& p :
       {SamplingParams{.temperature = 1.0f, .seed = 1}, SamplingParams{.temperature = 0.7f, .top_k = 4, .seed = 2},
        SamplingParams{.temperature = 1.3f, .top_p = 0.8f, .seed = 3},
        SamplingParams{.temperature = 2.0f, .top_k = 6, .top_p = 0.9f, .seed = 4}}) {
    const auto want = reference_distribution(kLogits, double(p.temperature), p.top_k, double(p.top_p));
    Sampler sampler(p);
    std::map<std::int32_t, int> counts;
    for (int i = 0; i < draws; ++i) {
      const std::int32_t id = sampler.sample(kLogits);
      ASSERT_TRUE(want.count(id)) << p.to_string() << " drew token " << id << " outside the support";
      ++counts[id];
    }
    // Degrees of freedom <= 7; P(chi2_7 > 45) < 1e-6, so a correct sampler fails this about never.
    const double chi2 = chi_square(counts, want, draws);
    EXPECT_LT(chi2, 45.0) << p.to_string();
    // And the bound has power: the same draws against the untempered full softmax fail it.
    const auto wrong = reference_distribution(kLogits, 1.0, 0, 1.0);
    if (p.temperature != 1.0f || p.top_k != 0 || p.top_p != 1.0f) {
      EXPECT_GT(chi_square(counts, wrong, draws) + (want.size() != wrong.size() ? 1e9 : 0.0), 45.0);
    }
  }
}

TEST(Sampling, SameSeedSameTokens) {
  const SamplingParams p{.temperature = 1.5f, .top_k = 6, .top_p = 0.95f, .seed = 1234};
  Sampler a(p), b(p);
  SamplingParams other = p;
  other.seed = 1235;
  Sampler c(other);
  std::vector<std::int32_t> ta, tb, tc;
  for (int i = 0; i < 200; ++i) {
    ta.push_back(a.sample(kLogits));
    tb.push_back(b.sample(kLogits));
    tc.push_back(c.sample(kLogits));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_NE(ta, tc);  // 200 draws over >= 4 likely tokens: equal streams would mean the seed is ignored
}

TEST(Sampling, RejectsBadParametersAndLogits) {
  const auto bad = [](SamplingParams p, const char* text) {
    try {
      Sampler s(p);
      ADD_FAILURE() << "no error for " << text;
    } catch (const macattn::Error& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  bad({.temperature = -0.5f}, "temperature = -0.5");
  bad({.temperature = std::nanf("")}, "temperature = nan");
  bad({.temperature = 1.0f, .top_k = -1}, "top_k = -1");
  bad({.temperature = 1.0f, .top_p = 0.0f}, "top_p = 0");
  bad({.temperature = 1.0f, .top_p = 1.5f}, "top_p = 1.5");
  EXPECT_THROW(argmax_token(std::vector<float>{}), macattn::Error);
  EXPECT_THROW(argmax_token(std::vector<float>{0.0f, std::nanf("")}), macattn::Error);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_THROW(argmax_token(std::vector<float>{0.0f, inf}), macattn::Error);
  EXPECT_THROW(argmax_token(std::vector<float>{-inf, -inf}), macattn::Error);
  Sampler s({.temperature = 1.0f});
  try {
    s.sample(std::vector<float>{0.0f, 1.0f, std::nanf("")});
    ADD_FAILURE() << "no error for a NaN logit";
  } catch (const macattn::Error& e) {
    EXPECT_NE(std::string(e.what()).find("logit of token 2 is nan"), std::string::npos) << e.what();
  }
}

}  // namespace
