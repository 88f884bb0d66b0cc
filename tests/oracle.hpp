// tests/oracle.hpp: an independent fp64 model of MAC_ATTENTION.md §2, §5 and §6.
//
// Nothing here calls library code except the public dtype rounding helpers (dtype.hpp) and
// plain config structs. Every state is computed in double precision from scratch; the ring
// is the oracle's own, holding the values a ring of `dtype` would hold (q and o rounded to
// the ring dtype, lse rounded to fp32).
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "macattn/config.hpp"
#include "macattn/dtype.hpp"

namespace oracle {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

/// fp32 value rounded to dtype (round to nearest even), returned as fp32.
float round_to(macattn::DType dtype, float v);

/// An attention state: natural-log lse and normalised output o (D values). lse = -inf: empty.
struct State {
  std::vector<double> o;
  double lse = kNegInf;
};
State empty_state(int head_dim);
/// MAC_ATTENTION.md §2, in fp64. Either side empty: the other side.
State merge(const State& a, const State& b);

/// K/V of one sequence as fp32 values (already rounded to the cache dtype): [len, Hkv, D].
struct Seq {
  std::vector<float> k, v;
  std::int64_t len = 0;
};

/// The parameters the oracle needs, taken from a shape and a config.
struct Params {
  int hq = 0, hkv = 0, d = 0;
  double scale = 0.0;  ///< the fp32 scale the library uses, as a double
  int w = 1, s = 1, f = 0;
  std::int64_t min_context = 0;
  float thr = 0.0f;  ///< 2*D*(1-tau)^2 evaluated in fp32
};
Params make_params(const macattn::AttentionShape& shape, const macattn::MacConfig& config);

/// E(p) = max(p + 1 - S, 0).
std::int64_t entry_end(std::int64_t p, int s);

/// Attention of one query (D fp32 values) on KV head g of `seq` over keys [lo, hi), in fp64.
State attend(const Params& p, const Seq& seq, int g, const float* q, std::int64_t lo, std::int64_t hi);

/// Exact attention of every head of one sequence over [0, len): q is [Hq, D].
std::vector<State> exact(const Params& p, const Seq& seq, std::int64_t len, const float* q);

/// The oracle's ring for one sequence (values as a ring of `dtype` would store them).
struct Ring {
  int w = 0, hq = 0, d = 0;
  macattn::DType dtype = macattn::DType::f32;
  std::vector<float> q, o, l;  // [W,Hq,D], [W,Hq,D], [W,Hq]
  std::int64_t position = 0;
  bool ready = false;

  Ring() = default;
  Ring(int window, int num_q_heads, int head_dim, macattn::DType ring_dtype);  // wiped, not ready
  void wipe(std::int64_t new_position);  // lse -inf, q = o = 0, position, ready
  float* qrow(std::int64_t slot, int h) { return q.data() + (slot * hq + h) * d; }
  float* orow(std::int64_t slot, int h) { return o.data() + (slot * hq + h) * d; }
  float& lse(std::int64_t slot, int h) { return l[static_cast<std::size_t>(slot * hq + h)]; }
  const float* qrow(std::int64_t slot, int h) const { return q.data() + (slot * hq + h) * d; }
  const float* orow(std::int64_t slot, int h) const { return o.data() + (slot * hq + h) * d; }
  float lse(std::int64_t slot, int h) const { return l[static_cast<std::size_t>(slot * hq + h)]; }
  /// Stores a state in a slot the way the ring dtype does.
  void store(std::int64_t slot, int h, const float* q_pre, const State& st);
};

struct HeadResult {
  bool hit = false;
  std::int64_t matched = -1;
  double distance = std::numeric_limits<double>::infinity();
  std::int32_t band = 0;
  std::int64_t kv_read = 0;
  State entry;  ///< what the step writes to the ring (before sink and tail)
  State out;    ///< the output state
};

struct StepResult {
  std::vector<HeadResult> heads;  // Hq
  bool wiped = false;
  std::int64_t groups = 0, groups_all_hit = 0, kv_tokens_read = 0, kv_tokens_exact = 0;
};

/// One MAC decode step (§5) at position t for one sequence: q_post and q_pre are [Hq, D]
/// fp32 values (already rounded to the query dtype). Updates `ring`.
StepResult mac_step(const Params& p, const Seq& seq, std::int64_t t, const float* q_post, const float* q_pre,
                    Ring& ring);

/// Prefill ring initialisation (§6 and attention.hpp): kv length P, n rows for positions
/// [P-n, P); q_post and q_pre are [n, Hq, D].
void prefill(const Params& p, const Seq& seq, std::int64_t P, std::int64_t n, const float* q_post,
             const float* q_pre, Ring& ring);

}  // namespace oracle
