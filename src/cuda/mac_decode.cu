// src/cuda/mac_decode.cu: MAC decode (MAC_ATTENTION.md §5) in two kernels, every decision on
// the device (no host synchronisation; capturable in a CUDA graph):
//   1. scan + complete (grid kCompleteSplits + G*runs x Hkv x B). The first kCompleteSplits
//      blocks of a group attend its rows to the sinks and the tail: that state does not depend
//      on the decision (on a hit the band starts at E(m) >= F, on a miss the prefix at
//      min(F, E(t)), so the sinks are [0, min(F, E(t))) either way), so it runs beside the
//      scan instead of after it. The other blocks scan a run of one head's ring (every tile's
//      copies in flight at once) and write the run's packed minimum to their own slot: no
//      atomics, nothing to reset. The first run of a head also saves the lse of the slot this
//      step overwrites (position t - W), so the second kernel can decide without reading a
//      ring entry its own merge may be rewriting.
//   2. amend + merge (the exact kernel's grid, splits x Hkv x B). Each block takes the minimum
//      of its heads' runs and decides; the group's amend span [min start, E(t)) is split as
//      exact decode splits a sequence (a miss group costs what exact costs; an all-hit group's
//      bands fit split 0 and the other blocks return at once). A group whose span fits one
//      split merges in that block without writing partials; otherwise the working splits write
//      partials and take a ticket, and the last one merges: reuse (+) amend into entry(t), the
//      ring row (wiping a stale ring first), entry (+) complete into out, lse and stats.
// MACATTN_CUDA_MAC=three or fused runs an older path instead (mac_paths.hpp).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "cuda/launch.cuh"
#include "cuda/mac_decide.cuh"
#include "cuda/mac_paths.hpp"
#include "cuda/mac_scan.cuh"
#include "cuda/merge_splits.cuh"

namespace macattn::cuda {
namespace detail {
namespace {

// MACATTN_CUDA_MAC_PROFILE=1: per-block timestamps (%globaltimer, ns) of eager calls, summed
// over calls and printed at exit (mac_profile_* below). prof[slot] of kernel 1 block i:
// 2i (start), 2i+1 (end); kernel 2 block i, after kernel 1's: 4i .. 4i+3 (start, decided,
// attended, end; 0 = the block returned before that point). Null: nothing recorded.
__device__ __forceinline__ void stamp(unsigned long long* prof, std::size_t slot) {
  if (prof && threadIdx.x == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    prof[slot] = t;
  }
}
__device__ __forceinline__ std::size_t block_id() {
  return (static_cast<std::size_t>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
}

// Complete part j (of kCompleteSplits) of group (b, g): its rows attend the j-th share of the
// tail [E(t), t + 1), part 0 also the sinks [0, min(F, E(t))); written as partial splits + j.
template <int D, int NS, typename T>
__device__ void complete_part(char* smem, const PagedKVArgs& kv, const void* q_post, int q_dtype, const MacArgs& mac,
                              int hq, int group, int parts, int splits, float scale, float* part_o, float* part_lse,
                              int j, int g, int b, long long t) {
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  const long long new_end = entry_end_dev(t, mac.rect);
  const long long sink_end = new_end < mac.sinks ? new_end : mac.sinks;
  long long a, z;
  split_range(new_end, t + 1, kCompleteSplits, j, &a, &z);
  const KeySpans spans{0, j == 0 ? sink_end : 0, a, z};
  const bool work = spans.count() > 0;
  const std::size_t row0 = static_cast<std::size_t>(b) * hq + static_cast<std::size_t>(g) * group;
  if (work) {
    const std::size_t esize = q_dtype == kF32 ? 4 : 2;
    if (threadIdx.x < kRows) {
      const int r = threadIdx.x;
      const bool real = r < group;
      q_rows[r] = real ? static_cast<const char*>(q_post) + (row0 + r) * D * esize : nullptr;
      Tile::row_keys(smem)[r] = real ? RowKeys{0, sink_end, new_end, t + 1} : RowKeys{0, 0, 0, 0};
    }
    __syncthreads();
    stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);
    __syncthreads();
    Tile::run(smem, kv, b, g, spans, scale);
  }
  const float* mo = Tile::merged_o(smem);
  const float* ml = Tile::merged_lse(smem);
  for (int idx = threadIdx.x; idx < group * D; idx += kThreads) {
    const int r = idx / D, i = idx % D;
    const std::size_t row = (row0 + r) * parts + splits + j;
    if (work) part_o[row * D + i] = mo[r * D + i];  // an empty partial's o is never read
    if (i == 0) part_lse[row] = work ? ml[r] : -__int_as_float(0x7f800000);
  }
}

// Kernel 1. scan_min[(b*hq + h) * scan_stride + run] = the run's packed minimum (kNoMatch when
// it has no candidates), [.. + runs] = the bits of lring at slot t mod W (-inf while t < W).
template <int D, int NS, typename T>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1)
    mac_scan_complete_kernel(PagedKVArgs kv, const void* q_post, const void* q_pre, int q_dtype, RingArgs ring,
                             MacArgs mac, int hq, int group, int parts, int splits, int per, int runs, float scale,
                             unsigned long long* scan_min, int scan_stride, std::uint8_t* stale_flags, float* part_o,
                             float* part_lse, unsigned long long* prof) {
  extern __shared__ __align__(128) char smem[];
  grid_dependency_wait();  // q, the cache and the rings come from earlier kernels
  allow_dependents();
  stamp(prof, 2 * block_id());
  const int x = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const long long t = seq_len(kv, b) - 1;
  if (x < kCompleteSplits) {
    complete_part<D, NS, T>(smem, kv, q_post, q_dtype, mac, hq, group, parts, splits, scale, part_o, part_lse, x, g,
                            b, t);
    __syncthreads();
    stamp(prof, 2 * block_id() + 1);
    return;
  }
  const int i = x - kCompleteSplits, r = i / runs, run = i % runs, h = g * group + r;
  const bool stale = ring.ready[b] == 0 || ring.position[b] != t;
  if (i == 0 && g == 0 && threadIdx.x == 0) stale_flags[b] = stale ? 1 : 0;
  unsigned long long m = kNoMatch;
  if (t >= mac.min_context)
    m = scan_head_batch<D, kThreads>(smem, q_pre, q_dtype, ring, mac, hq, b, h, t, stale,
                                     static_cast<long long>(run) * per, per);
  if (threadIdx.x == 0) {
    unsigned long long* slot = scan_min + (static_cast<std::size_t>(b) * hq + h) * scan_stride;
    slot[run] = m;
    if (run == 0) {
      const float old = t >= mac.window ? ring.lring[(static_cast<std::size_t>(b) * mac.window + t % mac.window) * hq + h]
                                        : -__int_as_float(0x7f800000);
      slot[runs] = __float_as_uint(old);
    }
  }
  stamp(prof, 2 * block_id() + 1);
}

// Kernel 2 (see the top of the file). tickets[B*Hkv]: zero between calls.
template <int D, int NS, typename T>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1)
    mac_amend_kernel(PagedKVArgs kv, const void* q_post, const void* q_pre, void* out, int q_dtype, float* lse,
                     RingArgs ring, MacArgs mac, int hq, int group, int parts, int splits, int runs, float scale,
                     const unsigned long long* scan_min, int scan_stride, const std::uint8_t* stale_flags,
                     float* part_o, float* part_lse, unsigned* tickets, HeadStats* head_stats,
                     unsigned long long* prof) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  __shared__ long long s_start[kRows], s_matched[kRows];
  __shared__ float s_dist[kRows], s_lm[kRows];
  __shared__ std::uint8_t s_hit[kRows];
  __shared__ float s_el[kRows], s_w1[kRows], s_w2[kRows], s_ow1[kRows], s_ow2[kRows], s_lse[kRows];
  __shared__ float s_cw[kRows * kCompleteSplits];
  __shared__ bool s_last;
  grid_dependency_wait();  // the first kernel's minima, flags and complete partials
  allow_dependents();
  if (prof) prof += 4 * block_id();
  stamp(prof, 0);
  const int split = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const long long t = seq_len(kv, b) - 1;
  const long long new_end = entry_end_dev(t, mac.rect);
  const bool stale = stale_flags[b] != 0;
  const std::size_t row0 = static_cast<std::size_t>(b) * hq + static_cast<std::size_t>(g) * group;
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  if (threadIdx.x < kRows) {
    const int r = threadIdx.x, h = g * group + r;
    const bool real = r < group;
    long long start = new_end;
    if (real) {
      const unsigned long long* slot = scan_min + (row0 + r) * scan_stride;
      unsigned long long m = kNoMatch;
      for (int k = 0; k < runs; ++k) {
        const unsigned long long v = slot[k];
        m = v < m ? v : m;
      }
      const float old_lse = __uint_as_float(static_cast<unsigned>(slot[runs]));
      // The complete partials' lse (kernel 1's), in the same round trip as the minima.
      float cl[kCompleteSplits];
#pragma unroll
      for (int j = 0; j < kCompleteSplits; ++j) cl[j] = part_lse[(row0 + r) * parts + splits + j];
#pragma unroll
      for (int j = 0; j < kCompleteSplits; ++j) s_cw[r * kCompleteSplits + j] = cl[j];
      if (t < mac.min_context) m = kNoMatch;
      // A stale step decides as a wiped ring does: no hit (its best row has lse = -inf).
      Decision x = decide(stale ? kNoMatch : m, t, mac, ring, b, h, hq, &old_lse);
      if (stale && m != kNoMatch) {  // the stats report the wiped ring's best: oldest candidate at |q|^2
        x.matched = first_candidate(t, mac.window) + static_cast<long long>(m & 0xffffffffull);
        x.distance = __uint_as_float(static_cast<unsigned>(m >> 32));
      }
      if (x.hit) {  // the reused entry's o is read by the merge: start it towards L2 now
        const std::size_t mrow = (static_cast<std::size_t>(b) * mac.window + x.matched % mac.window) * hq + h;
        const char* p = static_cast<const char*>(ring.oring) + mrow * D * (ring.dtype == kF32 ? 4 : 2);
        for (int off = 0; off < D * (ring.dtype == kF32 ? 4 : 2); off += 128)
          asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
      }
      start = x.start;
      s_hit[r] = x.hit ? 1 : 0;
      s_matched[r] = x.matched;
      s_dist[r] = x.distance;
      s_lm[r] = x.matched_lse;
    }
    s_start[r] = start;
    q_rows[r] = real ? static_cast<const char*>(q_post) + (row0 + r) * D * esize : nullptr;
    Tile::row_keys(smem)[r] = real ? RowKeys{start, new_end, 0, 0} : RowKeys{0, 0, 0, 0};
  }
  __syncthreads();
  long long lo = new_end;
  for (int r = 0; r < group; ++r) lo = s_start[r] < lo ? s_start[r] : lo;
  const int n_work = working_splits(lo, new_end, splits);
  stamp(prof, 1);
  if (split >= n_work) {  // no keys here, and nobody waits for this split
    stamp(prof, 3);
    return;
  }
  long long a, z;
  split_range(lo, new_end, splits, split, &a, &z);
  const bool work = a < z;
  if (work) {
    stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);
    __syncthreads();
    Tile::run(smem, kv, b, g, KeySpans{a, z, 0, 0}, scale);
  }
  __syncthreads();
  stamp(prof, 2);
  const float ninf = -__int_as_float(0x7f800000);
  const bool solo = n_work == 1;  // this block's state is the whole amend: no partials
  unsigned* ticket = tickets + static_cast<std::size_t>(b) * gridDim.y + g;
  if (!solo) {
    const float* mo = Tile::merged_o(smem);
    const float* ml = Tile::merged_lse(smem);
    for (int idx = threadIdx.x; idx < group * D; idx += kThreads) {
      const int r = idx / D, i = idx % D;
      const std::size_t row = (row0 + r) * parts + split;
      if (work) part_o[row * D + i] = mo[r * D + i];
      if (i == 0) part_lse[row] = work ? ml[r] : ninf;
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(ticket, 1u) == static_cast<unsigned>(n_work - 1);
    __syncthreads();
    if (!s_last) {
      stamp(prof, 3);
      return;
    }
    __threadfence();  // the other splits fenced their partials before their tickets
  }
  // The merge of group (b, g). Amend weights over the splits (or this block's own state).
  float* w = reinterpret_cast<float*>(smem);  // [group][n_work] when !solo (the K/V stages are free)
  if (!solo) {
    group_split_weights(part_lse, row0, parts, 0, n_work, group, w, s_el);
  } else if (threadIdx.x < group) {
    s_el[threadIdx.x] = work ? Tile::merged_lse(smem)[threadIdx.x] : ninf;
  }
  if (threadIdx.x < group) {  // per head: complete weights; reuse (+) amend = entry(t); entry (+) complete = out
    const int r = threadIdx.x;
    float* cw = s_cw + r * kCompleteSplits;  // lse in, weights out
    float cm = ninf, csum = 0.f;
#pragma unroll
    for (int j = 0; j < kCompleteSplits; ++j) cm = fmaxf(cm, cw[j]);
    if (cm != ninf) {
#pragma unroll
      for (int j = 0; j < kCompleteSplits; ++j) csum += expf(cw[j] - cm);
    }
#pragma unroll
    for (int j = 0; j < kCompleteSplits; ++j) cw[j] = cm == ninf ? 0.f : expf(cw[j] - cm) / csum;
    const float cl = cm == ninf ? ninf : cm + logf(csum);
    float el = s_el[r], w1 = 0.f, w2 = 1.f;
    if (s_hit[r]) {
      const MergeWeights mw = merge_weights(s_lm[r], el);
      w1 = mw.w1;
      w2 = mw.w2;
      el = mw.lse;
    }
    const MergeWeights ow = merge_weights(el, cl);
    s_w1[r] = w1;
    s_w2[r] = w2;
    s_el[r] = el;
    s_ow1[r] = ow.w1;
    s_ow2[r] = ow.w2;
    s_lse[r] = ow.lse;
  }
  if (stale) {  // wipe the group's rows of every slot before this step's row is written
    for (int idx = threadIdx.x; idx < mac.window * group * D; idx += kThreads) {
      const int slot = idx / (group * D), r = (idx / D) % group, i = idx % D;
      const std::size_t rr = (static_cast<std::size_t>(b) * mac.window + slot) * hq + g * group + r;
      store_float(ring.qring, ring.dtype, rr * D + i, 0.f);
      store_float(ring.oring, ring.dtype, rr * D + i, 0.f);
      if (i == 0) ring.lring[rr] = ninf;
    }
  }
  __syncthreads();
  // Per element, in batches of kBatch per thread: every load of a batch is issued before its
  // stores (interleaved, each load would wait for the previous element's stores). A thread
  // reads the reused entry's element before it writes the same element of this step's row
  // (the slot may be the same one), so no barrier is needed between them.
  const float* mo = Tile::merged_o(smem);
  constexpr int kBatch = 4;
  for (int base = 0; base < group * D; base += kThreads * kBatch) {
    float eo[kBatch], co[kBatch], ro[kBatch], qv[kBatch];
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int idx = base + threadIdx.x + k * kThreads;
      eo[k] = co[k] = ro[k] = qv[k] = 0.f;
      if (idx < group * D) {
        const int r = idx / D, i = idx % D;
        const std::size_t qrow = row0 + r;
        eo[k] = solo ? (work ? mo[r * D + i] : 0.f)
                     : weighted_partials(part_o, qrow, parts, 0, n_work, w + r * n_work, D, i);
        co[k] = weighted_partials(part_o, qrow, parts, splits, kCompleteSplits, s_cw + r * kCompleteSplits, D, i);
        if (s_hit[r]) {
          const std::size_t mrow =
              (static_cast<std::size_t>(b) * mac.window + s_matched[r] % mac.window) * hq + g * group + r;
          ro[k] = load_float(ring.oring, ring.dtype, mrow * D + i);
        }
        qv[k] = load_float(q_pre, q_dtype, qrow * D + i);
      }
    }
#pragma unroll
    for (int k = 0; k < kBatch; ++k) {
      const int idx = base + threadIdx.x + k * kThreads;
      if (idx >= group * D) continue;
      const int r = idx / D, i = idx % D, h = g * group + r;
      const std::size_t qrow = row0 + r;
      const float e = s_hit[r] ? s_w1[r] * ro[k] + s_w2[r] * eo[k] : eo[k];
      const std::size_t wrow = (static_cast<std::size_t>(b) * mac.window + t % mac.window) * hq + h;
      store_float(ring.qring, ring.dtype, wrow * D + i, qv[k]);
      store_float(ring.oring, ring.dtype, wrow * D + i, e);
      store_float(out, q_dtype, qrow * D + i, s_ow1[r] * e + s_ow2[r] * co[k]);
      if (i == 0) {
        ring.lring[wrow] = s_el[r];
        if (lse) lse[qrow] = s_lse[r];
        if (head_stats) {
          const long long start = s_start[r];
          HeadStats hs;
          hs.hit = s_hit[r];
          hs.matched_position = s_matched[r];
          hs.match_distance = s_dist[r];
          hs.band_len = s_hit[r] ? static_cast<std::int32_t>(new_end - start) : 0;
          const long long sinks = start < mac.sinks ? start : mac.sinks;
          hs.kv_tokens_read = s_hit[r] ? (t + 1 - start) + sinks : t + 1;
          head_stats[qrow] = hs;
        }
      }
    }
  }
  if (threadIdx.x == 0) {
    if (!solo) *ticket = 0;  // every working split has taken its ticket
    if (g == 0) {            // nothing in this kernel reads the position or the ready flag
      ring.position[b] = t + 1;
      ring.ready[b] = 1;
    }
  }
  __syncthreads();
  stamp(prof, 3);
}

// Host side of MACATTN_CUDA_MAC_PROFILE=1: sums per grid shape, printed at exit.
struct ProfileSums {
  double calls = 0, k1_span = 0, complete = 0, n_complete = 0, scan = 0, n_scan = 0, gap = 0, k2_span = 0,
         decide = 0, n_decide = 0, attend = 0, n_attend = 0, merge = 0, n_merge = 0, total = 0;
};
struct Profile {
  std::vector<unsigned long long> host;
  unsigned long long* dev = nullptr;
  std::size_t capacity = 0;
  std::map<std::pair<std::size_t, std::size_t>, ProfileSums> sums;
};
Profile* profile() {
  static Profile* p = [] {
    const char* env = std::getenv("MACATTN_CUDA_MAC_PROFILE");
    if (!env || std::atoi(env) != 1) return static_cast<Profile*>(nullptr);
    auto* q = new Profile;
    std::atexit([] {
      for (const auto& [grid, v] : profile()->sums) {
        const double n = v.calls;
        auto mean = [](double sum, double count) { return count > 0 ? sum / count / 1e3 : 0.0; };
        std::fprintf(stderr,
                     "mac profile (%.0f eager calls; kernel 1: %zu blocks, kernel 2: %zu), us per call: kernel 1 span "
                     "%.2f (complete blocks %.2f, scan blocks %.2f each), gap %.2f, kernel 2 span %.2f (decide %.2f, "
                     "attend %.2f, merge %.2f per working block), first start to last end %.2f\n",
                     n, grid.first, grid.second, v.k1_span / n / 1e3, mean(v.complete, v.n_complete),
                     mean(v.scan, v.n_scan), v.gap / n / 1e3, v.k2_span / n / 1e3, mean(v.decide, v.n_decide),
                     mean(v.attend, v.n_attend), mean(v.merge, v.n_merge), v.total / n / 1e3);
      }
    });
    return q;
  }();
  return p;
}

// Reads back one call's stamps (kernel 1: k1 blocks, gridDim.x = k1_x; kernel 2: k2 blocks).
void profile_collect(Profile& p, std::size_t k1, int k1_x, std::size_t k2, cudaStream_t s) {
  MACATTN_CUDA_CHECK(cudaStreamSynchronize(s));
  p.host.resize(2 * k1 + 4 * k2);
  MACATTN_CUDA_CHECK(cudaMemcpy(p.host.data(), p.dev, p.host.size() * 8, cudaMemcpyDeviceToHost));
  ProfileSums& v = p.sums[{k1, k2}];
  const auto* h = p.host.data();
  unsigned long long s1 = ~0ull, e1 = 0, s2 = ~0ull, e2 = 0;
  for (std::size_t i = 0; i < k1; ++i) {
    s1 = std::min(s1, h[2 * i]);
    e1 = std::max(e1, h[2 * i + 1]);
    const double d = static_cast<double>(h[2 * i + 1] - h[2 * i]);
    if (static_cast<int>(i % k1_x) < kCompleteSplits) {
      v.complete += d;
      v.n_complete += 1;
    } else {
      v.scan += d;
      v.n_scan += 1;
    }
  }
  for (std::size_t i = 0; i < k2; ++i) {
    const auto* b = h + 2 * k1 + 4 * i;
    s2 = std::min(s2, b[0]);
    e2 = std::max(e2, b[3]);
    v.decide += static_cast<double>(b[1] - b[0]);
    v.n_decide += 1;
    if (b[2]) {
      v.attend += static_cast<double>(b[2] - b[1]);
      v.n_attend += 1;
      if (b[3] > b[2]) {
        v.merge += static_cast<double>(b[3] - b[2]);
        v.n_merge += 1;
      }
    }
  }
  v.calls += 1;
  v.k1_span += static_cast<double>(e1 - s1);
  v.gap += static_cast<double>(s2) - static_cast<double>(e1);
  v.k2_span += static_cast<double>(e2 - s2);
  v.total += static_cast<double>(e2 - s1);
}

}  // namespace

MacPath mac_path() {
  static const MacPath v = [] {
    const char* env = std::getenv("MACATTN_CUDA_MAC");
    if (env && std::strcmp(env, "three") == 0) return MacPath::three;
    if (env && std::strcmp(env, "fused") == 0) return MacPath::fused;
    return MacPath::two;
  }();
  return v;
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
  if (kv.batch_size == 0) return;
  auto s = static_cast<cudaStream_t>(stream);
  switch (mac_path()) {
    case MacPath::fused:
      launch_mac_fused(shape, config, kv, q_post, q_pre, rings, out, lse, head_stats, workspace, s);
      return;
    case MacPath::three:
      launch_mac_three(shape, config, kv, q_post, q_pre, rings, out, lse, head_stats, workspace, s);
      return;
    case MacPath::two:
      break;
  }
  const int hq = shape.num_q_heads, hkv = shape.num_kv_heads, d = shape.head_dim, group = shape.group_size();
  const int splits = plan_splits(kv.batch_size, hkv, d, kv.max_seq_len);
  const int parts = splits + kCompleteSplits;
  const std::int64_t heads = static_cast<std::int64_t>(kv.batch_size) * hq;
  require_workspace(fn, workspace, shape, heads, parts, heads, kv.batch_size);
  const auto& ws = workspace.buffers();
  const PagedKVArgs kva = kv_args(kv);
  const RingArgs ring = ring_args(rings);
  const MacArgs mac = mac_args(config, d);
  const int qd = static_cast<int>(q_post.dtype);
  const float scale = shape.scale();
  const int ring_bytes = static_cast<int>(dtype_bytes(rings.ring_dtype));
  const int scan_tiles = (config.window + kScanSlots - 1) / kScanSlots;
  dispatch(d, kv.dtype, [&]<int D, int NS, typename T>() {
    constexpr std::size_t tile_bytes = TileSmem<D, NS>::kBytes;
    // Scan runs: `per` tiles per block, all in flight at once. One tile per block while the
    // whole first kernel fits one wave of resident blocks (the shortest chain); otherwise
    // longer runs (up to what the block's shared memory holds), fewer blocks, more bytes in
    // flight per block.
    const int fit = static_cast<int>(tile_bytes / scan_batch_smem_bytes(1, D, ring_bytes));
    const std::int64_t slots = static_cast<std::int64_t>(device_sm_count()) * (D <= 128 ? 3 : 1);
    const std::int64_t complete_blocks = static_cast<std::int64_t>(kCompleteSplits) * hkv * kv.batch_size;
    int per = 1;
    auto blocks = [&](int p) { return heads * ((scan_tiles + p - 1) / p) + complete_blocks; };
    while (per * 2 <= std::min(fit, scan_tiles) && blocks(per) > slots) per *= 2;
    per = std::max(1, std::min(per, fit));
    const int runs = (scan_tiles + per - 1) / per;
    const int scan_stride = runs + 1;
    macattn::detail::require(scan_stride <= ws.capacity_scan, fn, ": window ", config.window,
                             " needs a workspace reserved for it (reserve(..., window >= ", config.window, "))");
    const std::size_t k1_bytes = std::max(tile_bytes, scan_batch_smem_bytes(per, D, ring_bytes));
    const int k1_x = kCompleteSplits + group * runs;
    const std::size_t k1_blocks = static_cast<std::size_t>(k1_x) * hkv * kv.batch_size;
    const std::size_t k2_blocks = static_cast<std::size_t>(splits) * hkv * kv.batch_size;
    Profile* prof = profile();
    if (prof) {  // eager calls only (a graph would replay stale pointers and stamps)
      cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
      MACATTN_CUDA_CHECK(cudaStreamIsCapturing(s, &st));
      if (st != cudaStreamCaptureStatusNone) prof = nullptr;
    }
    if (prof) {
      const std::size_t need = 2 * k1_blocks + 4 * k2_blocks;
      if (need > prof->capacity) {
        cudaFree(prof->dev);
        MACATTN_CUDA_CHECK(cudaMalloc(&prof->dev, need * 8));
        prof->capacity = need;
      }
      MACATTN_CUDA_CHECK(cudaMemsetAsync(prof->dev, 0, need * 8, s));
    }
    unsigned long long* stamps = prof ? prof->dev : nullptr;
    auto k1 = mac_scan_complete_kernel<D, NS, T>;
    allow_smem(k1, k1_bytes);
    launch_pdl("mac_scan_complete_kernel", k1, dim3(k1_x, hkv, kv.batch_size), dim3(kThreads), k1_bytes, s, kva,
               q_post.data, q_pre.data, qd, ring, mac, hq, group, parts, splits, per, runs, scale, ws.scan_min,
               scan_stride, ws.seq_flags, ws.part_o, ws.part_lse, stamps);
    auto k2 = mac_amend_kernel<D, NS, T>;
    allow_smem(k2, tile_bytes);
    launch_pdl("mac_amend_kernel", k2, dim3(splits, hkv, kv.batch_size), dim3(kThreads), tile_bytes, s, kva,
               q_post.data, q_pre.data, out.data, qd, lse, ring, mac, hq, group, parts, splits, runs, scale,
               static_cast<const unsigned long long*>(ws.scan_min), scan_stride,
               static_cast<const std::uint8_t*>(ws.seq_flags), ws.part_o, ws.part_lse, ws.tickets, head_stats,
               stamps ? stamps + 2 * k1_blocks : nullptr);
    if (prof) profile_collect(*prof, k1_blocks, k1_x, k2_blocks, s);
  });
}

}  // namespace macattn::cuda
