// tools/bench/probe_icache.cu: what a kernel's code size costs when its code is cold, measured
// the way `macattn bench --backend cuda` measures a step (CUDA-graph replay, events, L2 flushed
// outside the events, median of 200). Two kernels run the same instructions (N fused
// multiply-adds per thread on 8 independent chains): one as straight-line code (N x 16 bytes of
// code), one as a loop over a 64-FMA body (about 1 KB). Their difference is the cost of
// fetching the straight-line code. "cold SMs": before each replay a different 128 KB kernel
// runs on every SM, as a model step's other kernels would (the L2 flush alone leaves the SMs'
// instruction caches as they were).
// The record behind docs/benchmarks/h200.md's code-size paragraph. Not part of the build:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a tools/bench/probe_icache.cu -o probe && ./probe
#include "probe_graph_timer.cuh"

// N FMAs per thread on 8 chains, straight-line (Straight) or as a loop of 64-FMA bodies. Tag
// only makes a distinct kernel (different constants, so different code).
template <int N, bool Straight, int Tag>
__global__ void code_kernel(float* out, float seed) {
  float a[8];
#pragma unroll
  for (int c = 0; c < 8; ++c) a[c] = threadIdx.x * seed + c;
  if constexpr (Straight) {
#pragma unroll
    for (int i = 0; i < N; ++i) a[i & 7] = fmaf(a[i & 7], 1.0f + (i + Tag * 7919) * 1e-7f, 0.5f);
  } else {
#pragma unroll 1
    for (int j = 0; j < N / 64; ++j) {
#pragma unroll
      for (int i = 0; i < 64; ++i) a[i & 7] = fmaf(a[i & 7], 1.0f + (i + Tag * 7919) * 1e-7f, 0.5f);
    }
  }
  float s = 0.f;
#pragma unroll
  for (int c = 0; c < 8; ++c) s += a[c];
  if (s == 1234.5f) out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

int main() {
  GraphTimer timer;
  const cudaStream_t s = timer.stream();
  const int l2 = timer.l2_bytes();
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  float* out;
  CHECK(cudaMalloc(&out, 1 << 22));
  // Before each replay (outside the events), with `evict`, a different 128 KB kernel on every SM.
  auto time_graph = [&](const std::function<void()>& body, bool evict) {
    const std::function<void()> other = [&] { code_kernel<8192, true, 9><<<sms * 2, 128, 0, s>>>(out, 1.f); };
    return timer.median_us(body, true, evict ? other : std::function<void()>());
  };

  std::printf("probe_icache: graph replay, events, L2 (%d MiB) flushed before each replay, median of 200\n", l2 >> 20);
  std::printf("%-8s %-7s %-10s %12s %12s %10s\n", "FMAs", "blocks", "SMs", "straight us", "looped us", "code cost");
  auto row = [&](int n, int blocks, bool evict, auto straight, auto looped) {
    const float a = time_graph([&] { straight<<<blocks, 128, 0, s>>>(out, 1.f); }, evict);
    const float b = time_graph([&] { looped<<<blocks, 128, 0, s>>>(out, 1.f); }, evict);
    std::printf("%-8d %-7d %-10s %12.2f %12.2f %10.2f\n", n, blocks, evict ? "cold" : "as left", a, b, a - b);
  };
  for (bool evict : {false, true})
    for (int blocks : {1, 32, 392}) {
      row(1024, blocks, evict, code_kernel<1024, true, 0>, code_kernel<1024, false, 0>);
      row(4096, blocks, evict, code_kernel<4096, true, 0>, code_kernel<4096, false, 0>);
      row(8192, blocks, evict, code_kernel<8192, true, 0>, code_kernel<8192, false, 0>);
    }
  return 0;
}
