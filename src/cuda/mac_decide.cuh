// src/cuda/mac_decide.cuh: the MAC hit rule on the device, from the scan's packed minimum.
// Every kernel of a step that needs a head's decision recomputes it from the same inputs, so
// they agree without another grid-wide phase. Mirrors core/accounting.hpp's is_hit. Internal.
#pragma once

#include "cuda/device_common.cuh"
#include "cuda/launch.cuh"

namespace macattn::cuda::detail {

constexpr unsigned long long kNoMatch = ~0ull;

/// The scan's result for one head: (distance bits << 32) | (position - first candidate), so
/// an unsigned minimum picks the smallest distance and, among equal ones, the oldest position.
__device__ __forceinline__ unsigned long long pack_match(float distance, unsigned offset) {
  return (static_cast<unsigned long long>(__float_as_uint(distance)) << 32) | offset;
}

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

/// Head h of sequence b at decode position t (ring `ring`, hq heads).
__device__ __forceinline__ Decision decide(unsigned long long best, long long t, const MacArgs& mac,
                                           const RingArgs& ring, int b, int h, int hq) {
  Decision x;
  const long long new_end = entry_end_dev(t, mac.rect);
  x.start = new_end < mac.sinks ? new_end : mac.sinks;
  if (best == kNoMatch) return x;
  x.matched = first_candidate(t, mac.window) + static_cast<long long>(best & 0xffffffffull);
  x.distance = __uint_as_float(static_cast<unsigned>(best >> 32));
  const long long slot = x.matched % mac.window;
  const float l_m = ring.lring[(static_cast<std::size_t>(b) * mac.window + slot) * hq + h];
  const long long e_m = entry_end_dev(x.matched, mac.rect);
  const bool finite = l_m == l_m && fabsf(l_m) != __int_as_float(0x7f800000);
  x.hit = x.distance < mac.threshold && finite && (mac.sinks == 0 || e_m >= mac.sinks) && new_end - e_m >= 0 &&
          new_end - e_m <= mac.window;
  if (x.hit) x.start = e_m;
  return x;
}

}  // namespace macattn::cuda::detail
