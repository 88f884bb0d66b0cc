// macattn/host_memory.hpp: sizes, alignment, and that every byte is usable and kept.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "macattn/host_memory.hpp"

namespace {

TEST(HostMemory, ZeroBytesIsNull) {
  EXPECT_EQ(macattn::huge_page_alloc(0), nullptr);
  macattn::huge_page_free(nullptr, 0);  // no-op
  macattn::huge_page_free(nullptr, std::size_t{8} << 20);
}

TEST(HostMemory, EverySizeIsWritableAndLargeOnesAre2MiBAligned) {
  for (const std::size_t bytes : {std::size_t{1}, std::size_t{4096}, (std::size_t{1} << 20) - 1, std::size_t{1} << 20,
                                  (std::size_t{5} << 20) + 3}) {
    auto* p = static_cast<unsigned char*>(macattn::huge_page_alloc(bytes));
    ASSERT_NE(p, nullptr) << bytes;
    if (bytes >= (std::size_t{1} << 20)) {
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % (std::size_t{2} << 20), 0u) << bytes;
    }
    for (std::size_t i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(i * 31 + 7);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < bytes; ++i) bad += p[i] != static_cast<unsigned char>(i * 31 + 7);
    EXPECT_EQ(bad, 0u) << bytes;
    macattn::huge_page_free(p, bytes);
  }
}

TEST(HostMemory, AllocatorBacksVectorsThatGrowAndCopy) {
  std::vector<std::uint32_t, macattn::HugePageAllocator<std::uint32_t>> v;
  for (std::uint32_t i = 0; i < (1u << 20); ++i) v.push_back(i * 2654435761u);  // crosses the 1 MiB switch while growing
  auto copy = v;
  ASSERT_EQ(copy.size(), v.size());
  EXPECT_EQ(std::memcmp(copy.data(), v.data(), v.size() * sizeof(std::uint32_t)), 0);
  EXPECT_EQ(copy[12345], 12345u * 2654435761u);
}

TEST(HostMemory, AbsurdSizesThrowBadAlloc) {
  EXPECT_THROW(macattn::huge_page_alloc(static_cast<std::size_t>(-1)), std::bad_alloc);
  macattn::HugePageAllocator<double> a;
  EXPECT_THROW(a.allocate(static_cast<std::size_t>(-1) / 4), std::bad_alloc);
}

}  // namespace
