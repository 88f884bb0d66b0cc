// l2_prefetch: asks the L2 cache to fetch weight bytes ahead of the matmul that reads them.
//
// Why: while a MAC decode step attends (a hit reads a few hundred keys, not the context), the
// attention kernels are latency-bound and DRAM is idle for ~20 us per layer; the o_proj and
// gate|up matmuls that follow are bandwidth-bound. Fetching their first weights into L2 during
// the attention would move those bytes off the matmuls' critical path. The decode step issues
// the prefetches either from a kernel on a side stream (a parallel branch of the step's graph)
// or from the RoPE kernel's threads just before the attention (QkvParams::prefetch).
#include <cstdint>
#include <string>

#include "engine/cuda/cuda_check.cuh"
#include "engine/cuda/l2_prefetch.cuh"
#include "macattn/error.hpp"

namespace macattn::engine::gpu {

namespace {

constexpr int kThreads = 128;
constexpr int kMaxBlocks = 16;  // spread the requests over 16 SMs

__global__ void l2_prefetch_kernel(L2PrefetchSet r) {
  issue_l2_prefetch(r, static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                    static_cast<std::uint64_t>(gridDim.x) * blockDim.x);
}

}  // namespace

bool l2_prefetch_supported() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
    return false;
  return major >= 9;
}

L2PrefetchSet make_l2_prefetch_set(const L2Range* ranges, int count, bool bulk, bool evict_last) {
  if (count < 0 || count > kL2PrefetchMaxRanges)
    throw Error("CUDA engine: l2_prefetch count = " + std::to_string(count) + " must be in [0, " +
                std::to_string(kL2PrefetchMaxRanges) + "]");
  if (count > 0 && ranges == nullptr) throw Error("CUDA engine: l2_prefetch ranges is null with count > 0");
  L2PrefetchSet r;
  r.bulk = bulk;
  r.evict_last = evict_last;
  for (int i = 0; i < count; ++i) {
    const auto addr = reinterpret_cast<std::uintptr_t>(ranges[i].p);
    if (ranges[i].bytes > 0 && (ranges[i].p == nullptr || addr % 16 != 0))
      throw Error("CUDA engine: l2_prefetch range " + std::to_string(i) + " starts at " + std::to_string(addr) +
                  ", not a 16-byte aligned device address");
    // Whole 16-byte units only (the bulk instruction's size rule); a ragged end is left out.
    const std::uint64_t bytes = ranges[i].bytes / 16 * 16;
    if (bytes == 0) continue;
    r.p[r.count] = static_cast<const char*>(ranges[i].p);
    r.bytes[r.count] = bytes;
    ++r.count;
  }
  return r;
}

void l2_prefetch(const L2PrefetchSet& r, cudaStream_t s) {
  if (r.count == 0) return;
  std::uint64_t units = 0;
  for (int i = 0; i < r.count; ++i) units += (r.bytes[i] + kL2Line - 1) / kL2Line;
  const std::uint64_t want = (units + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(want < kMaxBlocks ? want : kMaxBlocks);
  l2_prefetch_kernel<<<blocks, kThreads, 0, s>>>(r);
  ENGINE_LAUNCHED("l2_prefetch_kernel");
}

}  // namespace macattn::engine::gpu
