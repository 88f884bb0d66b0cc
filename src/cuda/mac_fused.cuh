// src/cuda/mac_fused.cuh: MAC decode in ONE kernel for small grids (mac_decode.cu picks it:
// fused_path() in launch.cuh). The multi-kernel form pays a kernel boundary between the scan,
// the attend kernel and the finish kernel (each a drain, a launch and the next kernel's first
// dependent loads); at batch 1 those boundaries are most of an all-hit step. Here every block
// of a cooperative grid (all blocks resident at once, so waiting on another block is safe)
// takes work items in a fixed order:
//   1. scan items (B x Hq x chunks): scan_direct over a chunk of a head's ring, atomicMin into
//      best[head], then scan_done[head] += 1;
//   2. complete items (B x Hkv x kCompleteSplits): sinks + a part of the tail (no decision
//      changes these keys), as mac_complete_kernel;
//   3. amend items (B x Hkv x splits): wait until scan_done of the group's heads reaches the
//      chunk count, decide, attend this split of the amend span, as mac_attend_kernel.
// Block i takes items i, i + G, i + 2G, ... (G blocks), so every block finishes its scan items
// before it waits on anyone's: no wait can deadlock. Each complete or amend item then adds one
// to its group's count; the block that brings it to splits + kCompleteSplits merges the
// group's partials into out and the ring (finish_head_warp: one warp per head), and the last
// group of a sequence to finish advances the ring's position. Every counter is back at zero
// when the kernel ends (the workspace's counters are zero between calls). Decisions are the
// multi-kernel form's: the same scan order and sums, the same hit rule. Internal.
#pragma once

#include "cuda/attend_tile.cuh"
#include "cuda/mac_decide.cuh"
#include "cuda/mac_scan.cuh"
#include "cuda/merge_splits.cuh"

namespace macattn::cuda::detail {

constexpr int kFusedScanPerThread = 4;  // scan_direct candidates in flight per thread of a scan item

/// Candidates per scan item of the fused kernel (kThreads threads).
template <int D, typename RT> __host__ __device__ constexpr int fused_scan_candidates() {
  return direct_block_candidates<D, RT, kThreads, kFusedScanPerThread>();
}

/// The workspace's counters for one call: scan_done [B * Hq], group_done [B * Hkv], seq_done [B].
struct FusedCounters {
  unsigned* scan_done;
  unsigned* group_done;
  unsigned* seq_done;
};

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

/// Merges head h's partials (written by other blocks) into entry(t), writes the ring row (wiping
/// a stale ring first), out, lse, stats, and resets the scan minimum: mac_finish_kernel's work
/// by one warp (lane l: elements l + 32k). The position / ready update is the caller's.
template <int D>
__device__ void finish_head_warp(const void* q_pre, void* out, int q_dtype, float* lse, const RingArgs& ring,
                                 const MacArgs& mac, int hq, int splits, unsigned long long* best, bool stale,
                                 long long t, const float* part_o, const float* part_lse, HeadStats* head_stats,
                                 int b, int h) {
  constexpr int E = D / 32;
  const int lane = threadIdx.x & 31;
  const int parts = splits + kCompleteSplits;
  const std::size_t qrow = static_cast<std::size_t>(b) * hq + h;
  const float ninf = -__int_as_float(0x7f800000);
  // Loads that depend on nothing, all in flight together: the minimum, q_pre, the partials' lse.
  const unsigned long long best_raw = __ldcg(best + qrow);
  float qv[E];
#pragma unroll
  for (int k = 0; k < E; ++k) qv[k] = load_float(q_pre, q_dtype, qrow * D + lane + 32 * k);
  const float* pl = part_lse + qrow * parts;
  const float la = lane < parts ? __ldcg(pl + lane) : ninf;
  const float lb = lane + 32 < parts ? __ldcg(pl + lane + 32) : ninf;  // parts <= 64 here (fused_path)
  const long long new_end = entry_end_dev(t, mac.rect);
  const unsigned long long m = t < mac.min_context ? kNoMatch : best_raw;
  const long long cand = first_candidate(t, mac.window) + static_cast<long long>(m & 0xffffffffull);
  float ro[E];
#pragma unroll
  for (int k = 0; k < E; ++k) ro[k] = 0.f;
  if (!stale && m != kNoMatch) {
    const std::size_t mrow = (static_cast<std::size_t>(b) * mac.window + cand % mac.window) * hq + h;
#pragma unroll
    for (int k = 0; k < E; ++k) ro[k] = load_float(ring.oring, ring.dtype, mrow * D + lane + 32 * k);
  }
  Decision x = decide(stale ? kNoMatch : m, t, mac, ring, b, h, hq);
  if (stale && m != kNoMatch) {  // the wiped ring's best: oldest candidate at |q|^2, never a hit
    x.matched = cand;
    x.distance = __uint_as_float(static_cast<unsigned>(m >> 32));
  }
  // Max and sum of exp over the amend partials [0, splits) and the complete ones [splits, parts).
  auto in_amend = [&](int p) { return p < splits; };
  float am = ninf, cm = ninf;
  if (lane < parts) (in_amend(lane) ? am : cm) = la;
  if (lane + 32 < parts) {
    if (in_amend(lane + 32)) am = fmaxf(am, lb);
    else cm = fmaxf(cm, lb);
  }
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, off));
    cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, off));
  }
  auto weight_of = [&](int p, float l) { return (in_amend(p) ? am : cm) == ninf ? 0.f : expf(l - (in_amend(p) ? am : cm)); };
  float asum = 0.f, csum = 0.f;
  if (lane < parts) (in_amend(lane) ? asum : csum) += weight_of(lane, la);
  if (lane + 32 < parts) (in_amend(lane + 32) ? asum : csum) += weight_of(lane + 32, lb);
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    asum += __shfl_xor_sync(0xffffffffu, asum, off);
    csum += __shfl_xor_sync(0xffffffffu, csum, off);
  }
  // The partials' o, weighted in part order; empty partials (weight 0, o never written) skipped.
  float eo[E], co[E];
#pragma unroll
  for (int k = 0; k < E; ++k) eo[k] = co[k] = 0.f;
  for (int p = 0; p < parts; ++p) {
    const float l = __shfl_sync(0xffffffffu, p < 32 ? la : lb, p & 31);
    const float e = weight_of(p, l);
    const float w = e == 0.f ? 0.f : e / (in_amend(p) ? asum : csum);
    if (w == 0.f) continue;  // uniform over the warp
    const float* po = part_o + (qrow * parts + p) * D + lane;
#pragma unroll
    for (int k = 0; k < E; ++k) {
      const float v = w * __ldcg(po + 32 * k);
      if (in_amend(p)) eo[k] += v;
      else co[k] += v;
    }
  }
  float el = am == ninf ? ninf : am + logf(asum);
  const float cl = cm == ninf ? ninf : cm + logf(csum);
  if (x.hit) {  // amend = the reused entry (+) the band
    const std::size_t mrow = (static_cast<std::size_t>(b) * mac.window + x.matched % mac.window) * hq + h;
    const MergeWeights mw = merge_weights(ring.lring[mrow], el);
#pragma unroll
    for (int k = 0; k < E; ++k) eo[k] = mw.w1 * ro[k] + mw.w2 * eo[k];
    el = mw.lse;
  }
  __syncwarp();  // every lane has read the ring (lring[m], oring[m]) before it is written
  if (stale) {   // wipe this head's rows of every slot
    for (int slot = 0; slot < mac.window; ++slot) {
      const std::size_t r = (static_cast<std::size_t>(b) * mac.window + slot) * hq + h;
#pragma unroll
      for (int k = 0; k < E; ++k) {
        store_float(ring.qring, ring.dtype, r * D + lane + 32 * k, 0.f);
        store_float(ring.oring, ring.dtype, r * D + lane + 32 * k, 0.f);
      }
      if (lane == 0) ring.lring[r] = ninf;
    }
    __syncwarp();
  }
  const std::size_t wrow = (static_cast<std::size_t>(b) * mac.window + t % mac.window) * hq + h;
  const MergeWeights ow = merge_weights(el, cl);
#pragma unroll
  for (int k = 0; k < E; ++k) {
    const int i = lane + 32 * k;
    store_float(ring.qring, ring.dtype, wrow * D + i, qv[k]);
    store_float(ring.oring, ring.dtype, wrow * D + i, eo[k]);
    store_float(out, q_dtype, qrow * D + i, ow.w1 * eo[k] + ow.w2 * co[k]);
  }
  if (lane == 0) {
    ring.lring[wrow] = el;
    if (lse) lse[qrow] = ow.lse;
    best[qrow] = kNoMatch;
    if (head_stats) {
      HeadStats hs;
      hs.hit = x.hit ? 1 : 0;
      hs.matched_position = x.matched;
      hs.match_distance = x.distance;
      hs.band_len = x.hit ? static_cast<std::int32_t>(new_end - x.start) : 0;
      const long long sinks = x.start < mac.sinks ? x.start : mac.sinks;
      hs.kv_tokens_read = x.hit ? (t + 1 - x.start) + sinks : t + 1;
      head_stats[qrow] = hs;
    }
  }
}

/// The fused MAC step (see the top of this file). Grid: G blocks of kThreads (cooperative);
/// dynamic shared memory TileSmem<D, NS>::kBytes. scan_chunks = ceil(W / fused_scan_candidates).
template <int D, int NS, typename T, typename RT>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1)
    mac_fused_kernel(PagedKVArgs kv, const void* q_post, const void* q_pre, void* out, int q_dtype, float* lse,
                     RingArgs ring, MacArgs mac, int batch, int hq, int hkv, int splits, int scan_chunks, float scale,
                     float bound, unsigned long long* best, float* part_o, float* part_lse, HeadStats* head_stats,
                     FusedCounters counters) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  __shared__ long long starts[kRows];
  __shared__ int last_flag;
  const int group = hq / hkv, parts = splits + kCompleteSplits;
  const int n_scan = batch * hq * scan_chunks, n_complete = batch * hkv * kCompleteSplits;
  const int n_items = n_scan + n_complete + batch * hkv * splits;
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  constexpr int kScanPer = fused_scan_candidates<D, RT>();

  // After an item's partial is written: one more for the group; the block that completes the
  // group merges it (and the last group of a sequence advances the ring's position).
  auto count_and_finish = [&](int b, int g, long long t, bool stale) {
    __threadfence();  // this thread's stores of the partial before the count
    __syncthreads();
    if (threadIdx.x == 0) {
      const unsigned prev = atomicAdd(counters.group_done + b * hkv + g, 1u);
      last_flag = prev + 1 == static_cast<unsigned>(parts);
    }
    __syncthreads();
    if (!last_flag) return;
    __threadfence();  // the other blocks' partials are visible (read with __ldcg)
    for (int r = threadIdx.x >> 5; r < group; r += kThreads / 32)
      finish_head_warp<D>(q_pre, out, q_dtype, lse, ring, mac, hq, splits, best, stale, t, part_o, part_lse,
                          head_stats, b, g * group + r);
    __syncthreads();
    if (threadIdx.x < group) counters.scan_done[b * hq + g * group + threadIdx.x] = 0;
    if (threadIdx.x == 0) {
      counters.group_done[b * hkv + g] = 0;
      __threadfence();
      const unsigned prev = atomicAdd(counters.seq_done + b, 1u);
      if (prev + 1 == static_cast<unsigned>(hkv)) {
        ring.position[b] = t + 1;
        ring.ready[b] = 1;
        counters.seq_done[b] = 0;
      }
    }
  };

  for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
    __syncthreads();  // the previous item's shared memory is free
    if (item < n_scan) {  // ---- scan: chunk c of head h of sequence b
      const int c = item % scan_chunks, h = (item / scan_chunks) % hq, b = item / (scan_chunks * hq);
      const long long t = seq_len(kv, b) - 1;
      const bool stale = ring.ready[b] == 0 || ring.position[b] != t;
      if (t >= mac.min_context) {
        const ScanRows<RT> rows = scan_rows<RT>(ring, mac, hq, D, b, h, t, stale);
        float q[D / 16];
        const std::size_t qrow = (static_cast<std::size_t>(b) * hq + h) * D;
#pragma unroll
        for (int k = 0; k < D / 16; ++k) q[k] = load_float(q_pre, q_dtype, qrow + (threadIdx.x & 15) + k * 16);
        const unsigned long long m =
            scan_direct<D, RT, kThreads, kFusedScanPerThread>(q_pre, q_dtype, qrow, q, rows, c * kScanPer, bound);
        if (threadIdx.x == 0 && m != kNoMatch) atomicMin(best + static_cast<std::size_t>(b) * hq + h, m);
      }
      if (threadIdx.x == 0) {
        __threadfence();  // the minimum before the count
        atomicAdd(counters.scan_done + b * hq + h, 1u);
      }
      continue;
    }
    const bool complete = item < n_scan + n_complete;
    const int rest = complete ? item - n_scan : item - n_scan - n_complete;
    const int per_group = complete ? kCompleteSplits : splits;
    const int j = rest % per_group, g = (rest / per_group) % hkv, b = rest / (per_group * hkv);
    const long long t = seq_len(kv, b) - 1;
    const long long new_end = entry_end_dev(t, mac.rect);
    const bool stale = ring.ready[b] == 0 || ring.position[b] != t;
    if (threadIdx.x < kRows) q_rows[threadIdx.x] = group_query_row(q_post, esize, D, b, hq, g, group, threadIdx.x);
    __syncthreads();
    stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);
    KeySpans spans{0, 0, 0, 0};
    if (complete) {  // ---- complete part j: [0, min(F, E(t))) for j = 0, and part j of [E(t), t+1)
      const long long sink_end = new_end < mac.sinks ? new_end : mac.sinks;
      if (threadIdx.x < kRows)
        Tile::row_keys(smem)[threadIdx.x] =
            threadIdx.x < group ? RowKeys{0, sink_end, new_end, t + 1} : RowKeys{0, 0, 0, 0};
      long long a, z;
      split_range(new_end, t + 1, kCompleteSplits, j, &a, &z);
      spans = KeySpans{0, j == 0 ? sink_end : 0, a, z};
    } else {  // ---- amend split j of the group's span [min start, E(t)), once its heads are scanned
      if (threadIdx.x < group) {
        const int h = g * group + threadIdx.x;
        const unsigned* done = counters.scan_done + b * hq + h;
        while (load_acquire(done) < static_cast<unsigned>(scan_chunks)) __nanosleep(64);
        const unsigned long long best_raw = __ldcg(best + static_cast<std::size_t>(b) * hq + h);
        const unsigned long long m = (stale || t < mac.min_context) ? kNoMatch : best_raw;
        // A stale step decides as a wiped ring does: no hit (its best row has lse = -inf).
        const long long start =
            stale ? (new_end < mac.sinks ? new_end : mac.sinks) : decide(m, t, mac, ring, b, h, hq).start;
        starts[threadIdx.x] = start;
        Tile::row_keys(smem)[threadIdx.x] = RowKeys{start, new_end, 0, 0};
      } else if (threadIdx.x < kRows) {
        Tile::row_keys(smem)[threadIdx.x] = RowKeys{0, 0, 0, 0};
      }
      __syncthreads();
      long long lo = new_end;
      for (int r = 0; r < group; ++r) lo = starts[r] < lo ? starts[r] : lo;
      split_range(lo, new_end, splits, j, &spans.lo0, &spans.hi0);
    }
    const bool work = spans.count() > 0;
    if (work) {
      __syncthreads();  // query tile and row keys written
      Tile::run(smem, kv, b, g, spans, scale, group);
    }
    write_group_partial<D, NS, T>(smem, part_o, part_lse, b, hq, g, group, parts, complete ? splits + j : j, work);
    count_and_finish(b, g, t, stale);
  }
}

}  // namespace macattn::cuda::detail
