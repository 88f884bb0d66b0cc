// src/cuda/merge_splits.cuh: merging split partials (o, lse) on the device. Internal.
#pragma once

#include "cuda/device_common.cuh"

namespace macattn::cuda::detail {

constexpr int kMaxSplits = 1024;  // plan_splits never plans more (+1 for MAC's complete block)

/// Block-wide merge of partials [s0, s1) of `row` (partials laid out [row][splits][D] and
/// [row][splits]): thread i < head_dim gets element i of the LSE-weighted average in *o and
/// the merged natural LSE in *lse (-inf, o = 0 if every partial is empty). The weights are
/// computed once in shared memory `w` (>= s1 - s0 floats); empty partials (lse = -inf, whose
/// o is never written) are skipped, so an all-hit MAC step reads only the splits that worked.
/// Every thread of the block must call it (it synchronises); blockDim.x is a multiple of
/// head_dim, at most 1024.
__device__ __forceinline__ void merge_splits_block(const float* part_o, const float* part_lse, std::size_t row,
                                                   int splits, int s0, int s1, int head_dim, float* w, float* o,
                                                   float* lse) {
  const float ninf = -__int_as_float(0x7f800000);
  __shared__ float red[2];
  __syncthreads();  // w and red may still be read from a previous call
  const float* pl = part_lse + row * splits;
  const int n = s1 - s0;
  for (int s = threadIdx.x; s < n; s += blockDim.x) w[s] = pl[s0 + s];
  // blockDim.x = P * head_dim threads: thread (i, p) sums the splits s = p mod P of element i.
  // Its first kPrefetch partials' o are loaded now, with the lse (one round trip fewer); an
  // empty partial's o was never written, so its weight 0 drops it by a select, not a product.
  const int parts = blockDim.x / head_dim;
  const int i = threadIdx.x % head_dim, part = threadIdx.x / head_dim;
  const float* po = part_o + (row * splits + s0) * head_dim + i;
  constexpr int kPrefetch = 8;
  float pre[kPrefetch];
#pragma unroll
  for (int k = 0; k < kPrefetch; ++k) {
    const int s = part + k * parts;
    pre[k] = part < parts && s < n ? po[static_cast<std::size_t>(s) * head_dim] : 0.f;
  }
  __syncthreads();
  if (threadIdx.x < 32) {
    float m = ninf;
    for (int s = threadIdx.x; s < n; s += 32) m = fmaxf(m, w[s]);
    for (int off = 16; off >= 1; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    float sum = 0.f;
    if (m != ninf)
      for (int s = threadIdx.x; s < n; s += 32) sum += expf(w[s] - m);
    for (int off = 16; off >= 1; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (threadIdx.x == 0) {
      red[0] = m;
      red[1] = sum;
    }
  }
  __syncthreads();
  const float m = red[0], sum = red[1];
  if (m == ninf) {
    *o = 0.f;
    *lse = ninf;
    return;
  }
  for (int s = threadIdx.x; s < n; s += blockDim.x) w[s] = expf(w[s] - m) / sum;  // exp(-inf) = 0: skipped below
  __syncthreads();
  // The rest of thread (i, p)'s splits, many independent loads in flight; the P partial sums
  // meet in shared memory.
  float acc = 0.f;
  if (part < parts) {
#pragma unroll
    for (int k = 0; k < kPrefetch; ++k) {
      const int s = part + k * parts;
      if (s < n) acc += w[s] != 0.f ? w[s] * pre[k] : 0.f;
    }
#pragma unroll 8
    for (int s = part + kPrefetch * parts; s < n; s += parts)
      if (w[s] != 0.f) acc += w[s] * po[static_cast<std::size_t>(s) * head_dim];
  }
  if (parts > 1) {
    __shared__ float partial[1024];
    if (part < parts) partial[threadIdx.x] = acc;
    __syncthreads();
    if (part == 0)
      for (int p = 1; p < parts; ++p) acc += partial[p * head_dim + i];
  }
  *o = acc;  // meaningful for threads 0 .. head_dim-1
  *lse = m + logf(sum);
}

}  // namespace macattn::cuda::detail
