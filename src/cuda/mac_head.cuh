// src/cuda/mac_head.cuh: the head path of MAC decode (mac_decode.cu), for grids of at most one
// block per query head per multiprocessor: one block per query head scans the head's ring,
// decides, and on a hit finishes the head's whole step (band, tail and sinks, both merges, the
// ring row, out, stats) without waiting for any other block. A miss leaves its complete state
// (sinks + tail) as a partial for the split-KV attend kernel and the finish kernel, which then
// do what they do on the three-kernel path. So an all-hit step has one kernel of real work, and
// the attend and finish kernels that follow only read a marker and exit.
//
// Why (h200.md): on the three-kernel path a batch-1 all-hit step was a chain of dependent
// phases spread over four kernels (scan, side complete, attend, finish; 18.4-18.9 us a layer);
// here the chain is one block's: the ring's first 64 dims by cp.async, the quick bound, the
// rare exact sums, then one attention run over [band, tail] for two rows (the band's state and
// the complete state, the same query) while the matched entry's lse and o are in flight.
// Internal.
#pragma once

#include "cuda/attend_tile.cuh"
#include "cuda/block_profile.cuh"
#include "cuda/launch.cuh"
#include "cuda/mac_decide.cuh"
#include "cuda/mac_scan.cuh"

namespace macattn::cuda::detail {

/// The scan minimum's slot after a head-path step whose head hit (and was finished there): the
/// attend and finish kernels skip such heads. No scan result is this value (a real minimum has
/// a finite distance under the bound in its high bits).
constexpr unsigned long long kHitMarker = ~1ull;

/// Shared memory of the head path's scan: up to kRowsPerPass candidates' first kDims dims
/// (rows padded by 16 bytes) and q_pre's first kDims dims as floats.
template <int D, typename RT>
struct HeadScan {
  static constexpr int kDims = kDirectDims < D ? kDirectDims : D;
  static constexpr int kRowBytes = kDims * static_cast<int>(sizeof(RT));
  static constexpr int kStride = kRowBytes + 16;
  static constexpr int kChunks = kRowBytes / 16;
  static constexpr int kRowsPerPass = 65536 / kRowBytes;  // 512 for 2-byte rings, 256 for f32
  static constexpr int kPerThread = kRowsPerPass / kThreads;
  static constexpr std::size_t kBytes = static_cast<std::size_t>(kRowsPerPass) * kStride + kDims * sizeof(float);
};

/// Shared memory of mac_head_kernel<D, NS, T, RT>: the attention core's, then the scan's.
template <int D, int NS, typename RT>
constexpr std::size_t head_smem_bytes() {
  return TileSmem<D, NS>::kBytes + HeadScan<D, RT>::kBytes;
}

/// One pass of the head path's scan: candidates [c0, c0 + kRowsPerPass) of `rows` (their first
/// kDims dims into shared memory `stage` by cp.async, all in flight at once), a quick bound per
/// candidate by one thread (any summation order, the slack of scan_direct's), then the rows
/// still under it summed whole in core/distance.hpp's order (exact_survivors), so decisions and
/// distances are bit-identical to the CPU's. qp: q_pre's first kDims dims (shared memory); qx:
/// q_pre in the exact order's lane layout. Returns the packed minimum in every thread (every
/// thread of the block calls it; it synchronises, and the stage is free on return).
template <int D, typename RT>
__device__ unsigned long long head_scan_pass(char* stage, const float* qp, const float (&qx)[D / 16],
                                             const ScanRows<RT>& rows, int c0, float bound) {
  using S = HeadScan<D, RT>;
  constexpr int kCopies = S::kRowsPerPass * S::kChunks / kThreads;
  static_assert(S::kRowsPerPass % kThreads == 0 && kCopies * kThreads == S::kRowsPerPass * S::kChunks, "whole copies");
#pragma unroll 8
  for (int k = 0; k < kCopies; ++k) {
    const int idx = threadIdx.x + k * kThreads, r = idx / S::kChunks, ch = idx % S::kChunks;
    const int c = c0 + r;
    const bool valid = c < rows.n && !rows.stale;  // a stale ring reads as zeros
    const char* src = reinterpret_cast<const char*>(valid ? rows.row(c) : rows.base) + ch * 16;
    cp_async_16(stage + r * S::kStride + ch * 16, src, valid);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  const float quick_bound = bound * (1.f + kQuickBoundSlack);
  constexpr int kPerWord = 16 / static_cast<int>(sizeof(RT));
  // One candidate's code, run kPerThread times (not unrolled: a block's time here is largely
  // its code being fetched, h200.md); bit j of `under`: candidate j of this thread.
  unsigned under = 0;
#pragma unroll 1
  for (int j = 0; j < S::kPerThread; ++j) {
    const int r = threadIdx.x + j * kThreads;
    const char* row = stage + r * S::kStride;
    float a[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int ch = 0; ch < S::kChunks; ++ch) {
      float f[kPerWord];
      unpack16<RT>(*reinterpret_cast<const uint4*>(row + ch * 16), f);
#pragma unroll
      for (int e = 0; e < kPerWord; ++e) {
        const float d = __fsub_rn(qp[ch * kPerWord + e], f[e]);
        a[e & 3] = __fmaf_rn(d, d, a[e & 3]);
      }
    }
    const float sum = (a[0] + a[1]) + (a[2] + a[3]);
    if (!(sum >= quick_bound) && c0 + r < rows.n) under |= 1u << j;  // NaN stays (the exact sum decides)
  }
  unsigned long long mine = kNoMatch;
  const int warp = threadIdx.x >> 5;
#pragma unroll 1
  for (int j = 0; j < S::kPerThread; ++j)
    exact_survivors<D, RT, 1>(__ballot_sync(0xffffffffu, (under >> j) & 1u), c0 + j * kThreads + warp * 32, qx, rows,
                              bound, mine);
  return block_min<kThreads>(mine);
}

/// Grid (Hq, B), kThreads threads, head_smem_bytes<D, NS, RT>() of dynamic shared memory; only
/// with a finite scan bound (no one reads a miss's best row). Head h of sequence b:
///   1. t, the stale flag (also stored for the later kernels by head 0), q_pre and q;
///   2. the scan of the head's ring (head_scan_pass), minimum m;
///   3. the matched entry's lse and o requested (when m can be a hit), and one attention run
///      over [0, min(F, E(t))) and [E(m), t+1) for two rows of the same query: row 0 the band
///      [E(m), E(t)), row 1 the complete keys (sinks + tail [E(t), t+1));
///   4. a hit: entry(t) = entry(m) (+) band into the ring, out = entry(t) (+) complete, lse,
///      stats, and best[head] = kHitMarker; a miss: the complete state as partial splits + 0
///      (splits + 1 .. + kCompleteSplits - 1 empty) and best[head] = m, for the attend and
///      finish kernels. The sequence's ring position is left to the finish kernel (other heads'
///      blocks of this kernel read it).
template <int D, int NS, typename T, typename RT>
__global__ void __launch_bounds__(kThreads, 1)
    mac_head_kernel(PagedKVArgs kv, const void* q, const void* q_pre, void* out, int q_dtype, float* lse, RingArgs ring,
                    MacArgs mac, int hq, int group, int splits, float scale, float bound, unsigned long long* best,
                    std::uint8_t* stale_flags, float* part_o, float* part_lse, HeadStats* head_stats,
                    BlockStamps prof) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  using Scan = HeadScan<D, RT>;
  constexpr int kOwn = (D + kThreads - 1) / kThreads;  // elements of a row this thread writes
  char* stage = smem + TileSmem<D, NS>::kBytes;
  float* qp = reinterpret_cast<float*>(stage + static_cast<std::size_t>(Scan::kRowsPerPass) * Scan::kStride);
  __shared__ const void* q_rows[kRows];
  grid_dependency_wait();
  allow_dependents();
  stamp(prof, 0);
  const int h = blockIdx.x, b = blockIdx.y, g = h / group;
  const std::size_t qrow = static_cast<std::size_t>(b) * hq + h;
  const float ninf = -__int_as_float(0x7f800000);
  const long long t = seq_len(kv, b) - 1;
  const bool stale = ring.ready[b] == 0 || ring.position[b] != t;
  if (h == 0 && threadIdx.x == 0) stale_flags[b] = stale ? 1 : 0;
  const long long new_end = entry_end_dev(t, mac.rect);
  const long long sink_end = new_end < mac.sinks ? new_end : mac.sinks;
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  // Rows 0 and 1 of the attention core are this head's query (the band's and the complete state).
  if (threadIdx.x < kRows) q_rows[threadIdx.x] = threadIdx.x < 2 ? static_cast<const char*>(q) + qrow * D * esize : nullptr;
  float qx[D / 16];
#pragma unroll
  for (int k = 0; k < D / 16; ++k) qx[k] = load_float(q_pre, q_dtype, qrow * D + (threadIdx.x & 15) + k * 16);
  float qown[kOwn];
#pragma unroll
  for (int k = 0; k < kOwn; ++k) {
    const int i = threadIdx.x + k * kThreads;
    qown[k] = i < D ? load_float(q_pre, q_dtype, qrow * D + i) : 0.f;
    if (i < Scan::kDims) qp[i] = qown[k];
  }
  __syncthreads();  // q_rows, qp
  stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);

  unsigned long long m = kNoMatch;
  if (t >= mac.min_context) {
    const ScanRows<RT> rows = scan_rows<RT>(ring, mac, hq, D, b, h, t, stale);
    for (int c0 = 0; c0 < rows.n; c0 += Scan::kRowsPerPass) {
      const unsigned long long pm = head_scan_pass<D, RT>(stage, qp, qx, rows, c0, bound);
      m = pm < m ? pm : m;
    }
  }
  stamp(prof, 1);

  // The hit rule (mac_decide.cuh's decide) from m; the matched entry's lse, the one input that
  // needs a load, is requested now and read after the attention run.
  const bool found = m != kNoMatch;
  const long long cand = first_candidate(t, mac.window) + static_cast<long long>(m & 0xffffffffull);
  const float dist = __uint_as_float(static_cast<unsigned>(m >> 32));
  const long long e_m = entry_end_dev(cand, mac.rect);
  const bool maybe = found && !stale && dist < mac.threshold && (mac.sinks == 0 || e_m >= mac.sinks) &&
                     new_end - e_m >= 0 && new_end - e_m <= mac.window;
  const std::size_t mrow = (static_cast<std::size_t>(b) * mac.window + (maybe ? cand % mac.window : 0)) * hq + h;
  float l_m = ninf, ro[kOwn];
#pragma unroll
  for (int k = 0; k < kOwn; ++k) ro[k] = 0.f;
  if (maybe) {
    l_m = ring.lring[mrow];
#pragma unroll
    for (int k = 0; k < kOwn; ++k) {
      const int i = threadIdx.x + k * kThreads;
      if (i < D) ro[k] = load_float(ring.oring, ring.dtype, mrow * D + i);
    }
  }
  // A possible hit's band starts at E(m) >= F, so it never overlaps the sinks [0, min(F, E(t))).
  const long long band_lo = maybe ? e_m : new_end;
  if (threadIdx.x < kRows) {
    const int r = threadIdx.x;
    Tile::row_keys(smem)[r] = r == 0   ? RowKeys{band_lo, new_end, 0, 0}
                              : r == 1 ? RowKeys{0, sink_end, new_end, t + 1}
                                       : RowKeys{0, 0, 0, 0};
  }
  __syncthreads();  // the query tile and row keys
  const KeySpans spans{0, sink_end, band_lo, t + 1};
  const bool work = spans.count() > 0;
  if (work) Tile::run(smem, kv, b, g, spans, scale, 2);
  stamp(prof, 2);
  const float* mo = Tile::merged_o(smem);
  const float band_l = work ? Tile::merged_lse(smem)[0] : ninf;
  const float comp_l = work ? Tile::merged_lse(smem)[1] : ninf;
  const bool hit = maybe && l_m == l_m && fabsf(l_m) != __int_as_float(0x7f800000);
  const int parts = splits + kCompleteSplits;
  if (!hit) {  // the attend and finish kernels take it from here
    const std::size_t prow = qrow * parts + splits;
    if (comp_l != ninf)
      for (int i = threadIdx.x; i < D; i += kThreads) part_o[prow * D + i] = mo[D + i];
    if (threadIdx.x < kCompleteSplits) part_lse[prow + threadIdx.x] = threadIdx.x == 0 ? comp_l : ninf;
    if (threadIdx.x == 0) best[qrow] = m;
    stamp(prof, 3);
    return;
  }
  // entry(t) = entry(m) (+) band, into the ring; out = entry(t) (+) sinks and tail.
  const MergeWeights mw = merge_weights(l_m, band_l);
  const MergeWeights ow = merge_weights(mw.lse, comp_l);
  float eo[kOwn];
#pragma unroll
  for (int k = 0; k < kOwn; ++k) {
    const int i = threadIdx.x + k * kThreads;
    eo[k] = i < D ? mw.w1 * ro[k] + mw.w2 * mo[i] : 0.f;
  }
  __syncthreads();  // every thread has read entry(m) (its slot may be the one written below)
  const std::size_t wrow = (static_cast<std::size_t>(b) * mac.window + t % mac.window) * hq + h;
#pragma unroll
  for (int k = 0; k < kOwn; ++k) {
    const int i = threadIdx.x + k * kThreads;
    if (i < D) {
      store_float(ring.qring, ring.dtype, wrow * D + i, qown[k]);
      store_float(ring.oring, ring.dtype, wrow * D + i, eo[k]);
      store_float(out, q_dtype, qrow * D + i, ow.w1 * eo[k] + ow.w2 * mo[D + i]);
    }
  }
  if (threadIdx.x == 0) {
    ring.lring[wrow] = mw.lse;
    if (lse) lse[qrow] = ow.lse;
    best[qrow] = kHitMarker;
    if (head_stats) {
      HeadStats hs;
      hs.hit = 1;
      hs.matched_position = cand;
      hs.match_distance = dist;
      hs.band_len = static_cast<std::int32_t>(new_end - e_m);
      const long long sinks = e_m < mac.sinks ? e_m : mac.sinks;
      hs.kv_tokens_read = (t + 1 - e_m) + sinks;
      head_stats[qrow] = hs;
    }
  }
  stamp(prof, 3);
}

}  // namespace macattn::cuda::detail
