// src/cuda/mac_decide.cuh: the MAC hit rule on the device, from the scan's packed minimum.
// Every kernel of a step that needs a head's decision recomputes it from the same inputs, so
// they agree without another grid-wide phase. Mirrors core/accounting.hpp's is_hit. Internal.
#pragma once

#include "cuda/device_common.cuh"
#include "cuda/launch.cuh"

namespace macattn::cuda::detail {

constexpr unsigned long long kNoMatch = ~0ull;

/// The scan's result for one head: (distance bits << 32) | (position - first candidate) << 1 |
/// unusable, so an unsigned minimum picks the smallest distance and, among equal ones, the
/// oldest position, and carries whether that row's ring entry can be reused (its lse finite;
/// bit 0 = 1: not), which the scan loads beside the row: deciding then needs no further load.
__device__ __forceinline__ unsigned long long pack_match(float distance, unsigned offset, bool unusable) {
  return (static_cast<unsigned long long>(__float_as_uint(distance)) << 32) | (offset << 1) | (unusable ? 1u : 0u);
}
__device__ __forceinline__ long long match_offset(unsigned long long best) {
  return static_cast<long long>((best & 0xffffffffull) >> 1);
}
__device__ __forceinline__ bool lse_finite(float l) { return l == l && fabsf(l) != __int_as_float(0x7f800000); }

struct Decision {
  long long matched = -1;  // best candidate position, -1 if none
  float distance = __builtin_huge_valf();
  bool hit = false;
  long long start = 0;  // first key of entry(t)
};

__device__ __forceinline__ long long entry_end_dev(long long p, int rect) {
  const long long e = p + 1 - rect;
  return e > 0 ? e : 0;
}
__device__ __forceinline__ long long first_candidate(long long t, int window) {
  return t - window > 0 ? t - window : 0;
}

/// A head's decision at decode position t from its scan result (no memory access).
__device__ __forceinline__ Decision decide(unsigned long long best, long long t, const MacArgs& mac) {
  Decision x;
  const long long new_end = entry_end_dev(t, mac.rect);
  x.start = new_end < mac.sinks ? new_end : mac.sinks;
  if (best == kNoMatch) return x;
  x.matched = first_candidate(t, mac.window) + match_offset(best);
  x.distance = __uint_as_float(static_cast<unsigned>(best >> 32));
  const long long e_m = entry_end_dev(x.matched, mac.rect);
  const bool finite = (best & 1ull) == 0;  // the matched entry's lse is finite (pack_match)
  x.hit = x.distance < mac.threshold && finite && (mac.sinks == 0 || e_m >= mac.sinks) && new_end - e_m >= 0 &&
          new_end - e_m <= mac.window;
  if (x.hit) x.start = e_m;
  return x;
}

}  // namespace macattn::cuda::detail
