// engine/cuda/cuda_bench.hpp: what `macattn bench-e2e --device cuda` needs from a CudaSession
// beyond generation: random K/V at a given context without a prefill, MAC hit rates forced
// through the ring contents (the device scan still decides every hit), and timed replays of
// the decode step's CUDA graph. No CUDA header here; without CUDA every function throws.
#pragma once

#include <cstdint>
#include <span>

#include "engine/cuda/cuda_session.hpp"

namespace macattn::engine {

/// Every sequence gets `context` tokens: random bf16 K/V (uniform in [-1, 1), from a hash of
/// `seed`) at positions [0, context - 1), and its next decode step at position context - 1
/// (the step writes that token's K/V itself). Rings are wiped. Timing only: labelled synthetic.
void cuda_bench_fill_random_kv(CudaSession& session, std::int64_t context, std::uint64_t seed);

/// MAC mode: makes the rings of every MAC layer such that, for the decode step at the current
/// positions with tokens `tokens` [batch], the heads of the first round(group_hit_rate * Hkv)
/// KV groups of every sequence find an exact match at t - 1 (ring row = their own pre-RoPE
/// query) and every other row of every head misses: near (far_miss_rows false: query +/-
/// sqrt(2) in each element, signs from a hash of the element; squared distance exactly 2 per
/// dim, that of two unrelated unit-variance queries, so such a row passes the scan's 32-dim
/// bound at D = 128 and is rejected after 64 dims) or far (query + 100: rejected at the first
/// bound; the construction of the results before 2026-11-29's fifth session). Layer l's
/// queries depend on the MAC outputs of layers < l, so the layers are recorded in order, one
/// eager step each. Afterwards the benchmark replay restores the one ring slot a step
/// overwrites (and the ring positions) before each step.
void cuda_bench_force_hits(CudaSession& session, std::span<const std::int32_t> tokens, double group_hit_rate,
                           bool far_miss_rows = false);

struct CudaBenchTiming {
  double step_ms = 0.0;     ///< median over trials of the mean step time (restore subtracted)
  double restore_ms = 0.0;  ///< the restore kernel alone (subtracted)
  std::int32_t reps = 0;    ///< replays per trial
  std::int32_t trials = 0;
};

/// Synthetic contexts: replays (restore + decode step without advancing) `reps` times per
/// trial; stats are zeroed first and hold one checked step afterwards (layer_stats()).
CudaBenchTiming cuda_bench_time_replays(CudaSession& session, std::span<const std::int32_t> tokens, std::int32_t reps,
                                        std::int32_t trials);

/// Real contexts: `warmup` then `steps` decode steps of the graph that feeds each step's
/// greedy token to the next, timed with events around the `steps` launches (no host sync in
/// between). Stats are zeroed after the warm-up, so layer_stats() covers the timed steps.
/// Returns the mean milliseconds per step.
double cuda_bench_time_decode(CudaSession& session, std::span<const std::int32_t> tokens, std::int64_t warmup,
                              std::int64_t steps);

}  // namespace macattn::engine
