// src/cpu/fast/attend_groups.hpp: the one parallel driver behind every fast CPU path. A list
// of works (each: some queries sharing one KV head, a key range, per-query masks) is split
// into key chunks so that both cores have work even at batch 1; chunk partials are combined
// in key order, so results do not depend on the thread count. Internal.
#pragma once

#include <cstdint>
#include <span>

#include "cpu/fast/kernels.hpp"
#include "cpu/fast/partial.hpp"

namespace macattn::cpu {

struct GroupWork {
  std::int32_t b, g;          ///< sequence and KV head
  const float* q;             ///< [nq, D] fp32 queries
  std::int32_t nq;
  const std::int64_t* begin;  ///< [nq] first visible key per query
  const std::int64_t* end;    ///< [nq] one past the last visible key per query
  std::int64_t lo, hi;        ///< keys streamed: [lo, hi) covers every query's visible keys
  std::size_t out;            ///< index of this work's first query in the output Partials
};

/// Attends every work and combines the result into `out` (states out[w.out .. w.out+nq)),
/// which may already hold partials of other, disjoint key ranges.
void attend_groups(const KernelTable& kernels, const KVCacheView& kv, std::span<const GroupWork> works, float scale,
                   Partials& out);

}  // namespace macattn::cpu
