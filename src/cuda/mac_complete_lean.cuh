// src/cuda/mac_complete_lean.cuh: MAC's complete state (MAC_ATTENTION.md §5: the sinks
// [0, min(F, E(t))) and the tail [E(t), t+1)) without the tensor-core attention core, for groups
// of at most kLeanMaxGroup query heads and head dims 64 and 128. An experiment, off by default
// (MACATTN_CUDA_COMPLETE_FORM=lean, complete_form_lean()).
//
// Why: inside the engine's replayed graph on the H200, the side complete kernel (the attention
// core of attend_tile.cuh, tens of KB of code) slowed the scan kernel beside it from about 2 to
// 5.5 µs per block. Its bytes did not matter (a 1-key tail cost as much as 256 keys), nor its
// length, grid or shared memory (an empty or a spinning kernel of the same shape cost nothing).
// The suspect is what it executes, its code above all (h200.md, twenty-fourth session). The tail
// is rect_offset keys (256 by default) for a few heads, which needs no tensor cores.
//
// Work: grid (kCompleteSplits, Hkv, B), kThreads threads, as mac_complete_kernel. Block j takes
// part j of the tail (split_range) and, for j = 0, the sinks, in chunks of kLeanChunk keys (one
// chunk for the default 256-key tail). Per chunk: the page-table entries (one round trip), the K
// and V rows into shared memory, every load in flight together (one more), then from shared
// memory in short loops (the code stays small: a first form that kept rows in registers, fully
// unrolled, compiled to 200 KB): scores of (head, key) pairs in fp32, an online softmax in base 2
// per head (a warp each), and the V accumulation of (head, dim) pairs. The block writes each
// head's state as partial slots + j (o normalised, lse natural), or an empty partial (lse -inf)
// when the part has no keys, as write_group_partial does. Internal.
#pragma once

#include "cuda/attend_tile.cuh"
#include "cuda/block_profile.cuh"
#include "cuda/launch.cuh"
#include "cuda/mac_decide.cuh"
#include "cuda/mac_scan.cuh"  // unpack16, ring_float: 16-bit elements as floats
#include "cuda/split_plan.hpp"

namespace macattn::cuda::detail {

constexpr int kLeanMaxGroup = 8;  // heads per group the kernel's shared arrays hold
constexpr int kLeanChunk = 64;    // keys staged in shared memory at a time

/// Whether the lean complete kernel can take a group of `group` heads of dim `head_dim`.
inline bool complete_lean_fits(int group, int head_dim) {
  return group >= 1 && group <= kLeanMaxGroup && (head_dim == 64 || head_dim == 128);
}

/// Byte offsets of mac_complete_lean_kernel<D, T>'s dynamic shared memory (16-bit K/V), and its size.
template <int D>
struct LeanSmem {
  static constexpr int G = kLeanMaxGroup;
  static constexpr std::size_t kK = 0;                                        // [kLeanChunk][D] K rows, swz<D>
  static constexpr std::size_t kV = kK + std::size_t(kLeanChunk) * D * 2;     // the same for V
  static constexpr std::size_t kQ = kV + std::size_t(kLeanChunk) * D * 2;     // [G][D] q * scale * log2(e)
  static constexpr std::size_t kO = kQ + std::size_t(G) * D * 4;              // [G][D] running o, unnormalised
  static constexpr std::size_t kP = kO + std::size_t(G) * D * 4;              // [G][kLeanChunk] scores, weights
  static constexpr std::size_t kM = kP + std::size_t(G) * kLeanChunk * 4;     // [G] running max (base 2)
  static constexpr std::size_t kL = kM + std::size_t(G) * 4;                  // [G] running sum of weights
  static constexpr std::size_t kC = kL + std::size_t(G) * 4;                  // [G] a chunk's correction
  static constexpr std::size_t kRow = kC + std::size_t(G) * 4;                // [kLeanChunk] row offsets
  static constexpr std::size_t kBytes = kRow + std::size_t(kLeanChunk) * sizeof(long long);
  static_assert(kRow % sizeof(long long) == 0, "the row offsets must be aligned");
};

template <int D, typename T>
__global__ void __launch_bounds__(kThreads) mac_complete_lean_kernel(PagedKVArgs kv, const void* q, int q_dtype,
                                                                     MacArgs mac, int hq, int group, int slots,
                                                                     float scale, float* part_o, float* part_lse,
                                                                     BlockStamps prof) {
  static_assert(D == 64 || D == 128, "the lean complete kernel takes head dims 64 and 128");
  constexpr int G = kLeanMaxGroup, kChunks = D / 8, kWarps = kThreads / 32;
  extern __shared__ __align__(16) char lean_smem[];
  using L = LeanSmem<D>;
  T* sk = reinterpret_cast<T*>(lean_smem + L::kK);
  T* sv = reinterpret_cast<T*>(lean_smem + L::kV);
  float* sq = reinterpret_cast<float*>(lean_smem + L::kQ);
  float* so = reinterpret_cast<float*>(lean_smem + L::kO);
  float* sp = reinterpret_cast<float*>(lean_smem + L::kP);
  float* sm = reinterpret_cast<float*>(lean_smem + L::kM);
  float* sl = reinterpret_cast<float*>(lean_smem + L::kL);
  float* sc = reinterpret_cast<float*>(lean_smem + L::kC);
  long long* srow = reinterpret_cast<long long*>(lean_smem + L::kRow);
  grid_dependency_wait();
  allow_dependents();
  stamp(prof, 0);
  const int j = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const float ninf = -__int_as_float(0x7f800000);
  const float scale_log2 = scale * 1.4426950408889634f;
  const long long t = seq_len(kv, b) - 1;
  const long long new_end = entry_end_dev(t, mac.rect);
  const long long sink_end = new_end < mac.sinks ? new_end : mac.sinks;
  long long a, z;
  split_range(new_end, t + 1, kCompleteSplits, j, &a, &z);
  // Keys v < n_sinks are positions v (part 0 only), the rest a + (v - n_sinks).
  const int n_sinks = j == 0 ? static_cast<int>(sink_end) : 0;
  const int n_keys = n_sinks + static_cast<int>(z - a);
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  const int ibase = kv.indptr[b];
#pragma unroll 1
  for (int idx = tid; idx < group * D; idx += kThreads) {
    const int h = idx / D, i = idx - h * D;
    sq[idx] = load_float(group_query_row(q, esize, D, b, hq, g, group, h), q_dtype, i) * scale_log2;
    so[idx] = 0.f;
  }
  if (tid < G) {
    sm[tid] = ninf;
    sl[tid] = 0.f;
  }
  const auto* kraw = reinterpret_cast<const T*>(kv.k);
  const auto* vraw = reinterpret_cast<const T*>(kv.v);
#pragma unroll 1
  for (int c0 = 0; c0 < n_keys; c0 += kLeanChunk) {
    const int n = n_keys - c0 < kLeanChunk ? n_keys - c0 : kLeanChunk;
    __syncthreads();  // the last chunk's rows, scores and offsets are read (and the setup written)
    if (tid < kLeanChunk) {
      const int v = c0 + tid;
      const long long pos = v < n_sinks ? v : a + (v - n_sinks);
      srow[tid] = tid < n ? paged_row(kv, ibase, static_cast<unsigned>(pos), g) * D : 0;
    }
    __syncthreads();
    // K and V rows: every 16-byte load of the chunk issued before the first store.
    constexpr int kPer = kLeanChunk * kChunks / kThreads;
    uint4 kx[kPer], vx[kPer];
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int idx = tid + k * kThreads, r = idx / kChunks, c = idx - r * kChunks;
      const bool ok = r < n;
      kx[k] = ok ? __ldg(reinterpret_cast<const uint4*>(kraw + srow[r] + c * 8)) : make_uint4(0, 0, 0, 0);
      vx[k] = ok ? __ldg(reinterpret_cast<const uint4*>(vraw + srow[r] + c * 8)) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int idx = tid + k * kThreads, r = idx / kChunks, c = idx - r * kChunks;
      *reinterpret_cast<uint4*>(sk + swz<D>(r, c)) = kx[k];
      *reinterpret_cast<uint4*>(sv + swz<D>(r, c)) = vx[k];
    }
    __syncthreads();
    // Scores of (head, key) pairs, keys fastest: a warp's lanes read different rows, whose
    // swizzled chunks fall in different banks.
#pragma unroll 1
    for (int pidx = tid; pidx < group * kLeanChunk; pidx += kThreads) {
      const int h = pidx / kLeanChunk, key = pidx - h * kLeanChunk;
      float s = ninf;
      if (key < n) {
        s = 0.f;
        const float* qh = sq + h * D;
#pragma unroll 2
        for (int c = 0; c < kChunks; ++c) {
          float f[8];
          unpack16<T>(*reinterpret_cast<const uint4*>(sk + swz<D>(key, c)), f);
#pragma unroll
          for (int e = 0; e < 8; ++e) s = fmaf(qh[c * 8 + e], f[e], s);
        }
      }
      sp[pidx] = s;
    }
    __syncthreads();
    // Online softmax, a warp per head: weights exp2(s - max) in place of the scores.
#pragma unroll 1
    for (int h = warp; h < group; h += kWarps) {
      float* ph = sp + h * kLeanChunk;
      float mx = ninf;
      for (int key = lane; key < kLeanChunk; key += 32) mx = fmaxf(mx, ph[key]);
      for (int off = 16; off >= 1; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_old = sm[h], m_new = fmaxf(m_old, mx);  // finite: the chunk has keys
      float sum = 0.f;
      for (int key = lane; key < kLeanChunk; key += 32) {
        const float w = exp2f(ph[key] - m_new);  // 0 past the chunk's keys (score -inf)
        ph[key] = w;
        sum += w;
      }
      for (int off = 16; off >= 1; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      if (lane == 0) {
        const float corr = exp2f(m_old - m_new);  // 0 before the first chunk (m_old -inf)
        sc[h] = corr;
        sl[h] = sl[h] * corr + sum;
        sm[h] = m_new;
      }
    }
    __syncthreads();
    // o of (head, dim) pairs, dims fastest: a warp reads 32 consecutive elements of a V row.
#pragma unroll 1
    for (int oidx = tid; oidx < group * D; oidx += kThreads) {
      const int h = oidx / D, i = oidx - h * D;
      const float* ph = sp + h * kLeanChunk;
      float acc = so[oidx] * sc[h];
      const int c = i >> 3, e = i & 7;
#pragma unroll 4
      for (int key = 0; key < n; ++key) acc = fmaf(ph[key], ring_float<T>(sv[swz<D>(key, c) + e]), acc);
      so[oidx] = acc;
    }
  }
  __syncthreads();
  if (tid < group && n_keys > 0) sc[tid] = 1.f / sl[tid];  // one division per head
  __syncthreads();
  const int parts = slots + kCompleteSplits;
#pragma unroll 1
  for (int idx = tid; idx < group * D; idx += kThreads) {
    const int h = idx / D, i = idx - h * D;
    const std::size_t prow = (static_cast<std::size_t>(b) * hq + g * group + h) * parts + slots + j;
    if (n_keys == 0) {  // an empty partial, as write_group_partial writes it
      if (i == 0) part_lse[prow] = ninf;
      continue;
    }
    part_o[prow * D + i] = so[idx] * sc[h];
    if (i == 0) part_lse[prow] = (sm[h] + log2f(sl[h])) * 0.6931471805599453f;
  }
  stamp(prof, 1);
}

}  // namespace macattn::cuda::detail
