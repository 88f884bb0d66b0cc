// l2_prefetch: asks the L2 cache to fetch weight bytes ahead of the matmul that reads them.
//
// Why: while a MAC decode step attends (a hit reads a few hundred keys, not the context), the
// attention kernels are latency-bound and DRAM is idle for ~20 us per layer; the o_proj and
// gate|up matmuls that follow are bandwidth-bound. Fetching their first weights into L2 during
// the attention moves those bytes off the matmuls' critical path. The decode step runs this on
// a side stream (a parallel branch of the step's graph), so nothing on the main stream waits.
//
// How: TMA bulk prefetches (cp.async.bulk.prefetch.L2, sm_90): one instruction asks for up to
// kChunk bytes and returns at once; no data reaches the SM. Chunks are handed out in address
// order (thread t of the grid takes chunks t, t + threads, ...), the order the matmuls' blocks
// read rows. Before sm_90 the kernel does nothing (l2_prefetch_supported() says so).
#include <cstdint>
#include <string>

#include "engine/cuda/cuda_check.cuh"
#include "engine/cuda/kernels.cuh"
#include "macattn/error.hpp"

namespace macattn::engine::gpu {

namespace {

constexpr std::uint32_t kChunk = 16 * 1024;  // bytes per prefetch instruction
constexpr int kThreads = 128;
constexpr int kMaxBlocks = 16;  // spread the requests over 16 SMs' TMA units

struct Ranges {
  const char* p[kL2PrefetchMaxRanges];
  std::uint64_t bytes[kL2PrefetchMaxRanges];  // multiples of 16
  int count;
};

__global__ void l2_prefetch_kernel(Ranges r, bool evict_last) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  std::uint64_t policy = 0;
  if (evict_last) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  const std::uint64_t stride = static_cast<std::uint64_t>(gridDim.x) * blockDim.x;
  const std::uint64_t first = static_cast<std::uint64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int i = 0; i < r.count; ++i) {
    const std::uint64_t chunks = (r.bytes[i] + kChunk - 1) / kChunk;
    for (std::uint64_t c = first; c < chunks; c += stride) {
      const std::uint64_t off = c * kChunk;
      const auto n = static_cast<std::uint32_t>(r.bytes[i] - off < kChunk ? r.bytes[i] - off : kChunk);
      const char* a = r.p[i] + off;
      if (evict_last)
        asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(a), "r"(n), "l"(policy)
                     : "memory");
      else
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"(n) : "memory");
    }
  }
#endif
}

}  // namespace

bool l2_prefetch_supported() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess)
    return false;
  return major >= 9;
}

void l2_prefetch(const L2Range* ranges, int count, bool evict_last, cudaStream_t s) {
  if (count < 0 || count > kL2PrefetchMaxRanges)
    throw Error("CUDA engine: l2_prefetch count = " + std::to_string(count) + " must be in [0, " +
                std::to_string(kL2PrefetchMaxRanges) + "]");
  if (count > 0 && ranges == nullptr) throw Error("CUDA engine: l2_prefetch ranges is null with count > 0");
  Ranges r{};
  std::uint64_t chunks = 0;
  for (int i = 0; i < count; ++i) {
    const auto addr = reinterpret_cast<std::uintptr_t>(ranges[i].p);
    if (ranges[i].bytes > 0 && (ranges[i].p == nullptr || addr % 16 != 0))
      throw Error("CUDA engine: l2_prefetch range " + std::to_string(i) + " starts at " + std::to_string(addr) +
                  ", not a 16-byte aligned device address");
    // Whole 16-byte units only (the instruction's size rule); a ragged end is left out.
    const std::uint64_t bytes = ranges[i].bytes / 16 * 16;
    if (bytes == 0) continue;
    r.p[r.count] = static_cast<const char*>(ranges[i].p);
    r.bytes[r.count] = bytes;
    ++r.count;
    chunks += (bytes + kChunk - 1) / kChunk;
  }
  if (r.count == 0) return;
  const std::uint64_t want = (chunks + kThreads - 1) / kThreads;
  const int blocks = static_cast<int>(want < kMaxBlocks ? want : kMaxBlocks);
  l2_prefetch_kernel<<<blocks, kThreads, 0, s>>>(r, evict_last);
  ENGINE_LAUNCHED("l2_prefetch_kernel");
}

}  // namespace macattn::engine::gpu
