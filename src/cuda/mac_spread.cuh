// src/cuda/mac_spread.cuh: MAC's spread plan. Which attend block amends which group, decided
// by every block from every head's decision, so that no grid-wide phase is needed.
//
// Why: with the static plan, a group's span is split over that group's own `splits` blocks only.
// When few groups miss, few blocks carry all the K/V. Each block keeps one 32 KiB tile in flight,
// so the memory system idles. For example, at batch 16, 128K with 3% of groups missing, 12 blocks
// read 268 MB at 0.3 TB/s (h200.md, "What is left").
//
// The spread plan shares the whole grid among the groups that have amend keys, in proportion to
// their tiles (split_plan.hpp: spread_first_block). A group then has up to `slots` partials per
// head instead of `splits`. The plan depends only on the scan's minima, the stale flags and the
// sequence lengths, so every attend block computes the same plan. So does the block that writes
// `group_parts` (each group's partial count, read by the finish kernel).
//
// With every group missing on equal spans, the plan is the static one
// (SplitPlan.SpreadOfEqualMissesIsTheStaticPlan): an all-miss step attends the same splits,
// though the plan itself costs every block time before its first load (launch.cuh).
// It runs for large steps only (mac_spread_enabled: its fixed cost per block); MACATTN_CUDA_MAC_SPREAD=1
// or =0 forces either. Internal.
#pragma once

#include <cub/block/block_scan.cuh>

#include "cuda/attend_tile.cuh"
#include "cuda/mac_band.cuh"
#include "cuda/mac_decide.cuh"
#include "cuda/split_plan.hpp"

namespace macattn::cuda::detail {

/// A head's keys in the attend kernel: `start` is the first key of entry(t) (E(m) on a hit; the
/// sinks end there), and `amend_start` is the first key it amends there (E(t) when the finish
/// kernel attends a hit's band itself: nothing to amend here). Positions fit in 31 bits (the entry
/// points check max_seq_len).
struct HeadKeys {
  long long start, amend_start;
};

/// A head's keys from its scan minimum `best_raw` at position t. A stale ring decides as a wiped
/// ring does: no hit (its best row has lse = -inf).
__device__ __forceinline__ HeadKeys head_keys(unsigned long long best_raw, long long t, bool stale,
                                              const MacArgs& mac) {
  const long long new_end = entry_end_dev(t, mac.rect);
  if (stale) {
    const long long s = new_end < mac.sinks ? new_end : mac.sinks;
    return {s, s};
  }
  const unsigned long long m = t < mac.min_context ? kNoMatch : best_raw;
  const Decision x = decide(m, t, mac);
  return {x.start, band_in_finish(x, new_end, mac) ? new_end : x.start};
}

/// Shared memory the plan borrows from the attention core's K/V stages (free until the first
/// run): every head's scan minimum, then its start and amend start (32-bit each, in place), every
/// group's tiles, and every sequence's position and stale flag.
__host__ __device__ constexpr std::size_t spread_smem_bytes(long long heads, long long groups, long long batch) {
  return static_cast<std::size_t>(heads) * 8 + static_cast<std::size_t>(groups) * 4 + 8 +
         static_cast<std::size_t>(batch) * 9;  // 8: the positions' alignment
}

/// One block's part of the spread plan: amend split `part` of `parts` of group `group` (b * Hkv
/// + g); group -1 or part >= parts: no amend work.
struct SpreadWork {
  int group, part, parts;
};

using SpreadScan = cub::BlockScan<unsigned long long, kThreads, cub::BLOCK_SCAN_WARP_SCANS>;

/// The plan's arrays in `scratch` (spread_smem_bytes): head h's keys are
/// spread_keys(scratch)[2h] (start) and [2h + 1] (amend start) once spread_plan returns.
__device__ inline int* spread_keys(char* scratch) { return reinterpret_cast<int*>(scratch); }
/// Sequence b's decode position t is spread_positions(scratch, heads, groups)[b].
__device__ inline long long* spread_positions(char* scratch, int heads, int groups) {
  return reinterpret_cast<long long*>(scratch + ((static_cast<std::size_t>(heads) * 8 + groups * 4 + 7) & ~std::size_t(7)));
}

/// The spread plan, computed by all threads of one block (kThreads). `scratch`: at least
/// spread_smem_bytes(batch * hq, batch * hkv, batch) bytes of shared memory (8-byte aligned);
/// on return it holds every head's keys (spread_keys) until the block's first run. `block` is
/// the block's index in [0, blocks); block 0 writes every group's partial count to
/// `group_parts` (0 for a group without amend keys). The scan's temporary storage and `work`
/// are the caller's __shared__.
/// The code is laid out for few instructions (a short block's time grows with the code it
/// fetches cold, h200.md): one load loop, one decision per head in a loop that is not unrolled,
/// and an all-hit step leaves after two barriers.
__device__ inline void spread_plan(const PagedKVArgs& kv, const MacArgs& mac, const unsigned long long* best,
                                   const std::uint8_t* stale_flags, int batch, int hkv, int hq, int group, int slots,
                                   long long block, long long blocks, char* scratch, int* group_parts,
                                   SpreadScan::TempStorage& scan_tmp, SpreadWork* work) {
  const int heads = batch * hq, groups = batch * hkv;
  unsigned long long* raw = reinterpret_cast<unsigned long long*>(scratch);
  int* keys = spread_keys(scratch);
  unsigned* group_tiles = reinterpret_cast<unsigned*>(raw + heads);
  long long* seq_t = spread_positions(scratch, heads, groups);
  std::uint8_t* seq_stale = reinterpret_cast<std::uint8_t*>(seq_t + batch);
  if (threadIdx.x == 0) *work = SpreadWork{-1, 0, 0};
  // 1. Loads (the first kLoads per thread in one round trip): minima, positions, stale flags.
  constexpr int kLoads = 4;  // 512 heads (batch 16 of Llama-3.1-8B) in one round trip
  unsigned long long m[kLoads];
#pragma unroll
  for (int k = 0; k < kLoads; ++k) {
    const int h = threadIdx.x + k * kThreads;
    m[k] = h < heads ? best[h] : kNoMatch;
  }
#pragma unroll 1
  for (int b = threadIdx.x; b < batch; b += kThreads) {
    seq_t[b] = seq_len(kv, b) - 1;
    seq_stale[b] = stale_flags[b];
  }
#pragma unroll
  for (int k = 0; k < kLoads; ++k) {
    const int h = threadIdx.x + k * kThreads;
    if (h < heads) raw[h] = m[k];
  }
#pragma unroll 1
  for (int h = threadIdx.x + kLoads * kThreads; h < heads; h += kThreads) raw[h] = best[h];
  __syncthreads();
  // 2. Each group's heads' keys (in place of their minima) and its tiles: a contiguous run of
  // groups per thread, so that one exclusive scan gives each its prefix.
  const int per = (groups + kThreads - 1) / kThreads;
  const int g0 = threadIdx.x * per, g1 = g0 + per < groups ? g0 + per : groups;
  unsigned long long mine = 0;  // (tiles << 16) | working groups, over this thread's groups
#pragma unroll 1
  for (int gi = g0; gi < g1; ++gi) {
    const int b = gi / hkv, h0 = b * hq + (gi - b * hkv) * group;
    const long long t = seq_t[b];
    const bool stale = seq_stale[b] != 0;
    const long long new_end = entry_end_dev(t, mac.rect);
    long long lo = new_end;
#pragma unroll 1
    for (int h = h0; h < h0 + group; ++h) {
      const HeadKeys k = head_keys(raw[h], t, stale, mac);
      keys[2 * h] = static_cast<int>(k.start);
      keys[2 * h + 1] = static_cast<int>(k.amend_start);
      lo = k.amend_start < lo ? k.amend_start : lo;
    }
    const unsigned tiles = static_cast<unsigned>((new_end - lo + kSplitTileKeys - 1) / kSplitTileKeys);
    group_tiles[gi] = tiles;
    mine += (static_cast<unsigned long long>(tiles) << 16) | (tiles > 0 ? 1u : 0u);
  }
  // 3. No amend keys anywhere (every head a hit whose band the finish kernel attends): one
  // barrier, and the all-hit step skips the scan below.
  if (!__syncthreads_or(mine != 0)) {
    if (block == 0)
      for (int gi = g0; gi < g1; ++gi) group_parts[gi] = 0;
    return;
  }
  // 4. Shares of the grid (split_plan.hpp); the scan's barriers publish the tiles.
  unsigned long long before, total;
  SpreadScan(scan_tmp).ExclusiveSum(mine, before, total);
  const unsigned long long all_tiles = total >> 16;
  const long long working = static_cast<long long>(total & 0xffffu);
  long long rank = static_cast<long long>(before & 0xffffu);
  unsigned long long prior = before >> 16;
#pragma unroll 1
  for (int gi = g0; gi < g1; ++gi) {
    const unsigned tiles = group_tiles[gi];
    int parts = 0;
    if (tiles > 0) {
      const long long first = spread_first_block(rank, prior, all_tiles, working, blocks);
      const long long last = spread_first_block(rank + 1, prior + tiles, all_tiles, working, blocks);
      parts = spread_parts(last - first, tiles, slots);
      if (block >= first && block < last) *work = SpreadWork{gi, static_cast<int>(block - first), parts};
      ++rank;
      prior += tiles;
    }
    if (block == 0) group_parts[gi] = parts;
  }
  __syncthreads();  // *work
}

}  // namespace macattn::cuda::detail
