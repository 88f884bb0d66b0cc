// tools/macattn/synthetic_stream.hpp: a synthetic long-context decode stream for one sequence.
//
// What it makes, per position p (all fp32, deterministic for a seed):
// - Keys: a pre-RoPE key per KV head, then RoPE at p (so q.k depends on the distance, as in a
//   model). `random`: i.i.d. N(0, 1) entries. `clustered`: a centre chosen uniformly from a few
//   fixed random centres (N(0, 1) entries) plus N(0, 0.5^2) noise, so keys form groups that a
//   query aligned with one centre attends to strongly (the "semantic match" of a real model).
// - Values: i.i.d. N(0, 1) entries.
// - Queries: per query head a unit direction u that drifts slowly,
//       u <- normalise(u + drift * n),  n with N(0, 1/D) entries (|n| ~ 1, so drift ~ radians/step),
//   and with probability jump_prob per head per step jumps to a fresh direction (a fresh random
//   one; `clustered`: the centre of a random cluster). With clustered keys the drift also pulls
//   u back towards its cluster centre (rate kClusterPull) so the head keeps attending to it.
//   The pre-RoPE query is sqrt(D) * u (entries of unit scale, logits q.k/sqrt(D) of order 1 for
//   random keys); the post-RoPE query is that rotated at p.
// RoPE is Llama's rotate-half form with base theta (Llama 3.1: 500000), without Llama 3.1's
// long-context frequency scaling.
#pragma once

#include <cstdint>
#include <vector>

namespace macattn_tool {

enum class KeyMode { random, clustered };
const char* key_mode_name(KeyMode mode);

/// xoshiro256** with splitmix64 seeding; fast enough to fill millions of K/V rows per second.
class Rng {
 public:
  explicit Rng(std::uint64_t seed);
  std::uint64_t next();
  double uniform();   ///< in [0, 1)
  double gaussian();  ///< N(0, 1), Box-Muller
 private:
  std::uint64_t s_[4];
  double spare_ = 0.0;
  bool has_spare_ = false;
};

/// RoPE, Llama's rotate-half form: for i in [0, D/2), the pair (x[i], x[i + D/2]) is rotated by
/// the angle pos * theta^(-2i/D). head_dim must be even.
class Rope {
 public:
  Rope(std::int32_t head_dim, double theta);
  /// Rotates the head_dim values of x in place for position pos.
  void apply(float* x, std::int64_t pos) const;

 private:
  std::vector<double> inv_freq_;  // [D/2]
};

struct StreamConfig {
  std::int32_t num_q_heads = 32;
  std::int32_t num_kv_heads = 8;
  std::int32_t head_dim = 128;
  KeyMode keys = KeyMode::random;
  std::int32_t clusters = 16;  ///< number of key clusters (clustered keys only)
  double drift = 0.05;         ///< query drift per step (about radians)
  double jump_prob = 0.02;     ///< per head per step
  double rope_theta = 500000.0;
  std::uint64_t seed = 1;
};

class SyntheticStream {
 public:
  /// The stream of sequence `sequence` (different sequences get independent streams).
  SyntheticStream(const StreamConfig& config, std::int32_t sequence);

  /// K (post-RoPE) and V of position pos: k, v are [Hkv, D]. Call for positions 0, 1, 2, ...
  void next_kv(std::int64_t pos, float* k, float* v);
  /// Advances every query head one step and writes the queries of position pos:
  /// q_pre, q_post are [Hq, D]. The first call starts the heads at fresh directions.
  void next_query(std::int64_t pos, float* q_pre, float* q_post);

  std::int64_t query_jumps() const { return jumps_; }

 private:
  void random_unit(float* u);
  void set_to_cluster(float* u, std::int32_t cluster);

  StreamConfig config_;
  Rope rope_;
  Rng kv_rng_;
  Rng q_rng_;
  std::vector<float> centres_;  // [clusters, D], clustered keys only
  std::vector<float> u_;        // [Hq, D] unit query directions
  std::vector<float> anchor_;   // [Hq, D] cluster centre direction each head is pulled to
  bool started_ = false;
  std::int64_t jumps_ = 0;
};

}  // namespace macattn_tool
