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
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#define CHECK(x)                                                                              \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

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

__global__ void flush_kernel(const float4* p, size_t n, float* sink) {
  float acc = 0.f;
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) acc += p[i].x;
  if (acc == 12345.f) *sink = acc;
}

int main() {
  cudaStream_t s;
  CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int l2 = 0, sms = 0;
  CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t flush_n = 4ull * l2 / sizeof(float4);
  float4* flush_buf;
  float *fsink, *out;
  CHECK(cudaMalloc(&flush_buf, flush_n * sizeof(float4)));
  CHECK(cudaMemset(flush_buf, 0, flush_n * sizeof(float4)));
  CHECK(cudaMalloc(&fsink, 4));
  CHECK(cudaMalloc(&out, 1 << 22));
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));

  // Median replay time (us) of a graph of `body`; before each replay (outside the events) the L2
  // flush and, with `evict`, a different 128 KB kernel on every SM.
  auto time_graph = [&](const std::function<void()>& body, bool evict) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    body();
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    std::vector<float> t;
    for (int r = 0; r < 220; ++r) {
      if (evict) code_kernel<8192, true, 9><<<sms * 2, 128, 0, s>>>(out, 1.f);
      flush_kernel<<<1056, 512, 0, s>>>(flush_buf, flush_n, fsink);
      CHECK(cudaEventRecord(e0, s));
      CHECK(cudaGraphLaunch(ge, s));
      CHECK(cudaEventRecord(e1, s));
      CHECK(cudaEventSynchronize(e1));
      float ms;
      CHECK(cudaEventElapsedTime(&ms, e0, e1));
      if (r >= 20) t.push_back(ms * 1000.f);
    }
    CHECK(cudaGraphExecDestroy(ge));
    CHECK(cudaGraphDestroy(g));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
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
