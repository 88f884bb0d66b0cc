// engine/sampling.hpp: choosing the next token from a row of logits.
//
// Greedy (temperature 0) takes the argmax, ties to the lowest id. Otherwise the logits are
// divided by the temperature, softmaxed, cut to the top-k tokens and then to the top-p nucleus
// (the order Hugging Face `generate` applies them), renormalised, and one token is drawn with
// a seeded std::mt19937_64. The uniform draw is built from the generator's raw bits rather
// than std::uniform_real_distribution (whose algorithm differs between standard libraries),
// so the same seed gives the same tokens on every platform.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace macattn::engine {

struct SamplingParams {
  /// 0 = greedy; otherwise logits are divided by it. Finite, in [0, 100].
  float temperature = 0.0f;
  /// Keep only the k most likely tokens (ties to the lowest id); 0 = no limit. >= 0.
  std::int32_t top_k = 0;
  /// Keep the smallest set of most likely tokens whose probability reaches top_p. In (0, 1].
  float top_p = 1.0f;
  /// Seed of the generator; the same seed and logits give the same tokens.
  std::uint64_t seed = 0;

  bool greedy() const { return temperature == 0.0f; }
  /// Throws macattn::Error naming the bad field and value.
  void validate() const;
  std::string to_string() const;
};

/// One token and its probability in the distribution a sampler draws from.
struct TokenProbability {
  std::int32_t id = 0;
  double probability = 0.0;
};

/// The index of the largest logit, ties to the lowest id. Logits must be non-empty, none NaN
/// or +inf (-inf is allowed: a masked token); throws macattn::Error otherwise.
std::int32_t argmax_token(std::span<const float> logits);

/// The renormalised distribution that Sampler draws from, most likely first (ties: lowest id
/// first); for greedy params, the argmax with probability 1. Validates params and logits.
std::vector<TokenProbability> sampling_distribution(std::span<const float> logits, const SamplingParams& params);

/// Draws tokens; owns the random generator, so successive calls continue one stream.
class Sampler {
 public:
  /// Throws macattn::Error if params are invalid.
  explicit Sampler(const SamplingParams& params);
  /// The next token for this row of logits (vocabulary-sized, see argmax_token for the rules).
  std::int32_t sample(std::span<const float> logits);
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace macattn::engine
