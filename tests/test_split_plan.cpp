// tests/test_split_plan.cpp: the CUDA kernels' split plan (src/cuda/split_plan.hpp), checked on
// the CPU: split ranges against their definition, complete_owner's closed form against a
// literal walk over the splits (the form it replaced in the kernel), and the spread plan's
// shares of the attend grid against their definition (a partition, proportional to tiles).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "cuda/split_plan.hpp"

namespace {

using macattn::cuda::detail::complete_owner;
using macattn::cuda::detail::kCompleteSplits;
using macattn::cuda::detail::kSplitTileKeys;
using macattn::cuda::detail::split_range;
using macattn::cuda::detail::spread_first_block;
using macattn::cuda::detail::spread_parts;

long long tiles(long long a, long long b) { return (b - a + kSplitTileKeys - 1) / kSplitTileKeys; }

/// The walk: from the last split down, each takes as many parts as it has tiles fewer than
/// split 0; when all of that slack is less than kCompleteSplits, the splits that have any share
/// the parts in contiguous ranges; without slack, the last splits take one part each.
int walk_owner(int j, int splits, long long lo, long long hi) {
  long long a, b;
  split_range(lo, hi, splits, 0, &a, &b);
  const long long full = tiles(a, b);
  std::vector<long long> slack;  // from the last split down, until the first without slack
  for (int s = splits - 1; s >= 0; --s) {
    split_range(lo, hi, splits, s, &a, &b);
    const long long sl = full - tiles(a, b);
    if (sl <= 0) break;
    slack.push_back(sl);
  }
  long long total = 0;
  for (long long sl : slack) total += sl;
  if (total >= kCompleteSplits) {
    long long remaining = j;
    for (std::size_t i = 0; i < slack.size(); ++i) {
      if (remaining < slack[i]) return splits - 1 - static_cast<int>(i);
      remaining -= slack[i];
    }
  }
  if (total > 0) return splits - 1 - j * static_cast<int>(slack.size()) / kCompleteSplits;
  return splits - 1 - j % splits;
}

TEST(SplitPlan, RangesTileTheSpanInOrder) {
  std::mt19937_64 rng(7);
  for (int iter = 0; iter < 20000; ++iter) {
    const int splits = 1 + static_cast<int>(rng() % 300);
    const long long lo = static_cast<long long>(rng() % 5000);
    const long long n = iter % 3 == 0 ? static_cast<long long>(rng() % 200) : static_cast<long long>(rng() % 300000);
    long long prev = lo;
    bool ended = false;
    for (int s = 0; s < splits; ++s) {
      long long a, b;
      split_range(lo, lo + n, splits, s, &a, &b);
      ASSERT_EQ(a, prev) << "splits " << splits << " n " << n << " split " << s;
      ASSERT_LE(a, b);
      if (b < lo + n) {  // every split before the end holds whole tiles
        ASSERT_FALSE(ended);
        ASSERT_EQ((b - a) % kSplitTileKeys, 0) << "splits " << splits << " n " << n << " split " << s;
      }
      if (a == b) ended = true;
      prev = b;
    }
    ASSERT_EQ(prev, lo + n) << "splits " << splits << " n " << n << ": the splits must cover the span";
  }
}

TEST(SplitPlan, CompleteOwnerEqualsTheWalk) {
  std::mt19937_64 rng(11);
  const int fixed_splits[] = {1, 2, 3, 4, 5, 12, 49, 64, 100};
  for (int iter = 0; iter < 40000; ++iter) {
    const int splits = iter % 2 ? fixed_splits[rng() % 9] : 1 + static_cast<int>(rng() % 400);
    const long long choices[] = {0, 1, 2, 63, 64, 65, 255, 256, static_cast<long long>(rng() % 5000),
                                 static_cast<long long>(rng() % 300000)};
    const long long n = choices[rng() % 10];
    const long long lo = static_cast<long long>(rng() % 100000);
    for (int j = 0; j < kCompleteSplits; ++j) {
      const int got = complete_owner(j, splits, lo, lo + n);
      ASSERT_EQ(got, walk_owner(j, splits, lo, lo + n)) << "part " << j << ", splits " << splits << ", n " << n;
      ASSERT_GE(got, 0);
      ASSERT_LT(got, splits);
    }
  }
}

// The cases the kernels meet: an all-hit group (a one-key band) at batch 16 (3 splits) runs its
// parts in two contiguous pairs; at batch 1 (49 splits) on four idle blocks; a miss group's
// parts all land on the short last split.
TEST(SplitPlan, CompleteOwnerTypicalCases) {
  auto owners = [](int splits, long long n) {
    std::vector<int> o;
    for (int j = 0; j < kCompleteSplits; ++j) o.push_back(complete_owner(j, splits, 1000, 1000 + n));
    return o;
  };
  EXPECT_EQ(owners(3, 1), (std::vector<int>{2, 2, 1, 1}));
  EXPECT_EQ(owners(49, 1), (std::vector<int>{48, 47, 46, 45}));
  EXPECT_EQ(owners(12, 1), (std::vector<int>{11, 10, 9, 8}));
  EXPECT_EQ(owners(3, 131072 - 255), (std::vector<int>{2, 2, 2, 2}));
  EXPECT_EQ(owners(1, 1), (std::vector<int>{0, 0, 0, 0}));
}

// The spread plan (mac_spread.cuh) walks the groups as the kernel does: every block of the grid
// belongs to exactly one working group's range, in group order, each working group gets at
// least one block, and a share is within one block of its proportional part of the blocks
// left after one each.
TEST(SplitPlan, SpreadSharesPartitionTheGrid) {
  std::mt19937_64 rng(19);
  for (int iter = 0; iter < 20000; ++iter) {
    const int groups = 1 + static_cast<int>(rng() % 300);
    std::vector<unsigned long long> tiles(groups);
    long long working = 0;
    unsigned long long total = 0;
    const int miss_percent = static_cast<int>(rng() % 101);
    for (auto& t : tiles) {
      const bool miss = static_cast<int>(rng() % 100) < miss_percent;
      t = !miss ? 0 : (rng() % 4 == 0 ? 1 + rng() % 8 : 1 + rng() % 2048);
      working += t > 0;
      total += t;
    }
    if (working == 0) continue;
    const long long blocks = working + static_cast<long long>(rng() % 3000);
    long long rank = 0, next_block = 0;
    unsigned long long before = 0;
    for (int g = 0; g < groups; ++g) {
      if (tiles[g] == 0) continue;
      const long long first = spread_first_block(rank, before, total, working, blocks);
      const long long last = spread_first_block(rank + 1, before + tiles[g], total, working, blocks);
      ASSERT_EQ(first, next_block) << "iter " << iter << " group " << g << ": ranges must be contiguous";
      ASSERT_GE(last - first, 1) << "iter " << iter << " group " << g;
      const double fair = static_cast<double>(blocks - working) * static_cast<double>(tiles[g]) / static_cast<double>(total);
      ASSERT_LE(std::abs(static_cast<double>(last - first - 1) - fair), 1.0) << "iter " << iter << " group " << g;
      const int parts = spread_parts(last - first, tiles[g], 64);
      ASSERT_GE(parts, 1);
      ASSERT_LE(parts, std::min<long long>({last - first, 64, static_cast<long long>(tiles[g])}));
      next_block = last;
      ++rank;
      before += tiles[g];
    }
    ASSERT_EQ(next_block, blocks) << "iter " << iter << ": the ranges must cover the grid";
  }
}

// Every group missing with equal spans: the spread plan is the static one (group i, split s is
// block i * splits + s), so an all-miss step's blocks attend their own groups.
TEST(SplitPlan, SpreadOfEqualMissesIsTheStaticPlan) {
  for (int groups : {1, 8, 32, 128, 512})
    for (int splits : {1, 3, 12, 33, 49})
      for (unsigned long long tiles : {1ull, 7ull, 2048ull}) {
        const long long blocks = static_cast<long long>(groups) * splits;
        for (int g = 0; g < groups; ++g) {
          ASSERT_EQ(spread_first_block(g, g * tiles, groups * tiles, groups, blocks), static_cast<long long>(g) * splits)
              << groups << " groups, " << splits << " splits, " << tiles << " tiles";
        }
      }
}

}  // namespace
