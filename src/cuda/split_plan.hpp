// src/cuda/split_plan.hpp: how the CUDA decode kernels divide a span of keys: the split-KV
// ranges (exact and MAC amend), which split block computes each of MAC's complete parts, and
// how MAC's spread plan shares the attend kernel's blocks among the groups that miss.
// Plain C++ with host/device qualifiers under nvcc, so the CPU tests check it
// (tests/test_split_plan.cpp) against a literal walk over the splits. Internal.
#pragma once

#if defined(__CUDACC__)
#define MACATTN_HOST_DEVICE __host__ __device__
#else
#define MACATTN_HOST_DEVICE
#endif

namespace macattn::cuda::detail {

constexpr int kSplitTileKeys = 64;   // keys per tile of the attention core (attend_tile.cuh's kBlockKeys)
constexpr int kCompleteSplits = 4;   // blocks MAC's complete step (tail + sinks) is spread over

/// Keys per split of a span of n keys in `splits` parts of whole tiles. In 32 bits (n < 2^31:
/// the entry points check max_seq_len): a 64-bit division is a long serial stretch in the
/// short blocks of a MAC hit step.
MACATTN_HOST_DEVICE inline long long split_keys(long long n, int splits) {
  const unsigned nu = static_cast<unsigned>(n), su = static_cast<unsigned>(splits);
  const unsigned per = ((nu + su - 1) / su + kSplitTileKeys - 1) / kSplitTileKeys * kSplitTileKeys;
  return static_cast<long long>(per);
}

/// Key range [*a, *b) of split `split` of [lo, hi) in `splits` parts of whole tiles: every
/// split holds split_keys keys but the last non-empty one (the remainder) and any after it
/// (none).
MACATTN_HOST_DEVICE inline void split_range(long long lo, long long hi, int splits, int split, long long* a,
                                            long long* b) {
  const long long per = split_keys(hi - lo, splits);
  long long s0 = lo + per * split, s1 = s0 + per;
  if (s0 > hi) s0 = hi;
  if (s1 > hi) s1 = hi;
  *a = s0;
  *b = s1;
}

/// Which split block computes complete part j (of kCompleteSplits, one tile each at the
/// default S = 256) of a group whose amend span is [lo, hi). The parts go to the blocks with
/// the least amend work: walking from the last split down, a block takes as many parts as it
/// has tiles fewer than a full split. So a miss group's parts land on its short last split (the
/// split plan's remainder) and do not lengthen the kernel, and an all-hit group (amend = a
/// short band in split 0) spreads its tail over kCompleteSplits blocks. When the blocks with
/// slack have fewer than kCompleteSplits tiles of it in all (an all-hit group with few splits:
/// batch 16 plans 3), they share the parts in contiguous ranges, so that each block's parts form
/// one run (one pipelined pass over its tiles, not one pass per part); without any slack the
/// parts go to the last blocks, one each.
/// In closed form (every block of the group evaluates it for every part, so it must be cheap):
/// split_range gives every split `per` keys (T = per / 64 tiles, or fewer when the span is
/// shorter than one split) up to the last non-empty split ne-1, which holds the remainder, and
/// nothing after it. So the splits above ne-1 have slack T each, split ne-1 has slack T - its
/// tiles, and the ones below have none: the walk stops there.
MACATTN_HOST_DEVICE inline int complete_owner(int j, int splits, long long lo, long long hi) {
  const int n = static_cast<int>(hi - lo);
  const int per = static_cast<int>(split_keys(n, splits));
  const int per_tiles = ((per < n ? per : n) + kSplitTileKeys - 1) / kSplitTileKeys;  // split 0's tiles
  if (per_tiles > 0) {
    const int nonempty = (n + per - 1) / per;  // splits [0, nonempty) hold keys
    const int empty = splits - nonempty;
    const int last_slack = per_tiles - (n - per * (nonempty - 1) + kSplitTileKeys - 1) / kSplitTileKeys;
    const int slack = empty * per_tiles + last_slack;
    if (slack >= kCompleteSplits) {
      if (j < empty * per_tiles) return splits - 1 - j / per_tiles;
      return nonempty - 1;  // j - empty * per_tiles < last_slack
    }
    if (slack > 0) return splits - 1 - j * (empty + (last_slack > 0 ? 1 : 0)) / kCompleteSplits;
  }
  return splits - 1 - j % splits;
}

/// Spread amend work (MAC, mac_spread.cuh): the attend kernel's `blocks` blocks are shared by
/// the groups that have amend keys in proportion to their tiles, each working group getting at
/// least one. A working group that has `rank` working groups and `before_tiles` of their tiles
/// before it takes blocks [spread_first_block(rank, before_tiles), spread_first_block(rank + 1,
/// before_tiles + its tiles)) of `total_tiles` over `working` groups (blocks >= working). With
/// every group working on equal tiles and blocks = groups x splits, group i gets blocks
/// [i * splits, (i + 1) * splits): the static plan.
MACATTN_HOST_DEVICE inline long long spread_first_block(long long rank, unsigned long long before_tiles,
                                                        unsigned long long total_tiles, long long working,
                                                        long long blocks) {
  return rank + static_cast<long long>(static_cast<unsigned long long>(blocks - working) * before_tiles / total_tiles);
}

/// Blocks a working group's span is split over: its share of the grid, at most `slots` (the
/// partial slots per head) and at most one per tile. Blocks of its share past these are idle.
MACATTN_HOST_DEVICE inline int spread_parts(long long share, unsigned long long tiles, int slots) {
  long long n = share < slots ? share : slots;
  if (static_cast<unsigned long long>(n) > tiles) n = static_cast<long long>(tiles);
  return static_cast<int>(n);
}

}  // namespace macattn::cuda::detail
