// src/cuda/mac_decode.cu: MAC decode (MAC_ATTENTION.md §5) in three or four kernels, every decision
// on the device (no host synchronisation; capturable in a CUDA graph; on Hopper the finish kernel
// is launched with programmatic dependent launch, and so is the attend kernel for grids of few
// groups (attend_pdl); the others only with MACATTN_CUDA_PDL=1):
//   1. scan   (grid slot-tiles x Hq x B): distances of q_pre to the ring's rows in the fixed
//      fp32 order of core/distance.hpp, packed minimum per head by atomicMin. Also records
//      whether each sequence's ring is stale (not ready / at another position). mac_scan
//      launches it apart (on the caller's stream, before q_post exists); mac_decode then
//      waits for it before 2.
//   2. attend (grid Hkv x splits x B: the exact kernel's blocks, group-major): each block
//      computes the heads' amend state (band [E(m), E(t)) on a hit, the prefix
//      [min(F,E(t)), E(t)) on a miss) over one split of the group's span, through the same
//      AttendTile as exact decode, so a miss group costs what exact costs and an all-hit group
//      touches only its bands (with the spread plan, mac_spread.cuh, large steps share all the
//      blocks among the groups with amend keys instead, each group's span split over its share);
//      the last blocks also compute the complete state (sinks + tail)
//      in kCompleteSplits parts, unless
//   2b. complete (grid kCompleteSplits x Hkv x B, small grids: side_complete()) computes them
//      on a side stream beside 1 and 2: no decision changes the complete state's keys.
//   3. finish (grid B*Hq): merges reuse + amend splits into entry(t), writes the ring row
//      (wiping a stale ring first), merges the complete state into out, writes stats, and
//      resets the scan's minimum for the next step.
#include <utility>

#include "cuda/block_profile.cuh"
#include "cuda/launch.cuh"
#include "cuda/mac_band.cuh"
#include "cuda/mac_decide.cuh"
#include "cuda/mac_scan.cuh"
#include "cuda/mac_spread.cuh"
#include "cuda/merge_splits.cuh"

namespace macattn::cuda {
namespace detail {
namespace {

constexpr int kScanThreads = 256;  // 16 half-warps, one candidate each at a time
// scan_direct: candidates whose loads one thread has in flight (4 measured faster than 8 at
// batch 1, 4 and 16 on the H200; h200.md).
constexpr int kDirectPerThread = 4;

// Scan of one head's candidates (mac_scan.cuh), then one atomicMin per block. Form (kScan*):
// kScanDirect, candidates [blockIdx.x * n, +n) by scan_direct (n = direct_block_candidates; no
// shared memory); kScanStaged, tiles [blockIdx.x * tiles_per_block, +tiles_per_block) of 64 by
// scan_staged (staged_smem_bytes). Also records whether each sequence's ring is stale (not ready
// / at another position). Rows at distance >= bound are dropped (mac_scan.cuh).
template <int D, typename RT, int Form>
__global__ void __launch_bounds__(kScanThreads) mac_scan_kernel(PagedKVArgs kv, const void* q_pre, int q_dtype,
                                                                long long q_row_stride, RingArgs ring, MacArgs mac,
                                                                int hq, int tiles_per_block, float bound,
                                                                unsigned long long* best, std::uint8_t* stale_flags,
                                                                BlockStamps prof) {
  extern __shared__ __align__(16) char scan_smem[];
  stamp(prof, 0);
  grid_dependency_wait();  // q_pre, the page table and the rings come from earlier kernels
  allow_dependents();
  stamp(prof, 1);
  const int h = blockIdx.y, b = blockIdx.z;
  const long long t = seq_len(kv, b) - 1;
  const bool stale = ring.ready[b] == 0 || ring.position[b] != t;
  if (blockIdx.x == 0 && h == 0 && threadIdx.x == 0) stale_flags[b] = stale ? 1 : 0;
  if (t < mac.min_context) return;
  stamp(prof, 2);  // the position is known (thread 0's loads)
  const ScanRows<RT> rows = scan_rows<RT>(ring, mac, hq, D, b, h, t, stale);
  float q[D / 16];
  // Row b starts q_row_stride elements after row b - 1 (Hq * D when contiguous; mac_scan).
  const std::size_t qbase =
      static_cast<std::size_t>(b) * q_row_stride + static_cast<std::size_t>(h) * D + (threadIdx.x & 15);
#pragma unroll
  for (int k = 0; k < D / 16; ++k) q[k] = load_float(q_pre, q_dtype, qbase + k * 16);
  unsigned long long m;
  if constexpr (Form == kScanDirect) {
    constexpr int kPer = direct_block_candidates<D, RT, kScanThreads, kDirectPerThread>();
    m = scan_direct<D, RT, kScanThreads, kDirectPerThread>(q_pre, q_dtype, qbase - (threadIdx.x & 15), q, rows,
                                                            blockIdx.x * kPer, bound);
  } else
    m = scan_staged<D, RT, kScanThreads>(scan_smem, q, rows, blockIdx.x * tiles_per_block, tiles_per_block, bound);
  if (threadIdx.x == 0 && m != kNoMatch) atomicMin(best + static_cast<std::size_t>(b) * hq + h, m);
  stamp(prof, 3);
}

// Spread (mac_spread.cuh): the spread plan decides which group's split this block amends; the
// static form (Spread false) amends split blockIdx.y of its own group. Separate instantiations,
// not a runtime switch: the static kernel's address math stays on blockIdx-derived (uniform)
// values, and each kernel carries only the attention cores it runs. With both forms behind one
// runtime branch every miss step at batch 1, 128K ran 13 us slower on the H200 (h200.md,
// nineteenth session). The spread kernel's amend is one call site of the core for its own group
// and for another's: with one call site for each (as until the twentieth session), ncu found 39%
// of the kernel's issue cycles stalled on instruction fetch and, with the side complete kernel
// (SideComplete, side_complete() true: the complete parts compiled out), 144 bytes of spills;
// one call site took 2-6 us off its steps at batches 1 and 4 (87 KB of code instead of 112).
template <int D, int NS, typename T, bool Spread, bool SideComplete = false>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1) mac_attend_kernel(PagedKVArgs kv, const void* q, int q_dtype,
                                                              MacArgs mac, int hq, int group, int splits, int slots,
                                                              float scale, const unsigned long long* best,
                                                              const std::uint8_t* stale_flags, float* part_o,
                                                              float* part_lse, int* group_parts, bool side_complete,
                                                              bool q_after_wait, BlockStamps prof) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  __shared__ long long starts[kRows];       // first key of entry(t) (E(m) on a hit): sinks end there
  __shared__ long long amend_starts[kRows];  // first amend key here: E(t) when the finish attends the band
  __shared__ SpreadScan::TempStorage scan_tmp;
  __shared__ SpreadWork spread;
  stamp(prof, 0);
  // Group-major grid (Hkv x splits x B): every group's split 0, which holds a hit's band, is
  // among the first blocks dispatched (measured: all-hit 0.1-0.4 us shorter at batch 1-16).
  // (b, g) is this block's own group: the one whose complete parts it may compute.
  const int g = blockIdx.x, split = blockIdx.y, b = blockIdx.z;
  const long long t = seq_len(kv, b) - 1;
  const long long new_end = entry_end_dev(t, mac.rect);
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  const int parts = slots + kCompleteSplits;
  if (threadIdx.x < kRows) q_rows[threadIdx.x] = group_query_row(q, esize, D, b, hq, g, group, threadIdx.x);
  __syncthreads();
  // The query's loads are issued first and written to shared memory only when this block has
  // keys to attend: they travel with the scan minimum's, and a block without work (a hit's
  // group) never waits for them.
  StagedQuery<D> staged;
  // After mac_scan the kernel before this one on the stream is the caller's (an engine's RoPE
  // kernel, which lets its dependents launch early), not the scan, whose launch waited for q:
  // then q is read only after the wait.
  if (q_after_wait) grid_dependency_wait();
  staged.load(q_rows, q_dtype);
  // The scan's minima and stale flags. With PDL (attend_pdl) what is above overlaps the scan;
  // dependents may launch only after this wait (the finish kernel reads the scan's minima
  // before its own wait).
  grid_dependency_wait();
  allow_dependents();
  SpreadWork w{-1, 0, 0};  // Spread: the group this block amends, its split and their number
  if constexpr (Spread) {
    const int hkv = gridDim.x, batch = gridDim.z;
    const long long block = (static_cast<long long>(b) * hkv + g) * splits + split;
    spread_plan(kv, mac, best, stale_flags, batch, hkv, hq, group, slots, block,
                static_cast<long long>(batch) * hkv * splits, smem, group_parts, scan_tmp, &spread);
    w = spread;
    if (threadIdx.x < kRows) {
      const int r = threadIdx.x;
      const int* keys = spread_keys(smem);
      const int own_h = b * hq + g * group + r;
      starts[r] = r < group ? keys[2 * own_h] : new_end;
      amend_starts[r] = r < group ? keys[2 * own_h + 1] : new_end;
      if (w.group >= 0) {
        const int ab = w.group / hkv, ag = w.group - ab * hkv, a_h = ab * hq + ag * group + r;
        const long long a_new_end = entry_end_dev(spread_positions(smem, batch * hq, batch * hkv)[ab], mac.rect);
        Tile::row_keys(smem)[r] = r < group ? RowKeys{keys[2 * a_h + 1], a_new_end, 0, 0} : RowKeys{0, 0, 0, 0};
        q_rows[r] = group_query_row(q, esize, D, ab, hq, ag, group, r);
      }
    }
  } else {
    const bool stale = stale_flags[b] != 0;
    if (threadIdx.x < kRows) {
      const int r = threadIdx.x, h = g * group + r;
      const bool real = r < group;
      // Loaded unconditionally, so it travels with the position and stale-flag loads instead of
      // waiting for them; the decision needs no further load (pack_match carries whether the
      // matched entry is usable), so the first K/V copy waits on one round trip.
      const unsigned long long best_raw = real ? best[static_cast<std::size_t>(b) * hq + h] : kNoMatch;
      const HeadKeys k = real ? head_keys(best_raw, t, stale, mac) : HeadKeys{new_end, new_end};
      starts[r] = k.start;
      amend_starts[r] = k.amend_start;
      Tile::row_keys(smem)[r] = real ? RowKeys{k.amend_start, new_end, 0, 0} : RowKeys{0, 0, 0, 0};
    }
  }
  __syncthreads();
  stamp(prof, 1);
  long long lo = new_end, sink_end = 0;
  for (int r = 0; r < group; ++r) {
    lo = amend_starts[r] < lo ? amend_starts[r] : lo;
    const long long e = starts[r] < mac.sinks ? starts[r] : mac.sinks;
    sink_end = e > sink_end ? e : sink_end;
  }
  auto attend = [&](int rb, int rg, const KeySpans& spans) {
    __syncthreads();  // query tile and row keys written; the previous run's results read
    Tile::run(smem, kv, rb, rg, spans, scale, group);
  };
  if constexpr (Spread) {
    // Amend: split w.part of w.parts of group w.group's span [min amend start, E(t)).
    if (w.group >= 0 && w.part < w.parts) {
      const int hkv = gridDim.x, ab = w.group / hkv, ag = w.group - ab * hkv;
      const bool own = ab == b && ag == g;
      long long alo = Tile::row_keys(smem)[0].a1, a_new_end = alo;
      for (int r = 0; r < group; ++r) alo = Tile::row_keys(smem)[r].a0 < alo ? Tile::row_keys(smem)[r].a0 : alo;
      KeySpans spans{0, 0, 0, 0};
      split_range(alo, a_new_end, w.parts, w.part, &spans.lo0, &spans.hi0);
      const bool work = spans.count() > 0;
      if (work) {
        if (own) {
          staged.store(Tile::q_tile(smem));
        } else {
          StagedQuery<D> other;  // another group's queries: one more round trip
          other.load(q_rows, q_dtype);
          other.store(Tile::q_tile(smem));
        }
        attend(ab, ag, spans);
      }
      write_group_partial<D, NS, T>(smem, part_o, part_lse, ab, hq, ag, group, parts, w.part, work);
      if (!side_complete && !(own && work)) {  // own && work: the tile holds this group's queries (a run leaves it)
        __syncthreads();  // the amended group's query tile is no longer read
        staged.store(Tile::q_tile(smem));
      }
    } else if (!side_complete) {
      staged.store(Tile::q_tile(smem));
    }
  } else {
    // Amend: this split of the group's span [min start, E(t)).
    KeySpans spans{0, 0, 0, 0};
    split_range(lo, new_end, splits, split, &spans.lo0, &spans.hi0);
    const bool amend_work = spans.count() > 0;
    // Blocks that attend: the amend split, or complete parts (only in this kernel without the
    // side complete kernel; which blocks own them is decided below, so all of them stage).
    if (amend_work || !side_complete) staged.store(Tile::q_tile(smem));
    if (amend_work) attend(b, g, spans);
    write_group_partial<D, NS, T>(smem, part_o, part_lse, b, hq, g, group, parts, split, amend_work);
  }
  stamp(prof, 2);
  // Complete parts of this block's own group: part j of the tail [E(t), t+1); part 0 also the
  // sinks. Consecutive parts owned by the block are one run over their union (its state is
  // written as the first part's partial, the others' as empty): the finish merges them all.
  for (int ja = (SideComplete || side_complete) ? kCompleteSplits : 0; ja < kCompleteSplits;) {  // side: mac_complete_kernel's
    if (complete_owner(ja, splits, lo, new_end) != split) {
      ++ja;
      continue;
    }
    int jb = ja;
    while (jb + 1 < kCompleteSplits && complete_owner(jb + 1, splits, lo, new_end) == split) ++jb;
    long long a, z, a2, z2;
    split_range(new_end, t + 1, kCompleteSplits, ja, &a, &z);
    split_range(new_end, t + 1, kCompleteSplits, jb, &a2, &z2);
    const KeySpans cs{0, ja == 0 ? sink_end : 0, a, z2 > a ? z2 : a};
    const bool work = cs.count() > 0;
    if (work) {
      __syncthreads();  // everyone has finished reading the previous results
      if (threadIdx.x < group) {
        const long long start = starts[threadIdx.x];
        Tile::row_keys(smem)[threadIdx.x] = RowKeys{0, start < mac.sinks ? start : mac.sinks, new_end, t + 1};
      }
      stamp(prof, 3);  // the last run's start (blocks that run a complete part)
      attend(b, g, cs);
      stamp(prof, 4);
    }
    write_group_partial<D, NS, T>(smem, part_o, part_lse, b, hq, g, group, parts, slots + ja, work);
    for (int j = ja + 1; j <= jb; ++j) write_group_partial<D, NS, T>(smem, part_o, part_lse, b, hq, g, group, parts, slots + j, false);
    ja = jb + 1;
  }
  if (prof.p) {
    __syncthreads();
    stamp(prof, 5);
  }
}

// MAC's complete state on its own (when side_complete(); grid kCompleteSplits x Hkv x B,
// launched on the workspace's side stream beside the scan and the attend kernel): part j of the
// tail [E(t), t+1), part 0 also the sinks [0, min(F, E(t))), as partial slots + j of every
// row of the group. No decision changes these keys: a hit needs E(m) >= F, so its sinks
// [0, min(F, E(m))) are [0, F) = [0, min(F, E(t))), and a miss's (or a stale ring's) start is
// min(F, E(t)) itself.
template <int D, int NS, typename T>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1) mac_complete_kernel(PagedKVArgs kv, const void* q,
                                                                                   int q_dtype, MacArgs mac, int hq,
                                                                                   int group, int slots, float scale,
                                                                                   float* part_o, float* part_lse,
                                                                                   BlockStamps prof) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  grid_dependency_wait();
  allow_dependents();
  stamp(prof, 0);
  const int j = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const long long t = seq_len(kv, b) - 1;
  const long long new_end = entry_end_dev(t, mac.rect);
  const long long sink_end = new_end < mac.sinks ? new_end : mac.sinks;
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  const int parts = slots + kCompleteSplits;
  if (threadIdx.x < kRows) {
    const int r = threadIdx.x;
    q_rows[r] = group_query_row(q, esize, D, b, hq, g, group, r);
    Tile::row_keys(smem)[r] = r < group ? RowKeys{0, sink_end, new_end, t + 1} : RowKeys{0, 0, 0, 0};
  }
  __syncthreads();
  stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);
  long long a, z;
  split_range(new_end, t + 1, kCompleteSplits, j, &a, &z);
  const KeySpans cs{0, j == 0 ? sink_end : 0, a, z};
  const bool work = cs.count() > 0;
  if (work) {
    __syncthreads();  // query tile written
    Tile::run(smem, kv, b, g, cs, scale, group);
  }
  write_group_partial<D, NS, T>(smem, part_o, part_lse, b, hq, g, group, parts, slots + j, work);
  stamp(prof, 1);
}

// One block per query head, blockDim = head_dim (thread i owns element i). The work is laid
// out so that the chain of dependent memory round trips is short (the step's floor at hit rate
// 1 is a chain of such trips), and so that what does not read the attend kernel's partials runs
// before grid_dependency_wait(): launched with programmatic dependent launch (finish_pdl()),
// that part overlaps the attend kernel. (1) the position, stale flag, scan minimum (the scan
// finished before the attend kernel started, which let this kernel launch), q_pre, q_post;
// (2) the matched ring entry's o and lse and a short band's page-table entries, then its K/V;
// then the wait; (3) the partials' lse and o; (4) the writes.
__global__ void mac_finish_kernel(PagedKVArgs kv, const void* q_post, const void* q_pre, void* out, int q_dtype,
                                  float* lse, RingArgs ring, MacArgs mac, int hq, int group, int head_dim, int slots,
                                  float scale, unsigned long long* best, const std::uint8_t* stale_flags,
                                  const float* part_o, const float* part_lse, const int* group_parts,
                                  HeadStats* head_stats, BlockStamps prof) {
  __shared__ float w[kMaxSplits + kCompleteSplits];  // partials' lse, then their weights
  __shared__ float red[4];                           // max and sum: amend, complete
  __shared__ long long band_rows[kFinishBandMax];    // a short band's K/V rows (mac_band.cuh)
  __shared__ float band_dots[8 * kFinishBandMax];    // its warps' partial dot products
  allow_dependents();
  stamp(prof, 0);
  const int h = blockIdx.x % hq, b = blockIdx.x / hq, i = threadIdx.x;
  const int parts = slots + kCompleteSplits;
  const std::size_t qrow = static_cast<std::size_t>(b) * hq + h;
  const float ninf = -__int_as_float(0x7f800000);
  // Round trip 1: everything that depends on nothing.
  const long long t = seq_len(kv, b) - 1;
  const bool stale = stale_flags[b] != 0;
  const unsigned long long best_raw = best[qrow];
  const float q_i = load_float(q_pre, q_dtype, qrow * head_dim + i);
  const float qpost_i = mac.finish_band > 0 ? load_float(q_post, q_dtype, qrow * head_dim + i) : 0.f;
  const long long new_end = entry_end_dev(t, mac.rect);
  const unsigned long long m = t < mac.min_context ? kNoMatch : best_raw;
  // Round trip 2: the candidate ring entry's o and lse (for the merge; the decision itself
  // needs no load: the scan's minimum says whether the lse is finite, pack_match), and a hit's
  // short band's page-table entries.
  const long long cand = first_candidate(t, mac.window) + match_offset(m);  // if m found one
  float ro = 0.f, rl = ninf;
  if (!stale && m != kNoMatch) {
    const std::size_t mrow = (static_cast<std::size_t>(b) * mac.window + cand % mac.window) * hq + h;
    ro = load_float(ring.oring, ring.dtype, mrow * head_dim + i);
    rl = ring.lring[mrow];
  }
  Decision x = decide(stale ? kNoMatch : m, t, mac);
  if (stale && m != kNoMatch) {  // the wiped ring's best: oldest candidate at |q|^2, never a hit
    x.matched = cand;
    x.distance = __uint_as_float(static_cast<unsigned>(m >> 32));
  }
  const bool banded = band_in_finish(x, new_end, mac);
  FinishBand band;
  if (banded) {
    band.first = x.start;
    band.n = static_cast<int>(new_end - x.start);
  }
  band.rows(kv, b, h / group, band_rows);
  __syncthreads();  // the band's rows
  if (banded) {
    band.dots(kv, band_rows, qpost_i, head_dim, band_dots);
    __syncthreads();  // the dot products, read by band.state after the wait (banded: block-uniform)
  }
  stamp(prof, 1);
  grid_dependency_wait();  // the attend kernel's partials (and the complete kernel's, joined)
  const float* po = part_o + qrow * parts * head_dim + i;
  float eo = 0.f, co = 0.f, el = ninf, cl = ninf;
  if (banded) {
    // A banded hit: the band is attended here, and the amend partials are empty (the attend
    // kernel gave this head no keys), so only the complete partials merge. Every warp computes
    // their max and sum itself (warp_lse_stats, a shuffle per weight): one round trip and no
    // barrier after the wait (0.4-0.8 us off the all-hit step at batch 1; the same form for
    // the amend partials of a miss was 4 us slower, for reasons not traced: h200.md, eighteenth
    // session).
    float pre_c[kCompleteSplits];
#pragma unroll
    for (int k = 0; k < kCompleteSplits; ++k) pre_c[k] = po[static_cast<std::size_t>(slots + k) * head_dim];
    float cm, csum, c0;
    warp_lse_stats(part_lse + qrow * parts + slots, kCompleteSplits, &cm, &csum, &c0);
    band.state(band_dots, head_dim, scale, &eo, &el);
    if (cm != ninf) {
      const float inv = 1.f / csum;
#pragma unroll
      for (int k = 0; k < kCompleteSplits; ++k) {
        const float w = expf(__shfl_sync(0xffffffffu, c0, k) - cm) * inv;
        co += w != 0.f ? w * pre_c[k] : 0.f;
      }
      cl = cm + logf(csum);
    }
  } else {
    // Round trip 3: the partials. An empty partial's o was never written; its weight is 0 and a
    // select (not a product) drops it. The amend partials are the first `splits` of the `slots`
    // (the spread plan's count for this group, mac_spread.cuh; all of them with the static
    // plan); the slots' lse are loaded with the count, and those past it are never read.
    const int splits = group_parts ? group_parts[static_cast<std::size_t>(b) * (hq / group) + h / group] : slots;
    // The lse in batches of loads issued together (a loop that stores each load to shared memory
    // before the next waits on every one: the spread plan's 260 slots at batch 1 are 3 per thread).
    constexpr int kLseBatch = 4;
#pragma unroll 1
    for (int p0 = i; p0 < parts; p0 += kLseBatch * static_cast<int>(blockDim.x)) {
      float v[kLseBatch];
#pragma unroll
      for (int k = 0; k < kLseBatch; ++k) {
        const int p = p0 + k * static_cast<int>(blockDim.x);
        v[k] = p < parts ? part_lse[qrow * parts + p] : 0.f;
      }
#pragma unroll
      for (int k = 0; k < kLseBatch; ++k) {
        const int p = p0 + k * static_cast<int>(blockDim.x);
        if (p < parts) w[p] = v[k];
      }
    }
    constexpr int kPrefetch = 16;  // of 32 splits at batch 1, 8K and 49 at 128K: the rest in 16s
    float pre_a[kPrefetch], pre_c[kCompleteSplits];
#pragma unroll
    for (int k = 0; k < kPrefetch; ++k)
      pre_a[k] = k < slots ? po[static_cast<std::size_t>(k) * head_dim] : 0.f;
#pragma unroll
    for (int k = 0; k < kCompleteSplits; ++k) pre_c[k] = po[static_cast<std::size_t>(slots + k) * head_dim];
    __syncthreads();  // the partials' lse
    // Max and sum of exp for the amend partials [0, splits) (warp 0) and the complete partials
    // [slots, parts) (warp 1, or warp 0 again when head_dim is 32).
    const int warp = i >> 5, lane = i & 31;
    for (int set = warp; set < 2; set += (blockDim.x >> 5)) {
      const int s0 = set == 0 ? 0 : slots, s1 = set == 0 ? splits : parts;
      float mx = ninf;
      for (int p = s0 + lane; p < s1; p += 32) mx = fmaxf(mx, w[p]);
      for (int off = 16; off >= 1; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      float sum = 0.f;
      if (mx != ninf)
        for (int p = s0 + lane; p < s1; p += 32) sum += expf(w[p] - mx);
      for (int off = 16; off >= 1; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      if (lane == 0) {
        red[2 * set] = mx;
        red[2 * set + 1] = sum;
      }
    }
    __syncthreads();
    const float am = red[0], asum = red[1], cm = red[2], csum = red[3];
    for (int p = i; p < parts; p += blockDim.x) {
      if (p >= splits && p < slots) continue;  // the spread plan's slots this group did not use: never read
      const float mx = p < slots ? am : cm, sum = p < slots ? asum : csum;
      w[p] = mx == ninf ? 0.f : expf(w[p] - mx) / sum;  // exp(-inf) = 0: an empty partial is skipped
    }
    __syncthreads();
    // The partials' o, weighted (in split order); amend partials past the prefetched ones load now.
#pragma unroll
    for (int k = 0; k < kPrefetch; ++k)
      if (k < splits) eo += w[k] != 0.f ? w[k] * pre_a[k] : 0.f;
#pragma unroll 16
    for (int p = kPrefetch; p < splits; ++p)
      if (w[p] != 0.f) eo += w[p] * po[static_cast<std::size_t>(p) * head_dim];
    el = am == ninf ? ninf : am + logf(asum);
    if (am == ninf) eo = 0.f;
#pragma unroll
    for (int k = 0; k < kCompleteSplits; ++k) co += w[slots + k] != 0.f ? w[slots + k] * pre_c[k] : 0.f;
    cl = cm == ninf ? ninf : cm + logf(csum);
  }
  if (x.hit) {  // amend = the reused entry (+) the band (x.matched is cand)
    const MergeWeights mw = merge_weights(rl, el);
    eo = mw.w1 * ro + mw.w2 * eo;
    el = mw.lse;
  }
  __syncthreads();  // every thread has read the ring (lring[m], oring[m]) before it is written
  stamp(prof, 2);
  // Round trip 3: the writes.
  if (stale) {  // wipe this head's rows of every slot (rare: a loop, not unrolled code)
#pragma unroll 1
    for (int slot = 0; slot < mac.window; ++slot) {
      const std::size_t r = (static_cast<std::size_t>(b) * mac.window + slot) * hq + h;
      store_float(ring.qring, ring.dtype, r * head_dim + i, 0.f);
      store_float(ring.oring, ring.dtype, r * head_dim + i, 0.f);
      if (i == 0) ring.lring[r] = ninf;
    }
  }
  const std::size_t wrow = (static_cast<std::size_t>(b) * mac.window + t % mac.window) * hq + h;
  store_float(ring.qring, ring.dtype, wrow * head_dim + i, q_i);
  store_float(ring.oring, ring.dtype, wrow * head_dim + i, eo);
  if (i == 0) ring.lring[wrow] = el;
  // Complete: out = entry (+) sinks and tail.
  const MergeWeights ow = merge_weights(el, cl);
  store_float(out, q_dtype, qrow * head_dim + i, ow.w1 * eo + ow.w2 * co);
  if (i == 0) {
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
    if (h == 0) {
      ring.position[b] = t + 1;
      ring.ready[b] = 1;
    }
  }
  stamp(prof, 3);
}

}  // namespace

// Launches mac_decode's scan kernel (kernel 1) on `s`: for mac_decode, or alone for mac_scan.
void launch_scan(const MacConfig& config, const PagedKVArgs& kva, ConstTensor q_pre, long long q_row_stride,
                 DType ring_dtype, const RingArgs& ring, const MacArgs& mac, int hq, int d, int batch, bool bounded,
                 bool two_per_sm, bool pdl, const Workspace::Buffers& ws, cudaStream_t s, ProfileScope& prof) {
  const float bound = bounded ? mac.threshold : __builtin_huge_valf();
  const int form = bounded ? scan_form() : kScanStaged;
  const int qd = static_cast<int>(q_pre.dtype);
  const int scan_tiles = (config.window + kScanSlots - 1) / kScanSlots;
  int per = 1;
  if (form == kScanStaged) {
    // A block takes `per` consecutive tiles of a head (double-buffered in shared memory); `per`
    // grows while the grid still fills the chip about four blocks deep, so large batches get
    // fewer, longer blocks with more bytes in flight each.
    const std::int64_t heads_total = static_cast<std::int64_t>(hq) * batch;
    const std::int64_t target = 4 * static_cast<std::int64_t>(device_sm_count());
    while (per * 2 <= scan_tiles && ((scan_tiles + per * 2 - 1) / (per * 2)) * heads_total >= target) per *= 2;
  }
  auto launch_form = [&]<int D, typename RT, int Form>() {
    auto kernel = mac_scan_kernel<D, RT, Form>;
    constexpr int kDirectPer = direct_block_candidates<D, RT, kScanThreads, kDirectPerThread>();
    const unsigned blocks = Form == kScanDirect ? static_cast<unsigned>((config.window + kDirectPer - 1) / kDirectPer)
                                                : static_cast<unsigned>((scan_tiles + per - 1) / per);
    const dim3 scan_grid(blocks, hq, batch);
    constexpr std::size_t bytes = Form == kScanDirect ? 0 : staged_smem_bytes<D, RT>();
    constexpr const char* name = Form == kScanDirect ? "mac_scan_kernel (direct)" : "mac_scan_kernel";
    allow_smem(kernel, bytes, mac_carveout("scan", two_per_sm));
    launch_pdl_if(pdl, "mac_scan_kernel", kernel, scan_grid, dim3(kScanThreads), bytes, s, kva, q_pre.data, qd,
                  q_row_stride, ring, mac, hq, per, bound, ws.best, ws.seq_flags,
                  prof.kernel(name, scan_grid, {"dependency wait", "position", "scan"}));
  };
  auto launch_d = [&]<typename RT>() {
    auto launch_pd = [&]<int D>() {
      if (form == kScanDirect) launch_form.template operator()<D, RT, kScanDirect>();
      else launch_form.template operator()<D, RT, kScanStaged>();
    };
    if (d == 64) launch_pd.template operator()<64>();
    else if (d == 128) launch_pd.template operator()<128>();
    else launch_pd.template operator()<256>();
  };
  if (ring_dtype == DType::bf16) launch_d.template operator()<__nv_bfloat16>();
  else if (ring_dtype == DType::f16) launch_d.template operator()<__half>();
  else launch_d.template operator()<float>();
}

}  // namespace detail

void mac_decode(const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv, ConstTensor q_post,
                ConstTensor q_pre, const MacRingsDevice& rings, Tensor out, float* lse, HeadStats* head_stats,
                Workspace& workspace, void* stream) {
  using namespace detail;
  constexpr const char* fn = "cuda::mac_decode";
  validate_kv(fn, shape, kv);
  validate_rings(fn, shape, config, kv, rings);
  validate_query(fn, "q_post", q_post.data, q_post.dtype);
  validate_query(fn, "q_pre", q_pre.data, q_pre.dtype);
  validate_query(fn, "out", out.data, out.dtype);
  macattn::detail::require(q_pre.dtype == q_post.dtype && out.dtype == q_post.dtype, fn,
                           ": q_post, q_pre and out must share one dtype (got ", dtype_name(q_post.dtype), ", ",
                           dtype_name(q_pre.dtype), ", ", dtype_name(out.dtype), ")");
  const int hq = shape.num_q_heads, hkv = shape.num_kv_heads, d = shape.head_dim, group = shape.group_size();
  // Rows that cannot be hits are dropped after their first 64 dims (scan_direct) unless the
  // caller reads the best row of a miss (per-head stats with config.report_miss_matches), as on
  // the CPU; without a bound every row is read whole (scan_staged).
  const bool bounded = !(head_stats && config.report_miss_matches);
  // A scan launched by mac_scan for this call replaces the scan kernel here. Once the arguments
  // are valid it is consumed, whether this call fits it or throws.
  const Workspace::PendingScan pending = std::exchange(workspace.pending_scan(), Workspace::PendingScan{});
  const bool scanned = pending.pending;
  if (scanned) {
    macattn::detail::require(pending.batch_size == kv.batch_size && pending.num_q_heads == hq &&
                                 pending.head_dim == d && pending.window == config.window,
                             fn, ": the pending mac_scan was launched for batch ", pending.batch_size, ", ",
                             pending.num_q_heads, " q heads, head_dim ", pending.head_dim, ", window ", pending.window,
                             ", not this call's batch ", kv.batch_size, ", ", hq, " q heads, head_dim ", d,
                             ", window ", config.window);
    macattn::detail::require(pending.bounded == bounded, fn,
                             ": the pending mac_scan was launched with report_miss_matches = ",
                             pending.bounded ? "false" : "true", " but this call ",
                             bounded ? "does not report" : "reports", " miss matches (head_stats ",
                             head_stats ? "non-null" : "null", ", config.report_miss_matches = ",
                             config.report_miss_matches ? "true" : "false", ")");
  }
  if (kv.batch_size == 0) return;
  const int groups = kv.batch_size * hkv;
  const bool two_per_sm = attend_two_per_sm(groups, d);
  const int splits =
      mac_splits(plan_splits(kv.batch_size, hkv, d, kv.max_seq_len), groups, two_per_sm, kv.max_seq_len);
  const std::int64_t heads = static_cast<std::int64_t>(kv.batch_size) * hq;
  require_workspace(fn, workspace, shape, heads, splits + kCompleteSplits, heads, kv.batch_size);
  const auto& ws = workspace.buffers();
  // The spread plan (mac_spread.cuh) for large steps (mac_spread_enabled), when its per-head
  // arrays fit the attention core's K/V stages and its group count the scan's 16 bits: `slots`
  // amend partials per head, as many as the workspace holds (reserve() sizes it for
  // mac_spread_slots), never fewer than `splits`.
  const std::int64_t kv_bytes = static_cast<std::int64_t>(groups) * kv.max_seq_len * d * 2 * 2;  // K and V, 16-bit
  bool spread = mac_spread_enabled(kv_bytes, kv.max_seq_len) && groups <= 0xffff;
  dispatch(d, kv.dtype, [&]<int D, int NS, typename T>() {
    spread = spread && spread_smem_bytes(heads, groups, kv.batch_size) <= TileSmem<D, NS>::kFront;
  });
  int slots = splits;
  if (spread) {
    const std::int64_t room = ws.capacity_rows * ws.capacity_splits / heads - kCompleteSplits;
    const std::int64_t want = mac_spread_slots(splits, static_cast<std::int64_t>(groups) * splits, heads, d);
    slots = static_cast<int>(std::max<std::int64_t>(splits, std::min(want, room)));
  }
  static_assert(kMaxSplits >= 1024, "the finish kernel's weights hold mac_spread_slots' most");
  int* group_parts = spread ? ws.group_parts : nullptr;
  auto s = static_cast<cudaStream_t>(stream);
  const PagedKVArgs kva = kv_args(kv);
  const RingArgs ring = ring_args(rings);
  MacArgs mac = mac_args(config, d);
  const int qd = static_cast<int>(q_post.dtype);
  ProfileScope prof(s);  // MACATTN_CUDA_PROFILE=1 (block_profile.cuh)

  const float scale = shape.scale();
  // The complete kernel on the side stream (side_complete() says when), forked from `s` here and
  // joined before the finish kernel (a fork/join that stream capture records as graph edges).
  const bool side = side_complete(static_cast<std::int64_t>(kCompleteSplits) * groups);
  // Short bands in the finish kernel (mac_band.cuh) only with the side complete kernel: with
  // the complete state in the attend kernel's blocks (large grids) the attend kernel runs as
  // long either way, and the finish only gains the band's round trips (measured on the H200:
  // batch 16, 128K all-hit 32.7 -> 35.5-35.9 us with short bands in the finish; h200.md).
  mac.finish_band = side ? finish_band_limit() : 0;
  auto side_stream = static_cast<cudaStream_t>(ws.side_stream);
  if (side) {
    check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(ws.fork_event), s), "cudaEventRecord (fork)");
    check_cuda(cudaStreamWaitEvent(side_stream, static_cast<cudaEvent_t>(ws.fork_event), 0), "cudaStreamWaitEvent (fork)");
    dispatch(d, kv.dtype, [&]<int D, int NS, typename T>() {
      const dim3 grid(kCompleteSplits, hkv, kv.batch_size);
      auto kernel = mac_complete_kernel<D, NS, T>;
      constexpr std::size_t bytes = TileSmem<D, NS>::kBytes;
      allow_smem(kernel, bytes, mac_carveout("complete", two_per_sm));
      launch_pdl("mac_complete_kernel", kernel, grid, dim3(kThreads), bytes, side_stream, kva, q_post.data, qd, mac,
                 hq, group, slots, scale, ws.part_o, ws.part_lse, prof.kernel("mac_complete_kernel", grid, {"complete"}));
    });
    check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(ws.join_event), side_stream), "cudaEventRecord (join)");
  }
  if (scanned)  // the attend kernel reads the scan's minima: wait for mac_scan's stream
    check_cuda(cudaStreamWaitEvent(s, static_cast<cudaEvent_t>(ws.scan_event), 0), "cudaStreamWaitEvent (scan)");
  else
    launch_scan(config, kva, q_pre, static_cast<long long>(hq) * d, rings.ring_dtype, ring, mac, hq, d, kv.batch_size,
                bounded, two_per_sm, scan_pdl(), ws, s, prof);
  const bool pdl_attend = attend_pdl(two_per_sm);
  dispatch(d, kv.dtype, [&]<int D, int NS, typename T>() {
    auto kernel = !spread ? mac_attend_kernel<D, NS, T, false>
                  : side  ? mac_attend_kernel<D, NS, T, true, true>
                          : mac_attend_kernel<D, NS, T, true, false>;
    // Two blocks per SM: more shared memory than a third of the SM's (the rest unused; it only
    // keeps a third block off the SM).
    const std::size_t bytes =
        two_per_sm && TileSmem<D, NS>::kBytes < kAttendThirdBytes ? kAttendThirdBytes : TileSmem<D, NS>::kBytes;
    allow_smem(kernel, bytes, mac_carveout("attend", two_per_sm));
    const dim3 grid(hkv, splits, kv.batch_size);
    launch_pdl_if(pdl_attend, "mac_attend_kernel", kernel, grid, dim3(kThreads), bytes, s, kva, q_post.data, qd, mac,
                  hq, group, splits, slots, scale, ws.best, ws.seq_flags, ws.part_o, ws.part_lse, group_parts, side,
                  scanned && pdl_attend,
                  prof.kernel("mac_attend_kernel", grid,
                              {"decide", "amend", "to complete run", "complete run", "write complete"}));
  });
  // In a captured graph with the finish kernel under PDL, both of its incoming edges (from the
  // attend kernel, and from the complete kernel through this join) are programmatic: it may
  // launch once both kernels have let it, and its grid_dependency_wait() waits for both
  // (printed from the captured graph on the H200; h200.md, fifteenth session).
  if (side)
    check_cuda(cudaStreamWaitEvent(s, static_cast<cudaEvent_t>(ws.join_event), 0), "cudaStreamWaitEvent (join)");
  const dim3 finish_grid(static_cast<unsigned>(heads));
  allow_smem(mac_finish_kernel, 0, mac_carveout("finish", two_per_sm));
  launch_pdl_if(finish_pdl(), "mac_finish_kernel", mac_finish_kernel, finish_grid, dim3(d), 0, s, kva, q_post.data,
                q_pre.data, out.data, qd, lse, ring, mac, hq, group, d, slots, scale, ws.best, ws.seq_flags, ws.part_o,
                ws.part_lse, group_parts, head_stats,
                prof.kernel("mac_finish_kernel", finish_grid, {"before the wait", "partials + merge", "write"}));
  prof.finish();
}

void mac_scan(const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv, ConstTensor q_pre,
              std::int64_t q_pre_row_stride, const MacRingsDevice& rings, bool report_miss_matches,
              Workspace& workspace, void* stream) {
  using namespace detail;
  constexpr const char* fn = "cuda::mac_scan";
  validate_kv(fn, shape, kv);
  validate_rings(fn, shape, config, kv, rings);
  validate_query(fn, "q_pre", q_pre.data, q_pre.dtype);
  const int hq = shape.num_q_heads, d = shape.head_dim;
  const std::int64_t row = static_cast<std::int64_t>(hq) * d;
  macattn::detail::require(q_pre_row_stride == 0 || q_pre_row_stride >= row, fn, ": q_pre_row_stride = ",
                           q_pre_row_stride, ", must be 0 (contiguous) or >= num_q_heads * head_dim = ", row);
  Workspace::PendingScan& pending = workspace.pending_scan();
  macattn::detail::require(!pending.pending, fn,
                           ": a scan is already pending on this workspace (mac_scan must be followed by mac_decode)");
  const std::int64_t heads = static_cast<std::int64_t>(kv.batch_size) * hq;
  require_workspace(fn, workspace, shape, heads, 1, heads, kv.batch_size);
  const auto& ws = workspace.buffers();  // reserved: its scan event exists (reserve() makes it with the buffers)
  auto s = static_cast<cudaStream_t>(stream);
  if (kv.batch_size > 0) {
    ProfileScope prof(s);  // MACATTN_CUDA_PROFILE=1 (block_profile.cuh)
    const int groups = kv.batch_size * shape.num_kv_heads;
    launch_scan(config, kv_args(kv), q_pre, q_pre_row_stride == 0 ? row : q_pre_row_stride, rings.ring_dtype,
                ring_args(rings), mac_args(config, d), hq, d, kv.batch_size, !report_miss_matches,
                attend_two_per_sm(groups, d), split_scan_pdl(), ws, s, prof);
    prof.finish();
  }
  check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(ws.scan_event), s), "cudaEventRecord (scan)");
  pending = Workspace::PendingScan{true, kv.batch_size, hq, d, config.window, !report_miss_matches};
}

}  // namespace macattn::cuda
