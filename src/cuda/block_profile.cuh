// src/cuda/block_profile.cuh: per-block timestamps of the decode kernels, for finding where a
// short step's time goes (MACATTN_CUDA_PROFILE=1; off by default, and then free: the kernels
// get a null pointer and skip every stamp). Eager calls: each stamped call synchronises its
// stream, so timings of a profiled run are not timings of the step. Calls captured into a CUDA
// graph: each kernel gets a range of a second buffer for good (the pointer is baked into the
// graph), nothing synchronises, and the ranges are read at exit, so they show each graph's last
// replay (the stamps' stores are the only cost). At exit the library prints, per kernel and
// grid, for eager calls and for graphs apart: calls, the kernel's span (first block start to last
// block end), the gap from the previous kernel's last block in the same call, a block's mean and
// longest lifetime, and the mean and longest time between consecutive stamps (the phases each
// kernel names). A diagnostic for one thread issuing calls (its state is process-wide and
// unsynchronised). Internal.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <initializer_list>

namespace macattn::cuda::detail {

constexpr int kMaxStamps = 6;  // per block

/// A kernel's stamp buffer: [blocks][kMaxStamps] %globaltimer values (0 = not reached).
struct BlockStamps {
  unsigned long long* p = nullptr;
};

/// Thread 0 of the block records stamp k (k < kMaxStamps). Uniform across the block.
__device__ __forceinline__ void stamp(BlockStamps s, int k) {
  if (s.p != nullptr && threadIdx.x == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    const std::size_t block =
        (static_cast<std::size_t>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    s.p[block * kMaxStamps + k] = t;
  }
}

/// The host side for one library call: kernel() before each launch gives its buffer (null when
/// profiling is off), finish() after the last launch reads them back (eager calls; a captured
/// call's stamps are read at exit).
class ProfileScope {
 public:
  explicit ProfileScope(cudaStream_t stream);
  /// `phases`: names of the intervals between consecutive stamps (at most kMaxStamps - 1).
  BlockStamps kernel(const char* name, dim3 grid, std::initializer_list<const char*> phases);
  void finish();

 private:
  cudaStream_t stream_;
  bool active_ = false;
  bool graph_ = false;  // the stream is capturing
  int count_ = 0;
};

}  // namespace macattn::cuda::detail
