// tools/bench/probe_huge_pages.cpp: does backing the K/V cache (and the streaming buffer) with
// transparent huge pages change the CPU backend's exact decode GB/s or its fraction of the
// streaming-read bandwidth? (Llama-3.1-8B shape, bf16, one sequence, 2 threads, caches evicted
// before each timed call.) The record behind docs/benchmarks/cpu.md's huge-page note.
// Not part of the build (needs a Release build of the library in build/):
//   g++ -O3 -march=native -fopenmp -std=c++20 -Iinclude -Ibuild/include tools/bench/probe_huge_pages.cpp
//       build/libmacattn.a -o /tmp/probe_hp && /tmp/probe_hp 0 131072 && /tmp/probe_hp 1 131072
//   args: huge (0/1), context (default 131072), evict (default 1; 0 = time with warm caches)
#include <omp.h>
#include <sys/mman.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>
#include "macattn/macattn.hpp"
static void* alloc(std::size_t bytes, bool huge) {
  void* p = std::aligned_alloc(2u << 20, (bytes + (2u << 20) - 1) / (2u << 20) * (2u << 20));
  if (huge) madvise(p, bytes, MADV_HUGEPAGE); else madvise(p, bytes, MADV_NOHUGEPAGE);
  return p;
}
volatile unsigned long long sink;
static double stream(const unsigned long long* p, std::size_t n, int reps) {
  std::vector<double> v;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    unsigned long long tot = 0;
#pragma omp parallel for reduction(^ : tot) num_threads(2) schedule(static)
    for (long long i = 0; i < (long long)n; i += 8) tot ^= p[i] ^ p[i+1] ^ p[i+2] ^ p[i+3] ^ p[i+4] ^ p[i+5] ^ p[i+6] ^ p[i+7];
    sink = tot;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r) v.push_back(n * 8 / s / 1e9);
  }
  std::sort(v.begin(), v.end()); return v[v.size() / 2];
}
int main(int argc, char** argv) {
  const bool huge = argc > 1 && std::atoi(argv[1]) == 1;
  const long long ctx = argc > 2 ? std::atoll(argv[2]) : 131072;
  macattn::AttentionShape sh; // 32/8/128
  const std::size_t elems = (std::size_t)ctx * 8 * 128, bytes = elems * 2;
  auto* k = (unsigned short*)alloc(bytes, huge); auto* v = (unsigned short*)alloc(bytes, huge);
#pragma omp parallel for num_threads(2)
  for (long long i = 0; i < (long long)elems; ++i) { unsigned x = (unsigned)i * 2654435761u; k[i] = 0x3c00 + (x >> 24) - 128; v[i] = 0x3c00 + ((x >> 16) & 0xff) - 128; }
  const std::size_t sbytes = 1ull << 30;
  auto* sb = (unsigned long long*)alloc(sbytes, huge);
  std::memset(sb, 1, sbytes);
  auto* ev = (unsigned long long*)alloc(128u << 20, false); std::memset(ev, 2, 128u << 20);
  std::vector<float> q(32 * 128), out(32 * 128);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = ((i * 37) % 101) / 101.f - 0.5f;
  macattn::set_num_threads(2);
  macattn::ContiguousSequence seq{k, v, ctx};
  auto view = macattn::KVCacheView::contiguous(std::span<const macattn::ContiguousSequence>(&seq, 1), 8, 128, macattn::DType::bf16);
  std::vector<double> t;
  for (int r = 0; r < 12; ++r) {
    if (!(argc > 3 && std::atoi(argv[3]) == 0)) stream(ev, (128u << 20) / 8, 1 + 1);  // evict
    auto t0 = std::chrono::steady_clock::now();
    macattn::exact_decode(sh, view, {q.data(), macattn::DType::f32}, {out.data(), macattn::DType::f32}, nullptr, macattn::Backend::cpu);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r) t.push_back(s);
  }
  std::sort(t.begin(), t.end());
  const double st = stream(sb, sbytes / 8, 7), kvst = stream((const unsigned long long*)k, bytes / 8, 5);
  const double gb = 2.0 * bytes / t[t.size() / 2] / 1e9;
  std::printf("huge=%d ctx=%lld: exact %.2f ms %.1f GB/s | stream 1GiB %.1f GB/s, stream K %.1f GB/s | exact/stream %.0f%% | isa %s\n",
              huge, ctx, t[t.size() / 2] * 1e3, gb, st, kvst, 100 * gb / st, macattn::cpu_isa());
}
