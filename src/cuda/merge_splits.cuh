// src/cuda/merge_splits.cuh: merging split partials (o, lse) on the device. Internal.
#pragma once

#include "cuda/device_common.cuh"

namespace macattn::cuda::detail {

/// Element i of the merge of partials [s0, s1) of `row` (partials laid out [row][splits][D]
/// and [row][splits]): the LSE-weighted average and the merged natural LSE (-inf if empty).
__device__ __forceinline__ void merge_split_partials(const float* part_o, const float* part_lse, std::size_t row,
                                                     int splits, int s0, int s1, int head_dim, int i, float* o,
                                                     float* lse) {
  const float ninf = -__int_as_float(0x7f800000);
  const float* pl = part_lse + row * splits;
  float m = ninf;
  for (int s = s0; s < s1; ++s) m = fmaxf(m, pl[s]);
  if (m == ninf) {
    *o = 0.f;
    *lse = ninf;
    return;
  }
  float sum = 0.f, acc = 0.f;
  for (int s = s0; s < s1; ++s) {
    const float w = expf(pl[s] - m);  // exp(-inf) = 0 for empty splits
    sum += w;
    acc += w * part_o[(row * splits + s) * head_dim + i];
  }
  *o = acc / sum;
  *lse = m + logf(sum);
}

}  // namespace macattn::cuda::detail
