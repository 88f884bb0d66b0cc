// tools/bench/probe_access_pattern.cpp: how fast one core can read a [tokens, 8 heads, 128]
// bf16 K/V cache (128K tokens, 512 MiB) in the orders the CPU attention kernel could use, with
// no arithmetic. It is the record behind docs/benchmarks/cpu.md's note that the kernel's
// head-by-head walk of a 16-key tile is itself limited to about 13 GB/s on one core here.
// Not part of the build:
//   g++ -O2 -mavx512f tools/bench/probe_access_pattern.cpp -o /tmp/probe && /tmp/probe
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

int main() {
  const long n = 131072, heads = 8, row = 256;  // bytes per (token, head) row
  std::vector<std::uint8_t> k(n * heads * row, 1), v(n * heads * row, 2);
  auto at = [&](std::vector<std::uint8_t>& x, long j, long g, long l) { return &x[(j * heads + g) * row + l]; };
  const char* names[] = {"tile of 16 keys, head by head (the kernel)", "  + prefetch 2 tiles ahead per head (now)",
                         "  + prefetch 2 tiles ahead, linear", "tile of 16 keys, token by token (linear)"};
  for (int mode = 0; mode < 4; ++mode) {
    for (int rep = 0; rep < 2; ++rep) {
      __m512i acc = _mm512_setzero_si512();
      const auto t0 = std::chrono::steady_clock::now();
      for (long j0 = 0; j0 < n; j0 += 16) {
        if (mode == 2 && j0 + 48 <= n)
          for (long l = 0; l < 16 * heads * row; l += 64) {
            _mm_prefetch(reinterpret_cast<const char*>(at(k, j0 + 32, 0, 0)) + l, _MM_HINT_T1);
            _mm_prefetch(reinterpret_cast<const char*>(at(v, j0 + 32, 0, 0)) + l, _MM_HINT_T1);
          }
        if (mode == 3) {
          for (long jj = 0; jj < 16; ++jj)
            for (long l = 0; l < heads * row; l += 64) acc = _mm512_add_epi32(acc, _mm512_loadu_si512(at(k, j0 + jj, 0, l)));
          for (long jj = 0; jj < 16; ++jj)
            for (long l = 0; l < heads * row; l += 64) acc = _mm512_add_epi32(acc, _mm512_loadu_si512(at(v, j0 + jj, 0, l)));
          continue;
        }
        for (long g = 0; g < heads; ++g) {
          if (mode == 1)
            for (long jj = 0; jj < 16 && j0 + 32 + jj < n; ++jj)
              for (long l = 0; l < row; l += 64) {
                _mm_prefetch(reinterpret_cast<const char*>(at(k, j0 + 32 + jj, g, l)), _MM_HINT_T1);
                _mm_prefetch(reinterpret_cast<const char*>(at(v, j0 + 32 + jj, g, l)), _MM_HINT_T1);
              }
          for (long jj = 0; jj < 16; ++jj)
            for (long l = 0; l < row; l += 64) acc = _mm512_add_epi32(acc, _mm512_loadu_si512(at(k, j0 + jj, g, l)));
          for (long jj = 0; jj < 16; ++jj)
            for (long l = 0; l < row; l += 64) acc = _mm512_add_epi32(acc, _mm512_loadu_si512(at(v, j0 + jj, g, l)));
        }
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("%-46s %5.1f GB/s  (checksum %d)\n", names[mode], 2.0 * n * heads * row / s / 1e9,
                  _mm512_reduce_add_epi32(acc) & 0xff);
    }
  }
  return 0;
}
