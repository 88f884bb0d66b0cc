// tools/bench/probe_graph_timer.cuh: what the standalone GPU probes (probe_gpu_floor.cu, probe_read_paths.cu,
// probe_icache.cu) share: a CUDA error check, and timing a captured graph the way `macattn bench
// --backend cuda` times a step (graph replay, CUDA events per replay, the L2 flushed outside the
// events, median of 200 after 20 warm-up replays).
#pragma once

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

__global__ void probe_flush_kernel(const float4* p, size_t n, float* sink) {
  float acc = 0.f;
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) acc += p[i].x;
  if (acc == 12345.f) *sink = acc;
}

/// A stream, events and a buffer of 4x the L2 for flushing it.
class GraphTimer {
 public:
  GraphTimer() {
    CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CHECK(cudaDeviceGetAttribute(&l2_, cudaDevAttrL2CacheSize, 0));
    flush_n_ = 4ull * l2_ / sizeof(float4);
    CHECK(cudaMalloc(&flush_buf_, flush_n_ * sizeof(float4)));
    CHECK(cudaMemset(flush_buf_, 0, flush_n_ * sizeof(float4)));
    CHECK(cudaMalloc(&sink_, 4));
    CHECK(cudaEventCreate(&e0_));
    CHECK(cudaEventCreate(&e1_));
  }
  cudaStream_t stream() const { return stream_; }
  int l2_bytes() const { return l2_; }

  /// Median replay time (us) of a graph captured from `body` (kernels launched on stream());
  /// before each replay, outside the events, `before` (if any) and then the L2 flush (if `flush`).
  float median_us(const std::function<void()>& body, bool flush = true, const std::function<void()>& before = {}) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
    body();
    CHECK(cudaStreamEndCapture(stream_, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    std::vector<float> t;
    for (int r = 0; r < 220; ++r) {
      if (before) before();
      if (flush) probe_flush_kernel<<<1056, 512, 0, stream_>>>(flush_buf_, flush_n_, sink_);
      CHECK(cudaEventRecord(e0_, stream_));
      CHECK(cudaGraphLaunch(ge, stream_));
      CHECK(cudaEventRecord(e1_, stream_));
      CHECK(cudaEventSynchronize(e1_));
      float ms;
      CHECK(cudaEventElapsedTime(&ms, e0_, e1_));
      if (r >= 20) t.push_back(ms * 1000.f);
    }
    CHECK(cudaGraphExecDestroy(ge));
    CHECK(cudaGraphDestroy(g));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }

 private:
  cudaStream_t stream_;
  cudaEvent_t e0_, e1_;
  int l2_ = 0;
  size_t flush_n_ = 0;
  float4* flush_buf_ = nullptr;
  float* sink_ = nullptr;
};
