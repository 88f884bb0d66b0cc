// src/cuda/mac_band.cuh: a hit's short amend band attended inside MAC's finish kernel. Internal.
//
// A hit's band [E(m), E(t)) is mostly one key (the best match is mostly the previous step).
// Through the attention core it costs an attend-kernel block's whole tile pipeline (a 95 KB
// kernel whose blocks lived about 4 us for that key at batch 1; h200.md); the finish block of the
// head already holds the query's row and the matched entry, so for bands of at most
// MacArgs::finish_band keys it attends them itself with plain fp32 dot products, and the attend
// kernel gives those heads no keys (both decide the same way from the same inputs).
#pragma once

#include "cuda/device_common.cuh"
#include "cuda/launch.cuh"
#include "cuda/mac_decide.cuh"

namespace macattn::cuda::detail {

/// Whether decision x's band is attended by the finish kernel (x.start is E(m) on a hit).
__device__ __forceinline__ bool band_in_finish(const Decision& x, long long new_end, const MacArgs& mac) {
  return x.hit && new_end - x.start <= mac.finish_band;
}

/// The band's attention state for one head, by a block of head_dim threads (thread i owns
/// element i), in three parts between the finish kernel's barriers:
///   rows():  threads j < n look up key j's K/V row (a page-table load each) into `row_smem`;
///   --- barrier ---
///   dots():  every thread loads element i of each key's K and V (all loads in flight at once)
///            and leaves its warp's partial dot products in `dot_smem` [warps][kFinishBandMax];
///   --- barrier ---
///   state(): scores, softmax, and element i of the weighted sum of V; natural LSE (-inf, o = 0
///            for an empty band).
struct FinishBand {
  long long first = 0;  // E(m)
  int n = 0;            // keys, 0..kFinishBandMax
  float v[kFinishBandMax];

  __device__ void rows(const PagedKVArgs& kv, int b, int g, long long* row_smem) const {
    if (static_cast<int>(threadIdx.x) < n)
      row_smem[threadIdx.x] = paged_row(kv, kv.indptr[b], static_cast<unsigned>(first + threadIdx.x), g);
  }

  __device__ void dots(const PagedKVArgs& kv, const long long* row_smem, float q_i, int head_dim, float* dot_smem) {
    const int i = threadIdx.x, warp = i >> 5, lane = i & 31;
    // Raw 16-bit loads, converted after (one load instruction per element, not a dtype switch).
    unsigned short kr[kFinishBandMax], vr[kFinishBandMax];
    const auto* kp = reinterpret_cast<const unsigned short*>(kv.k);
    const auto* vp = reinterpret_cast<const unsigned short*>(kv.v);
#pragma unroll
    for (int j = 0; j < kFinishBandMax; ++j) {
      const std::size_t e = static_cast<std::size_t>(j < n ? row_smem[j] : 0) * head_dim + i;
      kr[j] = j < n ? kp[e] : 0;
      vr[j] = j < n ? vp[e] : 0;
    }
    const bool bf = kv.dtype == kBF16;
    auto to_float = [bf](unsigned short x) {
      return bf ? __bfloat162float(__ushort_as_bfloat16(x)) : __half2float(__ushort_as_half(x));
    };
#pragma unroll
    for (int j = 0; j < kFinishBandMax; ++j) v[j] = to_float(vr[j]);
#pragma unroll
    for (int j = 0; j < kFinishBandMax; ++j) {
      if (j >= n) break;
      float p = q_i * to_float(kr[j]);
      for (int off = 16; off >= 1; off >>= 1) p += __shfl_xor_sync(0xffffffffu, p, off);
      if (lane == 0) dot_smem[warp * kFinishBandMax + j] = p;
    }
  }

  __device__ void state(const float* dot_smem, int head_dim, float scale, float* o, float* lse) const {
    const float ninf = -__int_as_float(0x7f800000);
    const int warps = head_dim >> 5;
    float s[kFinishBandMax], mx = ninf;
#pragma unroll
    for (int j = 0; j < kFinishBandMax; ++j) s[j] = 0.f;
#pragma unroll 1
    for (int w = 0; w < warps; ++w)  // a short loop: this code runs once per block, cold (h200.md)
#pragma unroll
      for (int j = 0; j < kFinishBandMax; ++j) s[j] += dot_smem[w * kFinishBandMax + j];
#pragma unroll
    for (int j = 0; j < kFinishBandMax; ++j) {
      s[j] *= scale;
      if (j < n) mx = fmaxf(mx, s[j]);
    }
    if (n == 0) {
      *o = 0.f;
      *lse = ninf;
      return;
    }
    float sum = 0.f, acc = 0.f;
#pragma unroll
    for (int j = 0; j < kFinishBandMax; ++j)
      if (j < n) {
        const float e = __expf(s[j] - mx);  // ex2.approx, as the attention core's softmax
        sum += e;
        acc += e * v[j];
      }
    *o = acc / sum;
    *lse = mx + logf(sum);
  }
};

}  // namespace macattn::cuda::detail
