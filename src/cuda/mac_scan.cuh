// src/cuda/mac_scan.cuh: MAC's match scan of one head over a run of its ring's candidates
// (mac_decode.cu's scan kernel), in two forms:
//   - scan_staged: whole rows stream into shared memory by cp.async, two 64-row tiles in flight;
//   - scan_direct (scans with a finite bound): no shared memory; eight lanes per candidate load
//     its first 64 dims (one 128-byte line for 2-byte rings) into registers, several candidates
//     per thread in flight, and only the rows still under the bound are summed again, whole, in
//     the exact order. A row that cannot be a hit costs half its bytes (D = 128), and the blocks
//     are small and short, so a large scan streams through the chip. (It replaced scan_prefix,
//     which staged 64-dim prefixes of 512 rows per block in shared memory: at batch 16 those
//     blocks ran in two waves; h200.md.)
// Distances in core/distance.hpp's fixed fp32 order, so decisions are bit-identical to the CPU:
// half-warp per candidate, lane l owning dims l, l+16, ..., fused multiply-adds in that order,
// then the pairwise lane reduction. Every prefix of whole 16-dim chunks reduced the same way is
// a lower bound of the distance (each step adds a non-negative number and rounding is
// monotone), so dropping rows whose partial is >= the bound is exact: such a row can never be
// a hit (hits need distance < threshold). The bound is the threshold when nobody reads the
// best row of a miss (no per-head stats), +inf otherwise, as on the CPU. Internal.
#pragma once

#include "cuda/launch.cuh"
#include "cuda/mac_decide.cuh"

namespace macattn::cuda::detail {

constexpr int kScanSlots = 64;        // candidates per tile (the scan grid's unit)
constexpr int kScanStages = 2;        // tiles in flight per block in scan_staged
constexpr int kPruneDims = 32;        // dims summed before the lower bound is checked
constexpr int kDirectDims = 64;         // dims of scan_direct's quick bound

/// Lanes per candidate in scan_direct: one 16-byte load each over the first kDirectDims dims.
template <int D, typename RT> __host__ __device__ constexpr int direct_lanes() {
  return (kDirectDims < D ? kDirectDims : D) * static_cast<int>(sizeof(RT)) / 16;
}

/// Candidates one block of scan_direct covers with Threads threads, U candidates per thread.
template <int D, typename RT, int Threads, int U> __host__ __device__ constexpr int direct_block_candidates() {
  return Threads / direct_lanes<D, RT>() * U;
}

template <typename RT> __device__ __forceinline__ float ring_float(RT v);
template <> __device__ __forceinline__ float ring_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float ring_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float ring_float<float>(float v) { return v; }

/// Bytes between two rows of a stage in shared memory: a row plus one half-warp's read, so
/// the two half-warps of a warp (consecutive rows) read different banks.
template <int D, typename RT> __host__ __device__ constexpr int staged_row_bytes() { return D * static_cast<int>(sizeof(RT)) + 16 * static_cast<int>(sizeof(RT)); }

/// Shared memory scan_staged needs.
template <int D, typename RT> __host__ __device__ constexpr std::size_t staged_smem_bytes() {
  return static_cast<std::size_t>(kScanStages) * kScanSlots * staged_row_bytes<D, RT>();
}

/// One head's candidates: n rows, candidate c in ring slot slot0 + c (mod W), row of slot s at
/// base + s * stride elements.
template <typename RT>
struct ScanRows {
  const RT* base;
  const float* lse_base;  // the rows' entry lse, slot s at lse_base[s * lse_stride]
  std::size_t stride;
  int lse_stride;
  int slot0, window, n;
  bool stale;  // a wiped ring: every row reads as zeros, every entry as unusable
  __device__ __forceinline__ int slot(int c) const {
    const int s = slot0 + c;  // c < n <= W and slot0 < W
    return s >= window ? s - window : s;
  }
  __device__ __forceinline__ const RT* row(int c) const { return base + static_cast<std::size_t>(slot(c)) * stride; }
  /// Whether candidate c's ring entry cannot be reused (pack_match's bit 0).
  __device__ __forceinline__ bool unusable(int c) const {
    return stale || !lse_finite(lse_base[static_cast<std::size_t>(slot(c)) * lse_stride]);
  }
};

/// The rows of head h of sequence b at decode position t. A stale ring (not ready, or at
/// another position) is wiped before it is scanned (CPU semantics): every row is zero, so the
/// best is the oldest candidate at distance |q|^2; only that one is scanned, against zeros.
template <typename RT>
__device__ __forceinline__ ScanRows<RT> scan_rows(const RingArgs& ring, const MacArgs& mac, int hq, int head_dim, int b,
                                                  int h, long long t, bool stale) {
  const long long first = first_candidate(t, mac.window);
  ScanRows<RT> r;
  r.stride = static_cast<std::size_t>(hq) * head_dim;
  r.base = static_cast<const RT*>(ring.qring) + (static_cast<std::size_t>(b) * mac.window * hq + h) * head_dim;
  r.lse_base = ring.lring + static_cast<std::size_t>(b) * mac.window * hq + h;
  r.lse_stride = hq;
  r.slot0 = static_cast<int>(first % mac.window);
  r.window = mac.window;
  r.n = stale ? (t > first ? 1 : 0) : static_cast<int>(t - first);
  r.stale = stale;
  return r;
}

/// Adds dims lane + 16k, k in [K0, K1), of (q - row)^2 to one lane's sum, one fused
/// multiply-add per dim in core/distance.hpp's order (q holds this lane's dims, q[k] = dim
/// lane + 16k).
template <int K0, int K1, typename RT, int N>
__device__ __forceinline__ float add_dims(const float (&q)[N], const RT* row, int lane, float acc) {
#pragma unroll
  for (int k = K0; k < K1; ++k) {
    const float diff = __fsub_rn(q[k], ring_float(row[lane + k * 16]));
    acc = __fmaf_rn(diff, diff, acc);
  }
  return acc;
}

/// Pairwise reduction of the 16 lanes of each half-warp (core/distance.hpp's order); lane 0 of
/// the half holds the sum. Every lane of the warp must call it.
__device__ __forceinline__ float reduce_half_lanes(float acc) {
#pragma unroll
  for (int width = 8; width >= 1; width >>= 1) acc = __fadd_rn(acc, __shfl_down_sync(0xffffffffu, acc, width, 16));
  return acc;
}

/// Whether a candidate whose lane sums (over its first dims) are `acc` may still be under the
/// bound: the half's partial distance, broadcast to its 16 lanes. NaN keeps the row (the full
/// distance then never matches, as on the CPU).
__device__ __forceinline__ bool under_bound(float acc, float bound) {
  const float partial = __shfl_sync(0xffffffffu, reduce_half_lanes(acc), 0, 16);
  return !(partial >= bound);
}

/// Folds candidate c's full lane sums into the thread's packed minimum (lane 0 of a half), with
/// whether its ring entry is unusable (pack_match's bit 0). Rows at distance >= bound are never
/// reported (with a finite bound a miss then reports no best row, as on the CPU); +inf and NaN
/// never match.
__device__ __forceinline__ void keep_min(unsigned long long& mine, float acc, bool valid, int c, float bound,
                                         bool unusable) {
  acc = reduce_half_lanes(acc);
  if (valid && (threadIdx.x & 15) == 0 && acc < bound) {
    const unsigned long long key = pack_match(acc, static_cast<unsigned>(c), unusable);
    mine = key < mine ? key : mine;
  }
}

/// The block's minimum of every thread's `mine`, returned in every thread.
template <int Threads>
__device__ unsigned long long block_min(unsigned long long mine) {
  __shared__ unsigned long long warp_min[Threads / 32];
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

/// Scans tiles [tile0, tile0 + tiles) of 64 candidates through shared memory (staged_smem_bytes):
/// cp.async, two tiles in flight; each half-warp then computes one candidate at a time.
/// Returns the packed minimum (pack_match; kNoMatch if none) in every thread. Every thread of
/// the block calls it (it synchronises). Threads: a multiple of 32.
template <int D, typename RT, int Threads>
__device__ unsigned long long scan_staged(char* smem, const float (&q)[D / 16], const ScanRows<RT>& rows, int tile0,
                                          int tiles, float bound) {
  constexpr int kDims = D / 16, kHalves = Threads / 16, kChunks = D * static_cast<int>(sizeof(RT)) / 16;
  constexpr int kStride = staged_row_bytes<D, RT>(), kCopies = kScanSlots * kChunks / Threads;
  constexpr int kPrefix = kPruneDims / 16;
  static_assert(kScanSlots * kChunks % Threads == 0, "whole copies per thread");
  const int n_tiles = (rows.n + kScanSlots - 1) / kScanSlots;
  const int tile_end = min(tile0 + tiles, n_tiles);
  if (tile0 >= tile_end) return kNoMatch;
  const int lane = threadIdx.x & 15, half = threadIdx.x >> 4;
  const bool prune = bound < __int_as_float(0x7f800000);
  // Stage `st` <- the rows of tile `tile` (rows past the candidates, and a stale ring's, zero).
  auto issue = [&](int tile, int st) {
    char* dst = smem + st * kScanSlots * kStride;
#pragma unroll
    for (int k = 0; k < kCopies; ++k) {
      const int idx = threadIdx.x + k * Threads, r = idx / kChunks, c = idx % kChunks;
      const int cand = tile * kScanSlots + r;
      const bool valid = cand < rows.n && !rows.stale;
      const char* src = reinterpret_cast<const char*>(valid ? rows.row(cand) : rows.base) + c * 16;
      cp_async_16(dst + r * kStride + c * 16, src, valid);
    }
  };
  unsigned long long mine = kNoMatch;
  issue(tile0, 0);
  cp_async_commit();
  for (int tile = tile0; tile < tile_end; ++tile) {
    const int st = (tile - tile0) % kScanStages;
    if (tile + 1 < tile_end) issue(tile + 1, (st + 1) % kScanStages);
    cp_async_commit();
    cp_async_wait<1>();  // this tile's rows have landed (the next tile's may still be in flight)
    __syncthreads();
    const char* stage = smem + st * kScanSlots * kStride;
    // Every lane runs every iteration (the shuffles need the whole warp); lanes past the
    // candidates computed on zeros and drop the result.
#pragma unroll 2
    for (int it = 0; it < kScanSlots / kHalves; ++it) {
      const int r = it * kHalves + half, c = tile * kScanSlots + r;
      const RT* row = reinterpret_cast<const RT*>(stage + r * kStride);
      bool valid = c < rows.n;
      float acc = add_dims<0, kPrefix>(q, row, lane, 0.f);
      if (prune) {
        const bool under = under_bound(acc, bound);  // every lane: it shuffles
        valid = valid && under;
        if (!__any_sync(0xffffffffu, valid)) continue;  // both candidates of the warp are out
      }
      acc = add_dims<kPrefix, kDims>(q, row, lane, acc);
      keep_min(mine, acc, valid, c, bound, false);  // bit 0 set below, for the block's minimum only
    }
    __syncthreads();  // the stage is read before the next iteration's copy overwrites it
  }
  cp_async_wait<0>();
  const unsigned long long m = block_min<Threads>(mine);
  // The minimum's entry, one load (this form's rows are not loaded one by one, as scan_direct's
  // survivors are); every thread returns the same value.
  return m == kNoMatch ? m : m | (rows.unusable(static_cast<int>(match_offset(m))) ? 1ull : 0ull);
}

/// The 16 / sizeof(RT) ring elements of a 16-byte word, as floats (exact conversions).
template <typename RT> __device__ __forceinline__ void unpack16(const uint4& x, float* f);
template <> __device__ __forceinline__ void unpack16<__nv_bfloat16>(const uint4& x, float* f) {
  const unsigned w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
template <> __device__ __forceinline__ void unpack16<__half>(const uint4& x, float* f) {
  const unsigned w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __half2 h = *reinterpret_cast<const __half2*>(&w[i]);
    f[2 * i] = __low2float(h);
    f[2 * i + 1] = __high2float(h);
  }
}
template <> __device__ __forceinline__ void unpack16<float>(const uint4& x, float* f) {
  f[0] = __uint_as_float(x.x);
  f[1] = __uint_as_float(x.y);
  f[2] = __uint_as_float(x.z);
  f[3] = __uint_as_float(x.w);
}

/// Relative slack of scan_direct's quick bound (see there). Summing n non-negative terms in fp32
/// in any order is within a factor (1 +/- gamma_n), gamma_n ~ n * 2^-24, of the exact sum (the
/// terms themselves, fused (q - r)^2 from the same rounded differences, are the same in both
/// orders); for n <= 256, 2 * gamma_n < 3.1e-5, so 1e-4 covers both sums' rounding.
constexpr float kQuickBoundSlack = 1e-4f;

/// A 16-byte load that is read once: not kept in L1.
__device__ __forceinline__ uint4 load_once16(const void* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

/// Sums the candidates a warp marks in `ballot` (bit k: candidate c_bit0 + k / Lanes; the same
/// value in every lane) in core/distance.hpp's order over all D dims, from global memory, two at
/// a time (half-warp 0 takes the first remaining one, half-warp 1 the second), and folds them
/// into the thread's packed minimum `mine` (keep_min). q: lane l of a half holds dims l + 16k.
/// Every lane of the warp calls it.
template <int D, typename RT, int Lanes>
__device__ __forceinline__ void exact_survivors(unsigned ballot, int c_bit0, const float (&q)[D / 16],
                                                const ScanRows<RT>& rows, float bound, unsigned long long& mine) {
  const int half = (threadIdx.x & 31) >> 4, hl = threadIdx.x & 15;
  unsigned m = ballot;
  while (m != 0) {  // the same in every lane
    const int b0 = __ffs(m) - 1;
    m &= m - 1;
    int b1 = -1;
    if (m != 0) {
      b1 = __ffs(m) - 1;
      m &= m - 1;
    }
    const int bit = half == 0 ? b0 : b1;
    const bool valid = bit >= 0;
    const int c = c_bit0 + (valid ? bit : b0) / Lanes;
    const RT* row = rows.row(c);
    const bool unusable = rows.unusable(c);  // its entry's lse, loaded beside the row
    float acc = 0.f;
#pragma unroll
    for (int k = 0; k < D / 16; ++k) {
      const float r = rows.stale ? 0.f : ring_float(row[hl + k * 16]);
      const float diff = __fsub_rn(q[k], r);
      acc = __fmaf_rn(diff, diff, acc);
    }
    keep_min(mine, acc, valid, c, bound, unusable);
  }
}

/// Scans candidates [c0, c0 + direct_block_candidates<D, RT, Threads, U>()) with a finite bound,
/// without shared memory: a candidate belongs to direct_lanes() consecutive lanes (8 for 2-byte
/// rings), each loading 16 bytes of its first kDirectDims dims into registers, and every thread
/// issues the loads of its U candidates before it uses any (U x 16 bytes in flight per thread).
/// The lanes' sums, in any order and reduced by shuffles, are the quick bound: a row whose sum
/// reaches bound * (1 + kQuickBoundSlack) cannot be a hit (the sum in core/distance.hpp's order
/// over all D dims is then at least the bound: rounding both sums moves them by less than the
/// slack, and the terms past the first 64 dims are non-negative). Rows under it are summed again by a half-warp each in
/// core/distance.hpp's order over all D dims (q: lane l of the half holds dims l + 16k), loaded
/// from global memory, so decisions and distances are bit-identical to the CPU's. `q_row`
/// points at this head's q_pre row (dtype q_dtype). Returns the packed minimum in every thread;
/// every thread of the block calls it (it synchronises). Threads: a multiple of 32.
template <int D, typename RT, int Threads, int U>
__device__ unsigned long long scan_direct(const void* q_pre, int q_dtype, std::size_t q_row, const float (&q)[D / 16],
                                          const ScanRows<RT>& rows, int c0, float bound) {
  constexpr int kLanes = direct_lanes<D, RT>(), kPerWord = 16 / static_cast<int>(sizeof(RT));
  constexpr int kGroups = Threads / kLanes;
  static_assert(kLanes >= 1 && 32 % kLanes == 0 && Threads % 32 == 0, "whole candidate groups per warp");
  const int sub = threadIdx.x % kLanes, grp = threadIdx.x / kLanes;
  uint4 x[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int c = c0 + u * kGroups + grp;
    const bool load = c < rows.n && !rows.stale;  // a stale ring reads as zeros
    x[u] = load ? load_once16(reinterpret_cast<const char*>(rows.row(c)) + sub * 16) : make_uint4(0, 0, 0, 0);
  }
  float qd[kPerWord];  // this lane's query dims [sub * kPerWord, +kPerWord)
#pragma unroll
  for (int e = 0; e < kPerWord; ++e) qd[e] = load_float(q_pre, q_dtype, q_row + sub * kPerWord + e);
  const float quick_bound = bound * (1.f + kQuickBoundSlack);
  bool under[U];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    float f[kPerWord];
    unpack16<RT>(x[u], f);
    float a0 = 0.f, a1 = 0.f;
#pragma unroll
    for (int e = 0; e < kPerWord; e += 2) {
      const float d0 = __fsub_rn(qd[e], f[e]);
      a0 = __fmaf_rn(d0, d0, a0);
      if (e + 1 < kPerWord) {
        const float d1 = __fsub_rn(qd[e + 1], f[e + 1]);
        a1 = __fmaf_rn(d1, d1, a1);
      }
    }
    float sum = a0 + a1;
#pragma unroll
    for (int off = kLanes / 2; off >= 1; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    under[u] = !(sum >= quick_bound) && c0 + u * kGroups + grp < rows.n;  // NaN stays (the exact sum decides)
  }
  // Survivors (a hit is one row per head), two at a time per warp.
  const int warp_group0 = (threadIdx.x >> 5) * (32 / kLanes);
  unsigned long long mine = kNoMatch;
#pragma unroll
  for (int u = 0; u < U; ++u)
    exact_survivors<D, RT, kLanes>(__ballot_sync(0xffffffffu, under[u] && sub == 0), c0 + u * kGroups + warp_group0, q,
                                   rows, bound, mine);
  return block_min<Threads>(mine);
}

}  // namespace macattn::cuda::detail
