// macattn/host_memory.hpp: host buffers for what the CPU backend streams (K/V caches, MAC
// rings), on 2 MiB pages where the OS allows it.
//
// Why: a decode step reads every K/V row once, in order. On 4 KiB pages every 4 KiB of that
// stream is a new TLB entry and a page boundary the hardware prefetchers stop at; on the dev
// machine (2-core AMD EPYC, Zen 4) the fast exact kernel read 26 GB/s from a 4 KiB-page buffer
// and 31-32 GB/s from the same data on transparent huge pages, and a plain streaming read
// 45 vs 57-63 GB/s (docs/benchmarks/cpu.md). Where transparent huge pages are in `madvise`
// mode (a common default) nothing is on huge pages unless it asks; these functions ask.
#pragma once

#include <cstddef>
#include <new>

namespace macattn {

/// Allocates `bytes` of host memory. At least 1 MiB: aligned to 2 MiB, rounded up to a
/// multiple of it and advised for transparent huge pages (Linux madvise(MADV_HUGEPAGE); the
/// advice is best effort, the memory is usable either way). Smaller: plain operator new.
/// bytes = 0 returns nullptr. Throws std::bad_alloc when the memory cannot be had.
void* huge_page_alloc(std::size_t bytes);
/// Frees what huge_page_alloc(bytes) returned (same `bytes`); nullptr is ignored.
void huge_page_free(void* p, std::size_t bytes) noexcept;

/// A std::allocator for vectors that hold K/V caches or rings (std::vector<T, HugePageAllocator<T>>).
template <class T>
struct HugePageAllocator {
  using value_type = T;
  HugePageAllocator() noexcept = default;
  template <class U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(huge_page_alloc(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { huge_page_free(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const HugePageAllocator<U>&) const noexcept { return true; }
};

}  // namespace macattn
