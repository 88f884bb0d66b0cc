// src/cuda/mac_fused.cu: MAC decode (MAC_ATTENTION.md §5) as ONE kernel: a work queue of
// items that wait for each other through per-group counters instead of kernel boundaries.
//
// Why: the three-kernel path (mac_decode.cu) pays, at hit rate 1, three launches and a chain
// of about eleven dependent memory round trips (H200, batch 1: 27 us per layer-step). Here a
// hit group's critical path is scan -> decide -> band tile -> merge, inside one launch, and
// the work that does not depend on the decision (the tail and sinks) runs beside the scan.
//
// Keys of sequence b at decode position t, for KV group g (F = front sinks, F_t = min(F, E(t)),
// R = E(first candidate) = the earliest key a band can start at, R' = R clamped to [F_t, E(t))):
//   sinks [0, F_t) + tail [E(t), t+1)       the complete state, the same for every head;
//   recent [R', E(t))                         amend keys of hits (band [E(m), E(t))) and misses;
//   old [F_t, R')                             amend keys of misses only.
// Items. A static queue, in order (an item only ever waits for items before it, so the queue
// cannot deadlock however many blocks are resident):
//   scan   (b, h, chunk)  a run of 64-candidate tiles of one head's ring -> atomicMin(best),
//                         then scan_done[b,g] += 1;
//   tail   (b, g, part)   kCompleteSplits parts of the tail (part 0 also the sinks): no wait;
//   recent (b, g, part)   waits for the group's scan, decides, attends its heads' keys of the
//                         part (a hit head: its band; a miss head: all of it).
// The first recent item of a group to decide publishes the group's state; if a head missed it
// appends the group's old-region work, the exact kernel's split plan over [F_t, R'), to a
// dynamic queue that blocks drain once the static queue is empty (so an all-hit group has no
// old items at all, not even ones that look and leave). Each tail/recent/old item writes one
// partial (o, lse) per head; the last of a group's items to finish (group_done counter; an
// all-hit group's publisher counts its absent old items) merges them: entry(t) = reuse(m) (+)
// recent partials on a hit, old (+) recent on a miss; writes the ring row; out = entry (+)
// complete; stats; resets the group's counters and scan minima. The last group of a sequence
// advances its ring position. Decisions use mac_decide.cuh on the CPU's inputs (bit-identical).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cuda/launch.cuh"
#include "cuda/mac_decide.cuh"
#include "cuda/mac_fused.hpp"
#include "cuda/mac_scan.cuh"
#include "cuda/merge_splits.cuh"

namespace macattn::cuda::detail {
namespace {

// MACATTN_CUDA_MAC_PROFILE=1: nanoseconds of block time per kind of work, summed over blocks
// and launches, printed at exit (a diagnostic; adds a few clock reads per item).
enum : int {
  kProfScan = 0, kProfTail, kProfRecent, kProfOld, kProfDecideWait, kProfFinish, kProfIdle, kProfBlock,
  kProfItems,                       // 4 slots: tail, recent, old, scan item counts
  kProfLaunches = kProfItems + 4, kProfGrid, kProfileSlots
};

/// What the host planned for one call (by value to the kernel).
struct FusedPlan {
  int hq = 0, hkv = 0, group = 0;
  int splits = 0;        // old-region splits (the exact kernel's plan)
  int recent_parts = 0;  // parts of the recent region
  int scan_chunks = 0;   // scan items per head
  int scan_tiles = 0;    // 64-candidate tiles per scan item
  long long n_scan = 0, n_tail = 0, n_recent = 0, total = 0;  // total: static items
  int groups = 0;     // B * Hkv
  int prefetch = 0;   // recent items prefetch their K/V rows into L2 while the scan runs
  float scale = 0.f;
  // Partials per head; also the tail/recent/old items per group (each writes one partial).
  __host__ __device__ int parts() const { return splits + recent_parts + kCompleteSplits; }
};

/// Per-call counters in the workspace (zero between calls: each call resets what it used).
struct SyncArgs {
  unsigned* queue = nullptr;        // [8]: see kTicket ...
  unsigned* scan_done = nullptr;    // [B*Hkv] scan items finished
  unsigned* group_done = nullptr;   // [B*Hkv] tail/recent/old items finished
  unsigned* group_state = nullptr;  // [B*Hkv] 0 undecided, else kDecided | kAnyMiss | miss mask << 8
  unsigned* seq_done = nullptr;     // [B] groups finished
  unsigned* old_items = nullptr;    // [B*Hkv*splits] dynamic queue: 1 + (group * splits + split), 0 = not yet
  unsigned long long* profile = nullptr;  // [kProfileSlots] block time per kind of work (MACATTN_CUDA_MAC_PROFILE)
};
enum : int { kTicket = 0, kExited = 1, kOldHead = 2, kOldTail = 3, kDecidedGroups = 4 };
enum : unsigned { kDecided = 1u, kAnyMiss = 2u };

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

/// Thread 0 spins until *p >= target; then the block goes on (reads of what the counted items
/// wrote must bypass L1: __ldcg).
__device__ __forceinline__ void wait_count(const unsigned* p, unsigned target) {
  if (threadIdx.x == 0)
    while (load_acquire(p) < target) __nanosleep(20);
  __syncthreads();
}

/// The group's per-head decisions in shared memory (filled by group_decisions()).
struct GroupDecisions {
  long long start[kRows];    // first key of entry(t): E(m) on a hit, F_t on a miss
  long long matched[kRows];  // for stats
  float distance[kRows];
  int hit[kRows];
  int any_miss;
  int for_item;  // the group (b * hkv + g) these are for; -1 = none
  int publish;   // 1: this block decided an all-hit group and has not yet tried to publish it
};

/// The attention core, not inlined: its registers are allocated apart from the queue logic
/// around it, so nothing of that logic spills inside the tile loop.
template <int D, int NS, typename T>
__device__ __noinline__ void run_tile(char* smem, const PagedKVArgs kv, int b, int g, const KeySpans spans,
                                      float scale) {
  AttendTile<D, NS, T>::run(smem, kv, b, g, spans, scale);
}
template <int D>
__device__ __noinline__ unsigned long long run_scan(char* smem, const void* q_pre, int q_dtype, const RingArgs ring,
                                                    const MacArgs mac, int hq, int b, int h, long long t, bool stale,
                                                    long long tile0, int tiles) {
  return scan_head_tiles<D, kThreads>(smem, q_pre, q_dtype, ring, mac, hq, b, h, t, stale, tile0, tiles);
}

template <int D, int NS, typename T>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1)
    mac_fused_kernel(PagedKVArgs kv, const void* q_post, const void* q_pre, void* out, int q_dtype, float* lse,
                     RingArgs ring, MacArgs mac, FusedPlan p, unsigned long long* best, float* part_o,
                     float* part_lse, HeadStats* head_stats, SyncArgs sy) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  __shared__ GroupDecisions dec;
  __shared__ long long s_item, s_next;
  __shared__ int s_pub;
  __shared__ unsigned long long s_prof[kProfileSlots];
  __shared__ int s_flag;
  __shared__ float s_red[kRows][4];  // per head: amend max, sum; complete max, sum
  __shared__ float s_el[kRows];      // per head: the entry's lse
  const float ninf = -__int_as_float(0x7f800000);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const unsigned long long t_block = sy.profile ? global_ns() : 0;
  if (sy.profile && tid < static_cast<int>(kProfileSlots)) s_prof[tid] = 0;
  const int group = p.group, parts = p.parts();
  const std::size_t qsize = q_dtype == kF32 ? 4 : 2;
  grid_dependency_wait();  // with MACATTN_CUDA_PDL=1: everything comes from earlier kernels
  if (tid == 0) {
    s_item = atomicAdd(sy.queue + kTicket, 1u);
    dec.for_item = -1;
    dec.publish = 0;
  }
  __syncthreads();

  // Decisions of group (b, g) at position t into `dec` (waits for the group's scan).
  auto group_decisions = [&](int b, int g, long long t) {
    const int bg = b * p.hkv + g;
    if (dec.for_item == bg) return;  // this block decided for this group already
    const unsigned long long t_wait = sy.profile ? global_ns() : 0;
    wait_count(sy.scan_done + bg, static_cast<unsigned>(group * p.scan_chunks));
    if (sy.profile && tid == 0) s_prof[kProfDecideWait] += global_ns() - t_wait;
    const bool stale = ring.ready[b] == 0 || ring.position[b] != t;
    const long long new_end = entry_end_dev(t, mac.rect);
    if (tid < group) {
      const int h = g * group + tid;
      const unsigned long long raw = __ldcg(best + static_cast<std::size_t>(b) * p.hq + h);
      const unsigned long long m = (stale || t < mac.min_context) ? kNoMatch : raw;
      Decision x = decide(m, t, mac, ring, b, h, p.hq);
      if (stale && raw != kNoMatch && t >= mac.min_context) {  // the wiped ring's best: never a hit
        x.matched = first_candidate(t, mac.window) + static_cast<long long>(raw & 0xffffffffull);
        x.distance = __uint_as_float(static_cast<unsigned>(raw >> 32));
      }
      dec.start[tid] = x.hit ? x.start : (new_end < mac.sinks ? new_end : mac.sinks);
      dec.matched[tid] = x.matched;
      dec.distance[tid] = x.distance;
      dec.hit[tid] = x.hit ? 1 : 0;
    }
    __syncthreads();
    if (tid == 0) {
      int any = 0;
      for (int r = 0; r < group; ++r) any |= dec.hit[r] == 0;
      dec.any_miss = any;
      dec.for_item = bg;
      dec.publish = any ? 0 : 1;  // an all-hit group is published after the item's work
      s_pub = -1;
      if (any) {  // a miss: publish now, so the old-region work starts as early as it can
        unsigned mask = 0;
        for (int r = 0; r < group; ++r) mask |= (dec.hit[r] ? 0u : 1u) << r;
        if (atomicCAS(sy.group_state + bg, 0u, kDecided | kAnyMiss | (mask << 8)) == 0u)
          s_pub = static_cast<int>(atomicAdd(sy.queue + kOldTail, static_cast<unsigned>(p.splits)));
      }
    }
    __syncthreads();
    if (s_pub >= 0) {  // this block published a miss: append the group's old splits
      for (int s = tid; s < p.splits; s += kThreads)
        sy.old_items[s_pub + s] = 1u + static_cast<unsigned>(bg) * static_cast<unsigned>(p.splits) + s;
      __threadfence();
      __syncthreads();
      if (tid == 0) atomicAdd(sy.queue + kDecidedGroups, 1u);
    }
  };
  // After an item of an all-hit group this block decided: the first publisher counts the
  // group's absent old items (before this item's own count, so the group cannot finish early).
  auto publish_all_hit = [&](int bg) {
    if (tid == 0 && dec.publish && dec.for_item == bg) {
      dec.publish = 0;
      if (atomicCAS(sy.group_state + bg, 0u, kDecided) == 0u) {
        atomicAdd(sy.group_done + bg, static_cast<unsigned>(p.splits));
        atomicAdd(sy.queue + kDecidedGroups, 1u);
      }
    }
  };

  // Stages the group's q_post rows as the tile's A operand (before any wait: overlaps it).
  auto stage_queries = [&](int b, int g) {
    if (tid < kRows)
      q_rows[tid] = tid < group ? static_cast<const char*>(q_post) +
                                      (static_cast<std::size_t>(b) * p.hq + g * group + tid) * D * qsize
                                : nullptr;
    __syncthreads();
    stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);
  };

  // Attends spans with row intervals rows(r) (set by the caller into row_keys) and writes
  // partial `part` of every head of the group (an empty state when !work).
  auto attend_and_write = [&](int b, int g, const KeySpans& spans, bool work, int part) {
    __syncthreads();  // row keys and query tile written
    if (work) run_tile<D, NS, T>(smem, kv, b, g, spans, p.scale);
    const float* mo = Tile::merged_o(smem);
    const float* ml = Tile::merged_lse(smem);
    for (int idx = tid; idx < group * D; idx += kThreads) {
      const int r = idx / D, i = idx % D;
      const std::size_t row = (static_cast<std::size_t>(b) * p.hq + g * group + r) * parts + part;
      if (work) part_o[row * D + i] = mo[r * D + i];  // an empty partial's o is never read
      if (i == 0) part_lse[row] = work ? ml[r] : ninf;
    }
  };

  // The finish of group (b, g): merges the partials, writes the ring row, out, lse, stats.
  auto finish_group = [&](int b, int g, long long t) {
    group_decisions(b, g, t);
    const int bg = b * p.hkv + g;
    const bool stale = ring.ready[b] == 0 || ring.position[b] != t;
    const long long new_end = entry_end_dev(t, mac.rect);
    const int amend_end = p.splits + p.recent_parts;
    // Shared memory (the tile's K/V stages, free now): w[hc][parts], then eo/co [hc][D].
    constexpr std::size_t kFloats = TileSmem<D, NS>::kKV / sizeof(float);
    const int hc = static_cast<int>(kFloats / (static_cast<std::size_t>(parts) + 2 * D));
    float* w = reinterpret_cast<float*>(smem);
    for (int r0 = 0; r0 < group; r0 += hc) {
      const int n = min(hc, group - r0);
      float* res = w + static_cast<std::size_t>(n) * parts;  // [n][D] entry o, then [n][D] complete o
      __syncthreads();
      for (int idx = tid; idx < n * parts; idx += kThreads) {
        const int r = idx / parts, q = idx % parts;
        w[idx] = __ldcg(part_lse + (static_cast<std::size_t>(b) * p.hq + g * group + r0 + r) * parts + q);
      }
      __syncthreads();
      // Per head (a warp each): max and sum of exp over the amend set and the complete set.
      for (int r = warp; r < n; r += kThreads / 32) {
        const bool hit = dec.hit[r0 + r] != 0;
        for (int set = 0; set < 2; ++set) {
          const int s0 = set == 0 ? (hit ? p.splits : 0) : amend_end, s1 = set == 0 ? amend_end : parts;
          float mx = ninf;
          for (int q = s0 + lane; q < s1; q += 32) mx = fmaxf(mx, w[r * parts + q]);
          for (int off = 16; off >= 1; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
          float sum = 0.f;
          if (mx != ninf)
            for (int q = s0 + lane; q < s1; q += 32) sum += expf(w[r * parts + q] - mx);
          for (int off = 16; off >= 1; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
          if (lane == 0) {
            s_red[r][2 * set] = mx;
            s_red[r][2 * set + 1] = sum;
          }
        }
      }
      __syncthreads();
      for (int idx = tid; idx < n * parts; idx += kThreads) {
        const int r = idx / parts, q = idx % parts;
        const bool skip = q < p.splits && dec.hit[r0 + r] != 0;  // a hit head ignores the old region
        const int set = q < amend_end ? 0 : 1;
        const float mx = s_red[r][2 * set], sum = s_red[r][2 * set + 1];
        w[idx] = (skip || mx == ninf) ? 0.f : expf(w[idx] - mx) / sum;  // exp(-inf) = 0: empty skipped
      }
      __syncthreads();
      // Weighted partials, and on a hit the reused entry (read before any ring write below).
      for (int idx = tid; idx < n * D; idx += kThreads) {
        const int r = idx / D, i = idx % D, h = g * group + r0 + r;
        const std::size_t row = static_cast<std::size_t>(b) * p.hq + h;
        const float* po = part_o + row * parts * D + i;
        const float* wr = w + r * parts;
        float eo = 0.f, co = 0.f;
        for (int q = 0; q < amend_end; ++q)
          if (wr[q] != 0.f) eo += wr[q] * __ldcg(po + static_cast<std::size_t>(q) * D);
        for (int q = amend_end; q < parts; ++q)
          if (wr[q] != 0.f) co += wr[q] * __ldcg(po + static_cast<std::size_t>(q) * D);
        if (dec.hit[r0 + r]) {
          const float am = s_red[r][0];
          const float el = am == ninf ? ninf : am + logf(s_red[r][1]);
          if (am == ninf) eo = 0.f;
          const std::size_t mrow = (static_cast<std::size_t>(b) * mac.window + dec.matched[r0 + r] % mac.window) * p.hq + h;
          const MergeWeights mw = merge_weights(ring.lring[mrow], el);
          eo = mw.w1 * load_float(ring.oring, ring.dtype, mrow * D + i) + mw.w2 * eo;
        }
        res[r * D + i] = eo;
        res[(n + r) * D + i] = co;
      }
      // The entry's lse per head (thread r), from the same reductions.
      if (tid < n) {
        const int r = tid, h = g * group + r0 + r;
        const float am = s_red[r][0];
        float el = am == ninf ? ninf : am + logf(s_red[r][1]);
        if (dec.hit[r0 + r]) {
          const std::size_t mrow = (static_cast<std::size_t>(b) * mac.window + dec.matched[r0 + r] % mac.window) * p.hq + h;
          el = merge_weights(ring.lring[mrow], el).lse;
        }
        s_el[r] = el;
      }
      __syncthreads();  // every read of the ring is done: the writes may start
      if (stale) {      // wipe these heads' rows of every slot first
        for (int idx = tid; idx < mac.window * n * D; idx += kThreads) {
          const int slot = idx / (n * D), r = (idx / D) % n, i = idx % D;
          const std::size_t rr = (static_cast<std::size_t>(b) * mac.window + slot) * p.hq + g * group + r0 + r;
          store_float(ring.qring, ring.dtype, rr * D + i, 0.f);
          store_float(ring.oring, ring.dtype, rr * D + i, 0.f);
          if (i == 0) ring.lring[rr] = ninf;
        }
        __syncthreads();
      }
      for (int idx = tid; idx < n * D; idx += kThreads) {
        const int r = idx / D, i = idx % D, h = g * group + r0 + r;
        const std::size_t qrow = static_cast<std::size_t>(b) * p.hq + h;
        const std::size_t wrow = (static_cast<std::size_t>(b) * mac.window + t % mac.window) * p.hq + h;
        const float eo = res[r * D + i], co = res[(n + r) * D + i], el = s_el[r];
        const float cm = s_red[r][2], cl = cm == ninf ? ninf : cm + logf(s_red[r][3]);
        store_float(ring.qring, ring.dtype, wrow * D + i, load_float(q_pre, q_dtype, qrow * D + i));
        store_float(ring.oring, ring.dtype, wrow * D + i, eo);
        const MergeWeights ow = merge_weights(el, cl);
        store_float(out, q_dtype, qrow * D + i, ow.w1 * eo + ow.w2 * co);
        if (i == 0) {
          ring.lring[wrow] = el;
          if (lse) lse[qrow] = ow.lse;
          best[qrow] = kNoMatch;
          if (head_stats) {
            const int hr = r0 + r;
            HeadStats hs;
            hs.hit = static_cast<std::uint8_t>(dec.hit[hr]);
            hs.matched_position = dec.matched[hr];
            hs.match_distance = dec.distance[hr];
            hs.band_len = dec.hit[hr] ? static_cast<std::int32_t>(new_end - dec.start[hr]) : 0;
            const long long sinks = dec.start[hr] < mac.sinks ? dec.start[hr] : mac.sinks;
            hs.kv_tokens_read = dec.hit[hr] ? (t + 1 - dec.start[hr]) + sinks : t + 1;
            head_stats[qrow] = hs;
          }
        }
      }
    }
    __syncthreads();
    if (tid == 0) {
      sy.group_state[bg] = 0;
      sy.scan_done[bg] = 0;
      sy.group_done[bg] = 0;
      dec.for_item = -1;
      __threadfence();
      if (atomicAdd(sy.seq_done + b, 1u) == static_cast<unsigned>(p.hkv - 1)) {  // the sequence's last group
        ring.position[b] = t + 1;
        ring.ready[b] = 1;
        sy.seq_done[b] = 0;
      }
    }
  };

  // Counts a tail/recent/old item of group (b, g) as done; the group's last one finishes it.
  auto count_item = [&](int b, int g, long long t) {
    publish_all_hit(b * p.hkv + g);
    __threadfence();  // this block's partials are visible before the count
    __syncthreads();
    if (tid == 0)
      s_flag = atomicAdd(sy.group_done + b * p.hkv + g, 1u) == static_cast<unsigned>(parts - 1);
    __syncthreads();
    if (s_flag) {
      __threadfence();
      const unsigned long long t_fin = sy.profile ? global_ns() : 0;
      finish_group(b, g, t);
      if (sy.profile && tid == 0) s_prof[kProfFinish] += global_ns() - t_fin;
    }
  };

  // A tail (kind 0), recent (1) or old (2) item of group (b, g), part idx.
  auto group_item = [&](int kind, int idx, int b, int g) {
    const unsigned long long t_item = sy.profile ? global_ns() : 0;
    const long long t = seq_len(kv, b) - 1;
    const long long new_end = entry_end_dev(t, mac.rect);
    const long long f_t = new_end < mac.sinks ? new_end : mac.sinks;
    const long long r_first = entry_end_dev(first_candidate(t, mac.window), mac.rect);
    const long long r_cut = min(max(r_first, f_t), new_end);  // R'
    RowKeys* rk = Tile::row_keys(smem);
    if (kind == 0) {
      // tail part idx (part 0 also the sinks): no decision needed
      long long a, z;
      split_range(new_end, t + 1, kCompleteSplits, idx, &a, &z);
      const KeySpans spans{0, idx == 0 ? f_t : 0, a, z};
      const bool work = spans.count() > 0;
      if (work) stage_queries(b, g);
      if (tid < kRows) rk[tid] = tid < group ? RowKeys{0, f_t, new_end, t + 1} : RowKeys{0, 0, 0, 0};
      attend_and_write(b, g, spans, work, p.splits + p.recent_parts + idx);
    } else if (kind == 1) {
      // recent part idx: each head's share (a hit: its band; a miss: all of it)
      long long a, z;
      split_range(r_cut, new_end, p.recent_parts, idx, &a, &z);
      if (a < z) {
        stage_queries(b, g);
        if (p.prefetch)  // pull the part's K/V rows into L2 while the scan runs
          for (long long v = a + tid; v < z; v += kThreads) {
            const long long off = kv_row_offset(kv, b, v, g, D);
            const char* k = kv.k + off * static_cast<long long>(sizeof(T));
            const char* vv = kv.v + off * static_cast<long long>(sizeof(T));
            for (int c = 0; c < D * static_cast<int>(sizeof(T)); c += 128) {
              prefetch_l2(k + c);
              prefetch_l2(vv + c);
            }
          }
      }
      group_decisions(b, g, t);
      long long lo = z;
      for (int r = 0; r < group; ++r) lo = min(lo, max(a, dec.start[r]));
      if (tid < kRows) rk[tid] = tid < group ? RowKeys{dec.start[tid], new_end, 0, 0} : RowKeys{0, 0, 0, 0};
      attend_and_write(b, g, KeySpans{lo, z, 0, 0}, lo < z, p.splits + idx);
    } else {
      // old split idx of a group with a miss (published): the missing heads' rows
      long long a, z;
      split_range(f_t, r_cut, p.splits, idx, &a, &z);
      const bool work = a < z;
      if (work) {
        stage_queries(b, g);
        const unsigned miss = __ldcg(sy.group_state + b * p.hkv + g) >> 8;
        if (tid < kRows)
          rk[tid] = (tid < group && ((miss >> tid) & 1u)) ? RowKeys{f_t, r_cut, 0, 0} : RowKeys{0, 0, 0, 0};
      }
      attend_and_write(b, g, KeySpans{a, z, 0, 0}, work, idx);
    }
    count_item(b, g, t);
    if (sy.profile && tid == 0) {
      s_prof[kProfTail + kind] += global_ns() - t_item;
      s_prof[kProfItems + kind] += 1;
    }
  };

  // The static queue.
  for (;;) {
    const long long item = s_item;
    if (item >= p.total) break;
    if (tid == 0) s_next = atomicAdd(sy.queue + kTicket, 1u);  // claim the next item now: overlaps this one
    if (item < p.n_scan) {
      // scan (b, h, chunk)
      const unsigned long long t_scan = sy.profile ? global_ns() : 0;
      const int chunk = static_cast<int>(item % p.scan_chunks);
      const long long hb = item / p.scan_chunks;
      const int h = static_cast<int>(hb % p.hq), b = static_cast<int>(hb / p.hq), g = h / group;
      const long long t = seq_len(kv, b) - 1;
      if (t >= mac.min_context) {
        const bool stale = ring.ready[b] == 0 || ring.position[b] != t;
        const unsigned long long m = run_scan<D>(smem, q_pre, q_dtype, ring, mac, p.hq, b, h, t, stale,
                                                 static_cast<long long>(chunk) * p.scan_tiles, p.scan_tiles);
        if (tid == 0 && m != kNoMatch) atomicMin(best + static_cast<std::size_t>(b) * p.hq + h, m);
      }
      if (tid == 0) {
        __threadfence();
        atomicAdd(sy.scan_done + b * p.hkv + g, 1u);
        if (sy.profile) {
          s_prof[kProfScan] += global_ns() - t_scan;
          s_prof[kProfItems + 3] += 1;
        }
      }
    } else {
      long long i = item - p.n_scan;
      int kind, idx;
      if (i < p.n_tail) {
        kind = 0;
        idx = static_cast<int>(i % kCompleteSplits);
        i /= kCompleteSplits;
      } else {
        i -= p.n_tail;
        kind = 1;
        idx = static_cast<int>(i % p.recent_parts);
        i /= p.recent_parts;
      }
      group_item(kind, idx, static_cast<int>(i / p.hkv), static_cast<int>(i % p.hkv));
    }
    __syncthreads();  // s_next written; this item's shared memory free
    if (tid == 0) s_item = s_next;
    __syncthreads();
  }
  // The dynamic queue of old-region splits, appended by groups with a miss. A block claims a
  // slot and waits until it is filled, or until every group has decided and the slot is past
  // the last one appended (read in that order: a publisher appends before it counts).
  for (;;) {
    if (tid == 0) {
      const unsigned long long t_idle = sy.profile ? global_ns() : 0;
      const unsigned d = atomicAdd(sy.queue + kOldHead, 1u);
      long long e = -1;
      for (;;) {
        const unsigned decided = load_acquire(sy.queue + kDecidedGroups);
        const unsigned tail = load_acquire(sy.queue + kOldTail);
        if (d < tail) {
          unsigned v;
          while ((v = load_acquire(sy.old_items + d)) == 0u) __nanosleep(20);
          sy.old_items[d] = 0u;  // clean for the next call
          e = static_cast<long long>(v) - 1;
          break;
        }
        if (decided == static_cast<unsigned>(p.groups)) break;
        __nanosleep(64);
      }
      s_item = e;
      if (sy.profile) s_prof[kProfIdle] += global_ns() - t_idle;
    }
    __syncthreads();
    const long long e = s_item;
    if (e < 0) break;
    const int bg = static_cast<int>(e / p.splits);
    group_item(2, static_cast<int>(e % p.splits), bg / p.hkv, bg % p.hkv);
    __syncthreads();
  }
  if (sy.profile) {
    __syncthreads();
    if (tid == 0) s_prof[kProfBlock] += global_ns() - t_block;
    __syncthreads();
    if (tid < kProfileSlots) atomicAdd(sy.profile + tid, s_prof[tid]);
    if (tid == 0 && blockIdx.x == 0) {
      atomicAdd(sy.profile + kProfLaunches, 1ull);
      atomicAdd(sy.profile + kProfGrid, static_cast<unsigned long long>(gridDim.x));
    }
  }
  if (tid == 0) {
    __threadfence();
    if (atomicAdd(sy.queue + kExited, 1u) == gridDim.x - 1) {  // the last block out resets the queues
      sy.queue[kTicket] = 0;
      sy.queue[kOldHead] = 0;
      sy.queue[kOldTail] = 0;
      sy.queue[kDecidedGroups] = 0;
      sy.queue[kExited] = 0;
    }
  }
}

// The profile buffer (MACATTN_CUDA_MAC_PROFILE=1), allocated at the first call (so not inside
// a graph capture when the caller makes an eager call first), printed at exit.
unsigned long long* g_profile = nullptr;
unsigned long long* profile_buffer() {
  static unsigned long long* buf = [] {
    const char* env = std::getenv("MACATTN_CUDA_MAC_PROFILE");
    if (!env || std::atoi(env) != 1) return static_cast<unsigned long long*>(nullptr);
    unsigned long long* b = nullptr;
    MACATTN_CUDA_CHECK(cudaMalloc(&b, kProfileSlots * sizeof(unsigned long long)));
    MACATTN_CUDA_CHECK(cudaMemset(b, 0, kProfileSlots * sizeof(unsigned long long)));
    g_profile = b;
    std::atexit([] {
      unsigned long long h[kProfileSlots] = {};
      if (cudaMemcpy(h, g_profile, sizeof(h), cudaMemcpyDeviceToHost) != cudaSuccess || h[kProfLaunches] == 0) return;
      const double n = static_cast<double>(h[kProfLaunches]);
      std::fprintf(stderr,
                   "mac_fused profile over %.0f launches (mean grid %.0f), block-us per launch: scan %.1f (%.0f items), "
                   "tail %.1f (%.0f), recent %.1f (%.0f) of which waiting for the scan %.1f, old %.1f (%.0f), "
                   "finish %.1f, idle in the old queue %.1f, block lifetime %.1f\n",
                   n, h[kProfGrid] / n, h[kProfScan] / n / 1e3, h[kProfItems + 3] / n, h[kProfTail] / n / 1e3,
                   h[kProfItems] / n, h[kProfRecent] / n / 1e3, h[kProfItems + 1] / n, h[kProfDecideWait] / n / 1e3,
                   h[kProfOld] / n / 1e3, h[kProfItems + 2] / n, h[kProfFinish] / n / 1e3, h[kProfIdle] / n / 1e3,
                   h[kProfBlock] / n / 1e3);
    });
    return b;
  }();
  return buf;
}

}  // namespace

bool mac_fused_enabled() {
  static const bool v = [] {
    const char* env = std::getenv("MACATTN_CUDA_MAC");
    return env && std::string(env) == "fused";
  }();
  return v;
}

std::int32_t mac_recent_parts(std::int32_t window) {
  const std::int32_t tiles = (window + kBlockKeys - 1) / kBlockKeys;
  return std::max(1, std::min(tiles, kMaxRecentParts));
}

void launch_mac_fused(const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv,
                      ConstTensor q_post, ConstTensor q_pre, const MacRingsDevice& rings, Tensor out, float* lse,
                      HeadStats* head_stats, Workspace& workspace, cudaStream_t s) {
  constexpr const char* fn = "cuda::mac_decode";
  const int hq = shape.num_q_heads, hkv = shape.num_kv_heads, d = shape.head_dim;
  FusedPlan p;
  p.hq = hq;
  p.hkv = hkv;
  p.group = shape.group_size();
  p.splits = plan_splits(kv.batch_size, hkv, d, kv.max_seq_len);
  p.recent_parts = mac_recent_parts(config.window);
  const std::int64_t heads = static_cast<std::int64_t>(kv.batch_size) * hq;
  require_workspace(fn, workspace, shape, heads, p.parts(), heads, kv.batch_size);
  const auto& ws = workspace.buffers();
  macattn::detail::require(ws.sync != nullptr && static_cast<std::int64_t>(kv.batch_size) * hkv <= ws.capacity_groups &&
                               p.splits <= ws.capacity_splits,
                           fn, ": the workspace has no room for ", kv.batch_size, " x ", hkv,
                           " groups' counters; reserve() it for this shape and batch");
  // Scan items: `scan_tiles` consecutive tiles of one head; grows while the items still fill
  // the chip about three deep, so large batches get fewer, longer items.
  const int tiles = (config.window + kScanSlots - 1) / kScanSlots;
  const std::int64_t target = 3 * static_cast<std::int64_t>(device_sm_count());
  int per = 1;
  while (per * 2 <= tiles && ((tiles + per * 2 - 1) / (per * 2)) * heads >= target) per *= 2;
  p.scan_tiles = per;
  p.scan_chunks = (tiles + per - 1) / per;
  const std::int64_t groups = static_cast<std::int64_t>(kv.batch_size) * hkv;
  p.n_scan = heads * p.scan_chunks;
  p.n_tail = groups * kCompleteSplits;
  p.n_recent = groups * p.recent_parts;
  p.total = p.n_scan + p.n_tail + p.n_recent;
  static const int prefetch = [] {
    const char* env = std::getenv("MACATTN_CUDA_MAC_PREFETCH");
    return env ? std::atoi(env) : -1;
  }();
  p.groups = static_cast<int>(groups);
  // L2 prefetch of the recent region pays where latency rules (few groups) and would waste
  // bandwidth on parts a hit does not need where bandwidth rules.
  p.prefetch = prefetch >= 0 ? prefetch : (groups <= 32 ? 1 : 0);
  p.scale = shape.scale();
  SyncArgs sy;
  sy.queue = ws.sync;
  sy.scan_done = ws.sync + kQueueWords;
  sy.group_done = sy.scan_done + ws.capacity_groups;
  sy.group_state = sy.group_done + ws.capacity_groups;
  sy.seq_done = sy.group_state + ws.capacity_groups;
  sy.old_items = sy.seq_done + ws.capacity_batch;
  sy.profile = profile_buffer();
  static const long long grid_override = [] {
    const char* env = std::getenv("MACATTN_CUDA_MAC_GRID");
    return env ? std::atoll(env) : 0;
  }();
  const PagedKVArgs kva = kv_args(kv);
  const RingArgs ring = ring_args(rings);
  const MacArgs mac = mac_args(config, d);
  const int qd = static_cast<int>(q_post.dtype);
  dispatch(d, kv.dtype, [&]<int D, int NS, typename T>() {
    auto kernel = mac_fused_kernel<D, NS, T>;
    constexpr std::size_t bytes = TileSmem<D, NS>::kBytes;
    static_assert(scan_smem_bytes(D, 4) <= TileSmem<D, NS>::kKV, "the scan's stages must fit the K/V stages");
    // Blocks that fit on the chip at once: the queue needs no more (each loops over items).
    static const int resident = [&] {
      allow_smem(kernel, bytes);
      int per_sm = 0;
      MACATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, bytes));
      return std::max(1, per_sm) * device_sm_count();
    }();
    const long long grid = grid_override > 0 ? grid_override : std::min<long long>(p.total, resident);
    if (sy.profile) {
      static bool said = false;
      if (!said)
        std::fprintf(stderr, "mac_fused: resident %d, grid %lld, static items %lld (scan %lld of %d tiles, tail %lld, recent %lld), old splits %d per group\n",
                     resident, grid, p.total, p.n_scan, p.scan_tiles, p.n_tail, p.n_recent, p.splits);
      said = true;
    }
    launch_pdl("mac_fused_kernel", kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads), bytes, s, kva,
               q_post.data, q_pre.data, out.data, qd, lse, ring, mac, p, ws.best, ws.part_o, ws.part_lse, head_stats,
               sy);
  });
}

}  // namespace macattn::cuda::detail
