#include "macattn/host_memory.hpp"

#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace macattn {

namespace {
constexpr std::size_t kHugePage = std::size_t{2} << 20;
constexpr std::size_t kHugeFrom = std::size_t{1} << 20;  // below this a 2 MiB block wastes more than it gains
}  // namespace

void* huge_page_alloc(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  if (bytes < kHugeFrom) return ::operator new(bytes);
  if (bytes > static_cast<std::size_t>(-1) - kHugePage) throw std::bad_alloc();
  const std::size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  (void)::madvise(p, rounded, MADV_HUGEPAGE);  // advice only: EINVAL (no THP in this kernel) changes nothing
#endif
  return p;
}

void huge_page_free(void* p, std::size_t bytes) noexcept {
  if (!p) return;
  if (bytes < kHugeFrom) ::operator delete(p);
  else std::free(p);
}

}  // namespace macattn
