// engine/sampling.cpp: greedy and temperature / top-k / top-p sampling (see sampling.hpp).
#include "sampling.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "macattn/error.hpp"

namespace macattn::engine {

namespace {

std::string value_text(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// NaN or +inf logits mean a broken forward pass; -inf is a deliberately masked token.
void check_logits(const char* function, std::span<const float> logits) {
  if (logits.empty()) throw Error(std::string(function) + ": logits are empty");
  bool any_finite = false;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const float l = logits[i];
    if (std::isnan(l) || l == std::numeric_limits<float>::infinity()) {
      throw Error(std::string(function) + ": logit of token " + std::to_string(i) + " is " + value_text(l) +
                  " (must be finite or -inf)");
    }
    any_finite = any_finite || std::isfinite(l);
  }
  if (!any_finite) throw Error(std::string(function) + ": every logit is -inf");
}

// Most likely first; equal weights keep the lowest id first, so cuts at ties are deterministic.
bool more_likely(const TokenProbability& a, const TokenProbability& b) {
  return a.probability != b.probability ? a.probability > b.probability : a.id < b.id;
}

void normalise(std::vector<TokenProbability>& tokens) {
  double total = 0.0;
  for (const TokenProbability& t : tokens) total += t.probability;
  for (TokenProbability& t : tokens) t.probability /= total;
}

// A uniform double in [0, 1) from the generator's top 53 bits: the same on every platform.
double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

}  // namespace

void SamplingParams::validate() const {
  if (!std::isfinite(temperature) || temperature < 0.0f || temperature > 100.0f) {
    throw Error("SamplingParams: temperature = " + value_text(temperature) + ", must be in [0, 100]");
  }
  if (top_k < 0) throw Error("SamplingParams: top_k = " + std::to_string(top_k) + ", must be >= 0");
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    throw Error("SamplingParams: top_p = " + value_text(top_p) + ", must be in (0, 1]");
  }
}

std::string SamplingParams::to_string() const {
  if (greedy()) return "greedy";
  std::ostringstream s;
  s << "temp " << temperature << ", top-k " << top_k << ", top-p " << top_p << ", seed " << seed;
  return s.str();
}

std::int32_t argmax_token(std::span<const float> logits) {
  check_logits("argmax_token", logits);
  std::size_t best = 0;
  for (std::size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;  // strict: the first maximum wins
  }
  return static_cast<std::int32_t>(best);
}

std::vector<TokenProbability> sampling_distribution(std::span<const float> logits, const SamplingParams& params) {
  params.validate();
  check_logits("sampling_distribution", logits);
  if (params.greedy()) return {{argmax_token(logits), 1.0}};

  // Softmax weights relative to the largest logit, in double; tokens whose weight is 0
  // (masked, or underflowed at a low temperature) can never be drawn and are left out.
  const double max_logit = logits[static_cast<std::size_t>(argmax_token(logits))];
  std::vector<TokenProbability> tokens;
  tokens.reserve(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const double w = std::exp((static_cast<double>(logits[i]) - max_logit) / params.temperature);
    if (w > 0.0) tokens.push_back({static_cast<std::int32_t>(i), w});
  }
  const std::size_t keep_k =
      params.top_k > 0 ? std::min(tokens.size(), static_cast<std::size_t>(params.top_k)) : tokens.size();
  std::partial_sort(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(keep_k), tokens.end(), more_likely);
  tokens.resize(keep_k);
  normalise(tokens);

  // Nucleus: the shortest most-likely-first prefix whose mass reaches top_p (at least one token).
  if (params.top_p < 1.0f) {
    double mass = 0.0;
    std::size_t keep = 0;
    while (keep < tokens.size() && mass < params.top_p) mass += tokens[keep++].probability;
    tokens.resize(std::max<std::size_t>(keep, 1));
    normalise(tokens);
  }
  return tokens;
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  params_.validate();
}

std::int32_t Sampler::sample(std::span<const float> logits) {
  if (params_.greedy()) return argmax_token(logits);
  const std::vector<TokenProbability> tokens = sampling_distribution(logits, params_);
  const double u = uniform01(rng_);
  double cumulative = 0.0;
  for (const TokenProbability& t : tokens) {
    cumulative += t.probability;
    if (u < cumulative) return t.id;
  }
  return tokens.back().id;  // u within rounding of 1
}

}  // namespace macattn::engine
