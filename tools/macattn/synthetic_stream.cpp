// tools/macattn/synthetic_stream.cpp: keys, values and drifting queries for the demo.
#include "synthetic_stream.hpp"

#include <cmath>
#include <numbers>

namespace macattn_tool {

namespace {

constexpr double kClusterKeyNoise = 0.5;  // std of a clustered key around its centre
constexpr double kClusterPull = 0.05;     // per-step pull of a query towards its cluster centre

std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::uint64_t rotl(std::uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

void normalise(float* x, std::int32_t n) {
  double ss = 0.0;
  for (std::int32_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const double inv = ss > 0.0 ? 1.0 / std::sqrt(ss) : 0.0;
  for (std::int32_t i = 0; i < n; ++i) x[i] = static_cast<float>(x[i] * inv);
}

}  // namespace

const char* key_mode_name(KeyMode mode) {
  return mode == KeyMode::random ? "random" : "clustered";
}

Rng::Rng(std::uint64_t seed) {
  std::uint64_t x = seed;
  for (std::uint64_t& s : s_) s = splitmix64(x);
}

std::uint64_t Rng::next() {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

double Rng::gaussian() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  const double a = 2.0 * std::numbers::pi * u2;
  spare_ = r * std::sin(a);
  has_spare_ = true;
  return r * std::cos(a);
}

Rope::Rope(std::int32_t head_dim, double theta) : inv_freq_(static_cast<std::size_t>(head_dim / 2)) {
  for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
    inv_freq_[i] = std::pow(theta, -2.0 * static_cast<double>(i) / head_dim);
  }
}

void Rope::apply(float* x, std::int64_t pos) const {
  const std::size_t half = inv_freq_.size();
  for (std::size_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(pos) * inv_freq_[i];
    const double c = std::cos(angle), s = std::sin(angle);
    const double a = x[i], b = x[i + half];
    x[i] = static_cast<float>(a * c - b * s);
    x[i + half] = static_cast<float>(b * c + a * s);
  }
}

SyntheticStream::SyntheticStream(const StreamConfig& config, std::int32_t sequence)
    : config_(config),
      rope_(config.head_dim, config.rope_theta),
      kv_rng_(config.seed * 1000003ull + 2ull * static_cast<std::uint64_t>(sequence)),
      q_rng_(config.seed * 1000003ull + 2ull * static_cast<std::uint64_t>(sequence) + 1ull) {
  const std::int32_t d = config_.head_dim;
  if (config_.keys == KeyMode::clustered) {
    // The centres are shared by all sequences of a seed (one "vocabulary of topics").
    Rng centre_rng(config.seed ^ 0xC1A5731Dull);
    centres_.resize(static_cast<std::size_t>(config_.clusters) * d);
    for (float& c : centres_) c = static_cast<float>(centre_rng.gaussian());
  }
  u_.assign(static_cast<std::size_t>(config_.num_q_heads) * d, 0.0f);
  anchor_.assign(u_.size(), 0.0f);
}

void SyntheticStream::next_kv(std::int64_t pos, float* k, float* v) {
  const std::int32_t d = config_.head_dim;
  for (std::int32_t g = 0; g < config_.num_kv_heads; ++g) {
    float* kg = k + static_cast<std::size_t>(g) * d;
    if (config_.keys == KeyMode::clustered) {
      const auto c = static_cast<std::int32_t>(kv_rng_.next() % static_cast<std::uint64_t>(config_.clusters));
      const float* centre = centres_.data() + static_cast<std::size_t>(c) * d;
      for (std::int32_t i = 0; i < d; ++i)
        kg[i] = static_cast<float>(centre[i] + kClusterKeyNoise * kv_rng_.gaussian());
    } else {
      for (std::int32_t i = 0; i < d; ++i) kg[i] = static_cast<float>(kv_rng_.gaussian());
    }
    rope_.apply(kg, pos);
  }
  const std::size_t nv = static_cast<std::size_t>(config_.num_kv_heads) * d;
  for (std::size_t i = 0; i < nv; ++i) v[i] = static_cast<float>(kv_rng_.gaussian());
}

void SyntheticStream::random_unit(float* u) {
  for (std::int32_t i = 0; i < config_.head_dim; ++i) u[i] = static_cast<float>(q_rng_.gaussian());
  normalise(u, config_.head_dim);
}

void SyntheticStream::set_to_cluster(float* u, std::int32_t cluster) {
  const std::int32_t d = config_.head_dim;
  const float* centre = centres_.data() + static_cast<std::size_t>(cluster) * d;
  for (std::int32_t i = 0; i < d; ++i) u[i] = centre[i];
  normalise(u, d);
}

void SyntheticStream::next_query(std::int64_t pos, float* q_pre, float* q_post) {
  const std::int32_t d = config_.head_dim;
  const bool clustered = config_.keys == KeyMode::clustered;
  const float noise_scale = static_cast<float>(config_.drift / std::sqrt(static_cast<double>(d)));
  for (std::int32_t h = 0; h < config_.num_q_heads; ++h) {
    float* u = u_.data() + static_cast<std::size_t>(h) * d;
    float* anchor = anchor_.data() + static_cast<std::size_t>(h) * d;
    const bool jump = !started_ || q_rng_.uniform() < config_.jump_prob;
    if (jump) {
      if (started_) ++jumps_;
      if (clustered) {
        set_to_cluster(anchor, static_cast<std::int32_t>(q_rng_.next() % static_cast<std::uint64_t>(config_.clusters)));
        for (std::int32_t i = 0; i < d; ++i) u[i] = anchor[i];
      } else {
        random_unit(u);
      }
    } else {
      for (std::int32_t i = 0; i < d; ++i) {
        float step = noise_scale * static_cast<float>(q_rng_.gaussian());
        if (clustered) step += static_cast<float>(kClusterPull) * (anchor[i] - u[i]);
        u[i] += step;
      }
      normalise(u, d);
    }
    const float len = std::sqrt(static_cast<float>(d));
    float* pre = q_pre + static_cast<std::size_t>(h) * d;
    float* post = q_post + static_cast<std::size_t>(h) * d;
    for (std::int32_t i = 0; i < d; ++i) pre[i] = post[i] = len * u[i];
    rope_.apply(post, pos);
  }
  started_ = true;
}

}  // namespace macattn_tool
