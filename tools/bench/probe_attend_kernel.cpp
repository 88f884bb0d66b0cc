// tools/bench/probe_attend_kernel.cpp: one kernel table's attend() alone, ns per key and KV head
// and relative L2 against an fp64 computation, on the Llama-3.1-8B shape (8 KV heads, 4 query
// heads each, D 128, bf16 K/V). The harness behind the in-cache figures of
// src/cpu/fast/kernels_impl.hpp's history and docs/benchmarks/cpu.md: it compiles a copy of the
// kernels (KIMPL, any kernels_impl.hpp variant) for AVX-512 with BF16, so two variants can be
// timed side by side. Not part of the build (needs a Release build of the library in build/):
//   g++ -O3 -std=c++20 -fopenmp -Iinclude -Isrc -DKIMPL='"cpu/fast/kernels_impl.hpp"' \
//       -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma -mf16c -ffp-contract=fast \
//       tools/bench/probe_attend_kernel.cpp build/libmacattn.a -o /tmp/probe_attend
//   /tmp/probe_attend KEYS REPS THREADS     (2048 keys: in L3; 65536 keys per thread: DRAM)
// Environment: HUGE=1 puts K/V on huge pages; BF16P=1 asks for bf16 products.
// Each thread attends its own sequence; the time is the slowest thread's minimum over REPS.
#define MACATTN_ISA_NS mb
#define MACATTN_ISA_NAME "mb"
#include KIMPL
#include <chrono>
#include <cstdio>
#include <random>
#include <cstdlib>
#include <omp.h>
#include <sys/mman.h>
// 2 MiB-aligned buffers, advised for transparent huge pages when HUGE is set.
template <class T>
struct HugeAlloc {
  using value_type = T;
  HugeAlloc() = default;
  template <class U>
  HugeAlloc(const HugeAlloc<U>&) {}
  T* allocate(size_t n) {
    const size_t b = (n * sizeof(T) + (2 << 20) - 1) / (2 << 20) * (2 << 20);
    void* p = aligned_alloc(2 << 20, b);
    if (getenv("HUGE")) madvise(p, b, MADV_HUGEPAGE);
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { free(p); }
  bool operator==(const HugeAlloc&) const { return true; }
};
using namespace macattn;
static std::uint16_t to_bf16(float x){ std::uint32_t u; std::memcpy(&u,&x,4); u += 0x7fff + ((u>>16)&1); return u>>16; }
static float from_bf16(std::uint16_t h){ std::uint32_t u=std::uint32_t(h)<<16; float f; std::memcpy(&f,&u,4); return f; }
int main(int argc, char** argv) {
  const int NK = argc > 1 ? atoi(argv[1]) : 128, reps = argc > 2 ? atoi(argv[2]) : 200, T = argc > 3 ? atoi(argv[3]) : 1;
  const int H = 8, D = 128, G = 4;
  const auto& tab = cpu::mb::kernel_table();
  double worst = 0; std::vector<double> tmin(T, 1e30);
#pragma omp parallel num_threads(T)
  {
  int tid = omp_get_thread_num();
  std::mt19937 rng(1 + tid); std::uniform_real_distribution<float> u(-1, 1);
  std::vector<std::uint16_t,HugeAlloc<std::uint16_t>> K((size_t)NK*H*D), V(K.size());
  for (auto& x : K) x = to_bf16(u(rng)); for (auto& x : V) x = to_bf16(u(rng));
  std::vector<float> q((size_t)H*G*D); for (auto& x : q) x = u(rng) * 3;
  ContiguousSequence seq{K.data(), V.data(), NK};
  KVCacheView kv = KVCacheView::contiguous(std::span<const ContiguousSequence>(&seq, 1), H, D, DType::bf16);
  std::vector<std::int64_t> beg(H*G, 0), end(H*G, NK);
  std::vector<float> m(H*G), l(H*G), o((size_t)H*G*D);
  std::vector<cpu::AttendGroup> gr(H);
  for (int g = 0; g < H; ++g) gr[g] = {g, q.data() + (size_t)g*G*D, G, beg.data()+g*G, end.data()+g*G, 0, NK, m.data()+g*G, l.data()+g*G, o.data()+(size_t)g*G*D};
  const float scale = 1.0f / std::sqrt((float)D);
  auto run = [&] { std::fill(m.begin(), m.end(), -INFINITY); std::fill(l.begin(), l.end(), 0.f); std::fill(o.begin(), o.end(), 0.f);
    tab.attend({&kv, 0, gr.data(), H, 0, NK, scale, getenv("BF16P") != nullptr}); };
  run();
  // fp64 check
  double err2 = 0, ref2 = 0;
  for (int g = 0; g < H; ++g) for (int i = 0; i < G; ++i) {
    const float* qq = q.data() + ((size_t)g*G+i)*D; std::vector<double> s(NK); double mx=-1e300;
    for (int j = 0; j < NK; ++j) { double a=0; for (int d=0; d<D; ++d) a += (double)qq[d]*from_bf16(K[((size_t)j*H+g)*D+d]); s[j]=a*scale; mx=std::max(mx,s[j]); }
    double L=0; std::vector<double> out(D,0); for (int j=0;j<NK;++j){ double p=std::exp(s[j]-mx); L+=p; for(int d=0;d<D;++d) out[d]+=p*from_bf16(V[((size_t)j*H+g)*D+d]); }
    for (int d=0; d<D; ++d){ double r=out[d]/L, x=o[((size_t)g*G+i)*D+d]/l[g*G+i]; err2+=(r-x)*(r-x); ref2+=r*r; }
  }
#pragma omp critical
  worst = std::max(worst, std::sqrt(err2/ref2));
  for (int r = 0; r < reps; ++r) {
#pragma omp barrier
    auto t0 = std::chrono::steady_clock::now(); run(); auto t1 = std::chrono::steady_clock::now();
    tmin[tid] = std::min(tmin[tid], std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  }
  double mx = 0; for (double t : tmin) mx = std::max(mx, t);
  printf("NK=%d T=%d: %.2f ns per key-head (per thread), %.1f GB/s total; rel L2 vs fp64 %.2e\n", NK, T, mx/(NK*H), (double)NK*H*512*T/mx, worst);
}
