// tests/sim.hpp: runs MAC decode steps on the library and on the oracle side by side.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "fixture.hpp"

namespace fx {

struct SimSpec {
  macattn::AttentionShape shape;
  macattn::MacConfig cfg;
  DType kv_dtype = DType::f32, q_dtype = DType::f32, ring_dtype = DType::f32;
  std::vector<std::int64_t> start_len;  ///< per sequence: seq_len at the first step (>= 1)
  int steps = 0;
  std::uint64_t seed = 1;
  double drift = 0.3, jump_prob = 0.2, jump = 3.0;  ///< see drifting_queries
  /// true: before each step the oracle ring is re-read from the library ring, so each step is
  /// checked on its own (needed for reduced-precision rings, whose rounding differences would
  /// otherwise accumulate along reuse chains). false: the oracle keeps its own ring throughout.
  bool sync = true;
  /// true: mac_prefill_init over positions [0, start_len-1) before the first step.
  bool prefill = false;
  /// The backend under test (the oracle is the same for all).
  macattn::Backend backend = macattn::Backend::reference;
  /// Extra tokens of KV and queries beyond start_len + steps (room for advance()).
  std::int64_t spare = 0;
  /// Output, LSE and ring-entry tolerance against the oracle; unset: tol_for(q_dtype) for
  /// outputs, tol_for(ring_dtype) for entries.
  std::optional<Tol> tol;
};

class Sim {
 public:
  explicit Sim(const SimSpec& spec);
  /// One decode step of every sequence on both sides; compares head stats, step stats,
  /// outputs, LSE and the whole ring.
  ::testing::AssertionResult step();
  /// Current seq_len of every sequence (the next step decodes position lens()[b] - 1).
  std::vector<std::int64_t> lens() const { return len_; }
  /// Appends n tokens to every sequence without a decode step (the ring misses them).
  void advance(std::int64_t n) {
    for (auto& l : len_) l += n;
  }
  /// Sets q_pre of sequence b, position pos, head h to row (D values, rounded to the q dtype).
  void set_pre(int b, std::int64_t pos, int h, const std::vector<float>& row);

  SimSpec spec;
  oracle::Params p;
  KVBatch kv;
  std::vector<QStream> q;
  std::vector<macattn::MacState> states;
  std::vector<oracle::Ring> rings;
  std::int64_t heads_hit = 0, heads_missed = 0, wipes = 0;
  // The latest step.
  Buf out;
  std::vector<float> lse;
  std::vector<macattn::HeadStats> hs;
  macattn::StepStats ss;
  std::vector<oracle::StepResult> ref;

 private:
  std::vector<std::int64_t> len_;
};

/// The two simulations' last steps made the same decisions: per head hit, matched position,
/// match distance (bit for bit), band length and tokens read, and the same step stats.
::testing::AssertionResult same_decisions(const Sim& a, const Sim& b);

/// `steps` steps of both simulations in lockstep, each checked against the oracle (step()) and
/// against the other (same_decisions); *hits gets the heads that hit, summed over the steps.
::testing::AssertionResult lockstep(Sim& a, Sim& b, int steps, std::int64_t* hits);

}  // namespace fx
