// tools/macattn/bandwidth.cpp: the bandwidth ceiling every benchmark row is compared with.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bench.hpp"
#include "macattn/host_memory.hpp"

namespace macattn_tool {

namespace {

// 1 GiB: 30x the dev machine's 32 MiB L3; and the eviction buffer, 128 MiB: 4x.
constexpr std::size_t kStreamBytes = std::size_t{1} << 30;
constexpr std::size_t kEvictBytes = std::size_t{128} << 20;

// One thread's part of a read: eight independent XORs per cache line keep the loop
// load-bound, not add-latency-bound. Compiled for AVX-512 and AVX2 too (picked at load time):
// the default x86-64 build reads with 16-byte loads, which measured 31-32 GB/s on the dev
// machine's two cores where 64-byte loads read 45 GB/s (4 KiB pages) and 57-63 (2 MiB).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
std::uint64_t read_range(const std::uint64_t* p, std::size_t n) {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i + 8 <= n; i += 8)
    total ^= p[i] ^ p[i + 1] ^ p[i + 2] ^ p[i + 3] ^ p[i + 4] ^ p[i + 5] ^ p[i + 6] ^ p[i + 7];
  return total;
}

std::uint64_t read_all(const std::uint64_t* p, std::size_t n, int threads) {
  std::uint64_t total = 0;
#pragma omp parallel num_threads(threads) reduction(^ : total)
  {
    // Contiguous, line-aligned parts (one per thread), as a static schedule would give.
    const auto t = static_cast<std::size_t>(omp_get_thread_num()), nt = static_cast<std::size_t>(omp_get_num_threads());
    const std::size_t lines = n / 8, lo = lines * t / nt * 8, hi = lines * (t + 1) / nt * 8;
    total ^= read_range(p + lo, hi - lo);
  }
  return total;
}

volatile std::uint64_t g_sink;

}  // namespace

namespace {

double stream_read_gbps(int threads, bool huge_pages) {
  const std::size_t n = kStreamBytes / sizeof(std::uint64_t);
  auto* buf = static_cast<std::uint64_t*>(huge_pages ? macattn::huge_page_alloc(kStreamBytes) : ::operator new(kStreamBytes));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(n); ++i) buf[static_cast<std::size_t>(i)] = static_cast<std::uint64_t>(i) * 2654435761u;
  std::vector<double> gbps;
  for (int pass = 0; pass < 7; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    g_sink = read_all(buf, n, threads);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (pass > 0) gbps.push_back(static_cast<double>(kStreamBytes) / s / 1e9);  // pass 0 is warm-up
  }
  if (huge_pages) macattn::huge_page_free(buf, kStreamBytes);
  else ::operator delete(buf);
  std::sort(gbps.begin(), gbps.end());
  return gbps[gbps.size() / 2];
}

}  // namespace

StreamBandwidth measure_stream_read(int threads) {
  if (threads <= 0) threads = omp_get_max_threads();
  StreamBandwidth s;
  s.small_pages_gbps = stream_read_gbps(threads, false);
  s.gbps = stream_read_gbps(threads, true);
  return s;
}

double evict_caches() {
  // On huge pages, like the ceiling's buffer: the read doubles as a bandwidth probe taken
  // right before each timed run (the dev machine's bandwidth drifts by 2x within minutes as
  // other tenants load the host, so a ceiling measured once at the start misleads).
  static std::vector<std::uint64_t, macattn::HugePageAllocator<std::uint64_t>> buf(kEvictBytes / sizeof(std::uint64_t), 1);
  const auto t0 = std::chrono::steady_clock::now();
  g_sink = read_all(buf.data(), buf.size(), omp_get_max_threads());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(kEvictBytes) / s / 1e9;
}

}  // namespace macattn_tool
