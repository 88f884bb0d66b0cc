// tools/macattn/bandwidth.cpp: the bandwidth ceiling every benchmark row is compared with.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bench.hpp"

namespace macattn_tool {

namespace {

// 1 GiB: 30x the dev machine's 32 MiB L3; and the eviction buffer, 128 MiB: 4x.
constexpr std::size_t kStreamBytes = std::size_t{1} << 30;
constexpr std::size_t kEvictBytes = std::size_t{128} << 20;

std::uint64_t read_all(const std::uint64_t* p, std::size_t n, int threads) {
  std::uint64_t total = 0;
  const auto count = static_cast<std::int64_t>(n);
#pragma omp parallel for reduction(^ : total) num_threads(threads) schedule(static)
  for (std::int64_t i = 0; i < count; i += 8) {
    // Eight independent XORs per cache line keep the loop load-bound, not add-latency-bound.
    total ^= p[i] ^ p[i + 1] ^ p[i + 2] ^ p[i + 3] ^ p[i + 4] ^ p[i + 5] ^ p[i + 6] ^ p[i + 7];
  }
  return total;
}

volatile std::uint64_t g_sink;

}  // namespace

double measure_stream_read_gbps(int threads) {
  if (threads <= 0) threads = omp_get_max_threads();
  const std::size_t n = kStreamBytes / sizeof(std::uint64_t);
  std::vector<std::uint64_t> buf(n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(n); ++i) buf[static_cast<std::size_t>(i)] = static_cast<std::uint64_t>(i) * 2654435761u;
  std::vector<double> gbps;
  for (int pass = 0; pass < 7; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    g_sink = read_all(buf.data(), n, threads);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (pass > 0) gbps.push_back(static_cast<double>(kStreamBytes) / s / 1e9);  // pass 0 is warm-up
  }
  std::sort(gbps.begin(), gbps.end());
  return gbps[gbps.size() / 2];
}

void evict_caches() {
  static std::vector<std::uint64_t> buf(kEvictBytes / sizeof(std::uint64_t), 1);
  g_sink = read_all(buf.data(), buf.size(), omp_get_max_threads());
}

}  // namespace macattn_tool
