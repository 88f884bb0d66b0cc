// src/cuda/mac_group_finish.cuh: the end of a MAC decode step for one KV group (sequence b, KV
// head g), run inside the attend kernel by the last of the group's blocks to arrive (a ticket
// counter), so that a step needs no kernel after the attend kernel: merge of the amend partials
// (+ the reused ring entry on a hit) into entry(t), the ring write (after wiping a stale ring),
// the merge of the complete partials (sinks + tail) into out, stats, and the reset of the scan
// minimum. An all-hit group's blocks decide, find no keys and take their tickets, so its finish
// follows its band at once instead of a kernel boundary and a kernel of its own later
// (MAC_ATTENTION.md §5, the cache update and complete steps). Internal.
#pragma once

#include "cuda/attend_tile.cuh"
#include "cuda/launch.cuh"
#include "cuda/mac_decide.cuh"
#include "macattn/attention.hpp"

namespace macattn::cuda::detail {

/// What the group finish writes and the counters it is chosen by.
struct FinishArgs {
  const void* q_pre = nullptr;           // [B, Hq, D] pre-RoPE queries (the ring rows to write)
  void* out = nullptr;                   // [B, Hq, D]
  float* lse = nullptr;                  // [B, Hq] or null
  HeadStats* head_stats = nullptr;       // [B, Hq] or null
  unsigned long long* best = nullptr;    // [B, Hq] the scan's minima (reset here for the next step)
  int* tickets = nullptr;                // [B, Hkv] attend blocks arrived (the scan kernel zeroes them)
  int* complete_done = nullptr;          // [B, Hkv] side complete blocks done (zeroed by the finish)
};

/// Called by every thread of a block after it wrote its partials of group `counter`'s step:
/// true in exactly one block, the last of `arrivals` to call it, which then sees every other
/// block's writes (release by thread 0's fence before the atomic, acquire after it, as a
/// cooperative grid sync does).
__device__ __forceinline__ bool take_group_ticket(int* counter, int arrivals) {
  __shared__ int last;
  __syncthreads();  // every thread's partial writes come before thread 0's release
  if (threadIdx.x == 0) {
    __threadfence();
    last = atomicAdd(counter, 1) == arrivals - 1 ? 1 : 0;
    if (last) __threadfence();
  }
  __syncthreads();
  return last != 0;
}

/// Thread 0 waits until *counter reaches `target` (written by blocks of a kernel on another
/// stream that is already running: the side complete kernel), then the block sees their writes.
__device__ __forceinline__ void wait_for_count(const int* counter, int target) {
  if (threadIdx.x == 0) {
    while (*reinterpret_cast<const volatile int*>(counter) < target) __nanosleep(64);
    __threadfence();
  }
  __syncthreads();
}

/// The group's finish. All kThreads threads call it. `scratch` is shared memory of `cap` floats
/// (the attention core's, free after its last run); `dec[r]` is row r's decision (stale rings
/// decided as misses, with the wiped ring's best kept for the stats). Partials are laid out
/// [B*Hq][splits + kCompleteSplits][D] and [B*Hq][splits + kCompleteSplits]; partials of
/// splits with no keys for a row have lse = -inf and an o never written (skipped, never read).
/// Work: rows in passes that fit the scratch (weights and the list of partials with weight);
/// each thread owns units of 4 consecutive elements of one row, and loads a unit's weighted
/// partials 16 at a time, so a miss row's 50-odd partials cost a few round trips to L2.
template <int D>
__device__ __noinline__ void finish_group(float* scratch, int cap, const RingArgs& ring, const MacArgs& mac, const FinishArgs& fa,
                             const float* part_o, const float* part_lse, int q_dtype, int hq, int group, int splits,
                             int b, int g, long long t, bool stale, const Decision* dec) {
  constexpr int kUnitsPerRow = D / 4;
  constexpr int kBatch = 16;
  const float ninf = -__int_as_float(0x7f800000);
  const int parts = splits + kCompleteSplits;
  const std::size_t row0 = static_cast<std::size_t>(b) * hq + static_cast<std::size_t>(g) * group;
  __shared__ float red[kRows][4];  // per row: amend max and sum, complete max and sum
  __shared__ int n_weighted[kRows];
  const int per_pass = cap / (2 * parts) < group ? (cap / (2 * parts) > 0 ? cap / (2 * parts) : 1) : group;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int r0 = 0; r0 < group; r0 += per_pass) {
    const int nr = group - r0 < per_pass ? group - r0 : per_pass;
    float* w = scratch;                                          // [nr][parts] lse, then weights
    int* list = reinterpret_cast<int*>(scratch + nr * parts);    // [nr][parts] partials with weight
    // Round trip 1: every partial's lse.
    for (int idx = threadIdx.x; idx < nr * parts; idx += kThreads) {
      const int r = idx / parts, p = idx - r * parts;
      w[idx] = __ldcg(part_lse + (row0 + r0 + r) * parts + p);
    }
    __syncthreads();
    // A warp per row: max and sum of the amend set [0, splits) and the complete set [splits,
    // parts), the normalised weights (each lane touches only its own entries), then the list of
    // the partials with weight, in split order.
    for (int r = warp; r < nr; r += kThreads / 32) {
      float* wr = w + r * parts;
      for (int set = 0; set < 2; ++set) {
        const int s0 = set == 0 ? 0 : splits, s1 = set == 0 ? splits : parts;
        float mx = ninf;
        for (int p = s0 + lane; p < s1; p += 32) mx = fmaxf(mx, wr[p]);
        for (int off = 16; off >= 1; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        float sum = 0.f;
        if (mx != ninf)
          for (int p = s0 + lane; p < s1; p += 32) sum += expf(wr[p] - mx);
        for (int off = 16; off >= 1; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
        for (int p = s0 + lane; p < s1; p += 32) wr[p] = mx == ninf ? 0.f : expf(wr[p] - mx) / sum;
        if (lane == 0) {
          red[r][2 * set] = mx;
          red[r][2 * set + 1] = sum;
        }
      }
      int n = 0;
      for (int p0 = 0; p0 < parts; p0 += 32) {
        const int p = p0 + lane;
        const bool weighted = p < parts && wr[p] != 0.f;
        const unsigned mask = __ballot_sync(0xffffffffu, weighted);
        if (weighted) list[r * parts + n + __popc(mask & ((1u << lane) - 1u))] = p;
        n += __popc(mask);
      }
      if (lane == 0) n_weighted[r] = n;
    }
    __syncthreads();
    for (int u = threadIdx.x; u < nr * kUnitsPerRow; u += kThreads) {
      const int r = u / kUnitsPerRow, i0 = (u - r * kUnitsPerRow) * 4;
      const int h = g * group + r0 + r;
      const std::size_t qrow = row0 + r0 + r;
      const Decision x = dec[r0 + r];
      // Loads that depend on nothing here first: the query row to store and a hit's ring entry.
      float q4[4], ro[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int k = 0; k < 4; ++k) q4[k] = load_float(fa.q_pre, q_dtype, qrow * D + i0 + k);
      if (x.hit) {
        const std::size_t mrow = (static_cast<std::size_t>(b) * mac.window + x.matched % mac.window) * hq + h;
#pragma unroll
        for (int k = 0; k < 4; ++k) ro[k] = load_float(ring.oring, ring.dtype, mrow * D + i0 + k);
      }
      // The weighted partials, kBatch loads in flight.
      const float* wr = w + r * parts;
      const int* lr = list + r * parts;
      const int n = n_weighted[r];
      const float* po = part_o + qrow * parts * D + i0;
      float4 eo = make_float4(0.f, 0.f, 0.f, 0.f), co = eo;
      for (int k0 = 0; k0 < n; k0 += kBatch) {
        float4 v[kBatch];
#pragma unroll
        for (int k = 0; k < kBatch; ++k)
          if (k0 + k < n) v[k] = __ldcg(reinterpret_cast<const float4*>(po + static_cast<std::size_t>(lr[k0 + k]) * D));
#pragma unroll
        for (int k = 0; k < kBatch; ++k)
          if (k0 + k < n) {
            const int p = lr[k0 + k];
            const float we = p < splits ? wr[p] : 0.f, wc = p < splits ? 0.f : wr[p];
            eo.x += we * v[k].x, eo.y += we * v[k].y, eo.z += we * v[k].z, eo.w += we * v[k].w;
            co.x += wc * v[k].x, co.y += wc * v[k].y, co.z += wc * v[k].z, co.w += wc * v[k].w;
          }
      }
      float e4[4] = {eo.x, eo.y, eo.z, eo.w};
      const float c4[4] = {co.x, co.y, co.z, co.w};
      const float am = red[r][0], cm = red[r][2];
      float el = am == ninf ? ninf : am + logf(red[r][1]);
      const float cl = cm == ninf ? ninf : cm + logf(red[r][3]);
      if (x.hit) {  // entry(t) = the reused entry (+) the band
        const MergeWeights mw = merge_weights(x.matched_lse, el);
#pragma unroll
        for (int k = 0; k < 4; ++k) e4[k] = mw.w1 * ro[k] + mw.w2 * e4[k];
        el = mw.lse;
      }
      // The writes. This thread wrote or read every ring element it touches below (program
      // order keeps the wipe before the new row and a hit's read of slot m before the write).
      if (stale) {  // wipe this row's slots
        for (int slot = 0; slot < mac.window; ++slot) {
          const std::size_t sr = (static_cast<std::size_t>(b) * mac.window + slot) * hq + h;
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            store_float(ring.qring, ring.dtype, sr * D + i0 + k, 0.f);
            store_float(ring.oring, ring.dtype, sr * D + i0 + k, 0.f);
          }
          if (i0 == 0) ring.lring[sr] = ninf;
        }
      }
      if (t >= 0) {
        const std::size_t wrow = (static_cast<std::size_t>(b) * mac.window + t % mac.window) * hq + h;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          store_float(ring.qring, ring.dtype, wrow * D + i0 + k, q4[k]);
          store_float(ring.oring, ring.dtype, wrow * D + i0 + k, e4[k]);
        }
        if (i0 == 0) ring.lring[wrow] = el;
      }
      const MergeWeights ow = merge_weights(el, cl);  // out = entry (+) sinks and tail
#pragma unroll
      for (int k = 0; k < 4; ++k) store_float(fa.out, q_dtype, qrow * D + i0 + k, ow.w1 * e4[k] + ow.w2 * c4[k]);
      if (i0 == 0) {
        if (fa.lse) fa.lse[qrow] = ow.lse;
        fa.best[qrow] = kNoMatch;
        if (fa.head_stats) {
          const long long new_end = entry_end_dev(t, mac.rect);
          HeadStats hs;
          hs.hit = x.hit ? 1 : 0;
          hs.matched_position = x.matched;
          hs.match_distance = x.distance;
          hs.band_len = x.hit ? static_cast<std::int32_t>(new_end - x.start) : 0;
          const long long sinks = x.start < mac.sinks ? x.start : mac.sinks;
          hs.kv_tokens_read = x.hit ? (t + 1 - x.start) + sinks : t + 1;
          fa.head_stats[qrow] = hs;
        }
        if (h == 0) {
          ring.position[b] = t + 1;
          ring.ready[b] = 1;
        }
      }
    }
    __syncthreads();  // the scratch is reused by the next pass
  }
}

}  // namespace macattn::cuda::detail
