// src/cuda/merge_splits.cuh: merging split partials (o, lse) on the device. Internal.
#pragma once

#include "cuda/device_common.cuh"

namespace macattn::cuda::detail {

constexpr int kMaxSplits = 1024;  // plan_splits never plans more (+1 for MAC's complete block)

/// Max and sum of exp(lse - max) over lse[0, n), computed by every warp on its own (each lane
/// loads lse[lane] and lse[lane + 32] in one round trip; n > 64 loops): no shared memory and no
/// barrier between the partials' loads and their weights. sum = 0 when every lse is -inf.
/// *l0, *l1 (optional): this lane's lse[lane] and lse[lane + 32] (-inf past n), from which a
/// shuffle gives any lse of the first 64.
__device__ __forceinline__ void warp_lse_stats(const float* lse, int n, float* max_out, float* sum_out,
                                               float* l0_out = nullptr, float* l1_out = nullptr) {
  const float ninf = -__int_as_float(0x7f800000);
  const int lane = threadIdx.x & 31;
  const float l0 = lane < n ? lse[lane] : ninf, l1 = lane + 32 < n ? lse[lane + 32] : ninf;
  float mx = fmaxf(l0, l1);
  for (int s = lane + 64; s < n; s += 32) mx = fmaxf(mx, lse[s]);
  for (int off = 16; off >= 1; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  float sum = 0.f;
  if (mx != ninf) {
    sum = expf(l0 - mx) + expf(l1 - mx);  // exp(-inf) = 0
    for (int s = lane + 64; s < n; s += 32) sum += expf(lse[s] - mx);
  }
  for (int off = 16; off >= 1; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  *max_out = mx;
  *sum_out = sum;
  if (l0_out) *l0_out = l0;
  if (l1_out) *l1_out = l1;
}

/// Block-wide merge of partials [s0, s1) of `row` (partials laid out [row][splits][D] and
/// [row][splits]): thread i < head_dim gets element i of the LSE-weighted average in *o and
/// the merged natural LSE in *lse (-inf, o = 0 if every partial is empty). Empty partials
/// (lse = -inf, whose o is never written) are dropped by a select, so an all-hit MAC step reads
/// only the splits that worked. Every thread of the block must call it (it synchronises);
/// blockDim.x is a multiple of head_dim, at most 1024.
///
/// One round trip to the partials: thread (i, p) of the blockDim.x = P * head_dim threads loads
/// the lse and element i of o of its splits s = p mod P (the first kPrefetch of them at once;
/// 16 x 4 covers batch 1's 49 splits at head dim 128), while every warp loads all the lse for
/// the max and the sum (warp_lse_stats). The weights are computed in registers; the P partial
/// sums meet in shared memory, the only barrier. (Before: the lse through shared memory, one
/// warp's max and sum, the weights in shared memory: four barriers and a second round trip for
/// splits past 32; h200.md, eighteenth session.)
__device__ __forceinline__ void merge_splits_block(const float* part_o, const float* part_lse, std::size_t row,
                                                   int splits, int s0, int s1, int head_dim, float* o, float* lse) {
  const float ninf = -__int_as_float(0x7f800000);
  const float* pl = part_lse + row * splits + s0;
  const int n = s1 - s0;
  const int parts = blockDim.x / head_dim;
  const int i = threadIdx.x % head_dim, part = threadIdx.x / head_dim;
  const float* po = part_o + (row * splits + s0) * head_dim + i;
  constexpr int kPrefetch = 16;
  float pre_o[kPrefetch], pre_l[kPrefetch];
#pragma unroll
  for (int k = 0; k < kPrefetch; ++k) {
    const int s = part + k * parts;
    const bool in = part < parts && s < n;
    pre_l[k] = in ? pl[s] : ninf;
    pre_o[k] = in ? po[static_cast<std::size_t>(s) * head_dim] : 0.f;
  }
  float m, sum;
  warp_lse_stats(pl, n, &m, &sum);
  float acc = 0.f;
  if (m != ninf && part < parts) {
    const float inv = 1.f / sum;
#pragma unroll
    for (int k = 0; k < kPrefetch; ++k) {
      const float w = expf(pre_l[k] - m) * inv;  // 0 for an empty partial: skipped by the select
      acc += w != 0.f ? w * pre_o[k] : 0.f;
    }
#pragma unroll 4
    for (int s = part + kPrefetch * parts; s < n; s += parts) {
      const float w = expf(pl[s] - m) * inv;
      if (w != 0.f) acc += w * po[static_cast<std::size_t>(s) * head_dim];
    }
  }
  if (parts > 1) {
    __shared__ float partial[1024];
    __syncthreads();  // a previous call's partial sums are read
    if (part < parts) partial[threadIdx.x] = acc;
    __syncthreads();
    if (part == 0)
      for (int p = 1; p < parts; ++p) acc += partial[p * head_dim + i];
  }
  *o = m == ninf ? 0.f : acc;  // meaningful for threads 0 .. head_dim-1
  *lse = m == ninf ? ninf : m + logf(sum);
}

}  // namespace macattn::cuda::detail
