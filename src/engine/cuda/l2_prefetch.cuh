// engine/cuda/l2_prefetch.cuh (internal): the device side of l2_prefetch (l2_prefetch.cu): a set
// of byte ranges whose lines any kernel's threads can ask L2 to fetch, fire and forget.
#pragma once

#include <cstdint>

#include "engine/cuda/kernels.cuh"

namespace macattn::engine::gpu {

constexpr std::uint32_t kL2BulkChunk = 16 * 1024;  // bytes per bulk prefetch instruction
constexpr std::uint32_t kL2Line = 128;             // bytes per line prefetch instruction

/// Thread `thread` of `threads` issues its share of the set's prefetches, in address order
/// across the threads (thread t takes chunks t, t + threads, ...), the order the matmuls read.
__device__ __forceinline__ void issue_l2_prefetch(const L2PrefetchSet& r, std::uint64_t thread,
                                                  std::uint64_t threads) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (r.count == 0) return;
  std::uint64_t policy = 0;
  if (r.evict_last) asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  const std::uint64_t unit = r.bulk ? kL2BulkChunk : kL2Line;
  for (int i = 0; i < r.count; ++i) {
    const std::uint64_t units = (r.bytes[i] + unit - 1) / unit;
    for (std::uint64_t c = thread; c < units; c += threads) {
      const std::uint64_t off = c * unit;
      const char* a = r.p[i] + off;
      if (r.bulk) {
        const auto n = static_cast<std::uint32_t>(r.bytes[i] - off < unit ? r.bytes[i] - off : unit);
        if (r.evict_last)
          asm volatile("cp.async.bulk.prefetch.L2.global.L2::cache_hint [%0], %1, %2;" ::"l"(a), "r"(n), "l"(policy)
                       : "memory");
        else
          asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"(n) : "memory");
      } else if (r.evict_last) {
        asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(a) : "memory");
      } else {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(a) : "memory");
      }
    }
  }
#endif
}

}  // namespace macattn::engine::gpu
