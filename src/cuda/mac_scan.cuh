// src/cuda/mac_scan.cuh: MAC's match scan of one head over a run of 64-candidate tiles of its
// ring (mac_decode.cu's scan kernel).
// Distances in core/distance.hpp's fixed fp32 order, so decisions are bit-identical to the CPU.
// Internal.
#pragma once

#include "cuda/launch.cuh"
#include "cuda/mac_decide.cuh"

namespace macattn::cuda::detail {

constexpr int kScanSlots = 64;   // candidates per tile
constexpr int kScanStages = 2;   // tiles in flight per block (cp.async into shared memory)

/// Shared memory the scan needs: kScanStages tiles of ring rows.
__host__ __device__ constexpr std::size_t scan_smem_bytes(int head_dim, int ring_elem_bytes) {
  return static_cast<std::size_t>(kScanStages) * kScanSlots * head_dim * ring_elem_bytes;
}

/// Scans tiles [tile0, tile0 + tiles) of head h of sequence b (decode position t) and returns
/// the block's packed minimum (pack_match; kNoMatch if none) in every thread. The rows stream
/// into `smem` (scan_smem_bytes) by cp.async, two tiles in flight, so a block keeps 2 x 64 rows
/// in flight whatever D; each half-warp then computes one candidate's distance from shared
/// memory, lane l owning dims l, l+16, ... A stale ring (not ready, or at another position) is
/// wiped before it is scanned (CPU semantics): every row is zero, so the best is the oldest
/// candidate at distance |q|^2; only that one is scanned, against zeros. Every thread of the
/// block calls it (it synchronises). Threads: a multiple of 32.
template <int D, int Threads>
__device__ unsigned long long scan_head_tiles(char* smem, const void* q_pre, int q_dtype, const RingArgs& ring,
                                              const MacArgs& mac, int hq, int b, int h, long long t, bool stale,
                                              long long tile0, int tiles) {
  constexpr int kDims = D / 16, kHalves = Threads / 16;
  __shared__ unsigned long long warp_min[Threads / 32];
  const long long first = first_candidate(t, mac.window);
  const long long n = stale ? (t > first ? 1 : 0) : t - first;
  const long long n_tiles = (n + kScanSlots - 1) / kScanSlots;
  const long long tile_end = min(tile0 + tiles, n_tiles);
  if (tile0 >= tile_end) return kNoMatch;
  const int lane = threadIdx.x & 15, half = threadIdx.x >> 4;
  const int esize = ring.dtype == kF32 ? 4 : 2;
  const int row_bytes = D * esize, chunks = row_bytes / 16;
  float q[kDims];
  const std::size_t qbase = (static_cast<std::size_t>(b) * hq + h) * D;
#pragma unroll
  for (int k = 0; k < kDims; ++k) q[k] = load_float(q_pre, q_dtype, qbase + lane + k * 16);
  // Stage `st` <- the rows of tile `tile` (rows past the candidates, and a stale ring's, zero).
  auto issue = [&](long long tile, int st) {
    char* dst = smem + static_cast<std::size_t>(st) * kScanSlots * row_bytes;
    for (int idx = threadIdx.x; idx < kScanSlots * chunks; idx += Threads) {
      const int r = idx / chunks, c = idx % chunks;
      const long long cand = tile * kScanSlots + r;
      const bool valid = cand < n && !stale;
      const std::size_t row =
          (static_cast<std::size_t>(b) * mac.window + (valid ? (first + cand) % mac.window : 0)) * hq + h;
      cp_async_16(dst + r * row_bytes + c * 16, static_cast<const char*>(ring.qring) + row * row_bytes + c * 16, valid);
    }
  };
  unsigned long long mine = kNoMatch;
  issue(tile0, 0);
  cp_async_commit();
  for (long long tile = tile0; tile < tile_end; ++tile) {
    const int st = static_cast<int>((tile - tile0) % kScanStages);
    if (tile + 1 < tile_end) issue(tile + 1, (st + 1) % kScanStages);
    cp_async_commit();
    cp_async_wait<1>();  // this tile's rows have landed (the next tile's may still be in flight)
    __syncthreads();
    const char* rows = smem + static_cast<std::size_t>(st) * kScanSlots * row_bytes;
    // Every lane runs every iteration (the shuffles need the whole warp); lanes past the
    // candidates computed on zeros and drop the result.
#pragma unroll
    for (int it = 0; it < kScanSlots / kHalves; ++it) {
      const int r = it * kHalves + half;
      const long long c = tile * kScanSlots + r;
      const bool valid = c < n;
      const void* row = rows + r * row_bytes;
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k < kDims; ++k) {
        const float diff = __fsub_rn(q[k], load_float(row, ring.dtype, lane + k * 16));
        acc = __fmaf_rn(diff, diff, acc);
      }
      // Pairwise lane reduction: lane l += lane l+8, l+4, l+2, l+1 (core/distance.hpp).
#pragma unroll
      for (int width = 8; width >= 1; width >>= 1) acc = __fadd_rn(acc, __shfl_down_sync(0xffffffffu, acc, width, 16));
      if (valid && lane == 0 && acc < __int_as_float(0x7f800000)) {  // +inf and NaN never match (CPU: d < best)
        const unsigned long long key = pack_match(acc, static_cast<unsigned>(c));
        mine = key < mine ? key : mine;
      }
    }
    __syncthreads();  // the stage is read before the next iteration's copy overwrites it
  }
  cp_async_wait<0>();
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    const unsigned long long other = __shfl_xor_sync(0xffffffffu, mine, off);
    mine = other < mine ? other : mine;
  }
  if ((threadIdx.x & 31) == 0) warp_min[threadIdx.x >> 5] = mine;
  __syncthreads();
  unsigned long long m = kNoMatch;
#pragma unroll
  for (int w = 0; w < Threads / 32; ++w) m = warp_min[w] < m ? warp_min[w] : m;
  __syncthreads();  // warp_min is read before a later call writes it
  return m;
}

}  // namespace macattn::cuda::detail
