// The streaming-read bandwidth kernel (see stream_bandwidth_cuda.hpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "stream_bandwidth_cuda.hpp"

namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("stream bandwidth: ") + what + ": " + cudaGetErrorString(e));
}

__global__ void stream_read(const uint4* p, std::size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;  // keeps the loads
}

}  // namespace

double measure_stream_read_gbps() {
  const std::size_t bytes = std::size_t(4) << 30;
  void* buf = nullptr;
  unsigned* sink = nullptr;
  cudaStream_t s = nullptr;
  cudaEvent_t a = nullptr, b = nullptr;
  int dev = 0, sms = 0;
  ck(cudaGetDevice(&dev), "cudaGetDevice");
  ck(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  ck(cudaMalloc(&buf, bytes), "cudaMalloc 4 GiB");
  ck(cudaMalloc(&sink, 4), "cudaMalloc");
  ck(cudaStreamCreate(&s), "cudaStreamCreate");
  ck(cudaEventCreate(&a), "cudaEventCreate");
  ck(cudaEventCreate(&b), "cudaEventCreate");
  ck(cudaMemsetAsync(buf, 1, bytes, s), "cudaMemsetAsync");
  std::vector<double> gbps;
  for (int i = 0; i < 21; ++i) {
    ck(cudaEventRecord(a, s), "cudaEventRecord");
    stream_read<<<sms * 8, 512, 0, s>>>(static_cast<const uint4*>(buf), bytes / 16, sink);
    ck(cudaGetLastError(), "stream_read launch");
    ck(cudaEventRecord(b, s), "cudaEventRecord");
    ck(cudaEventSynchronize(b), "cudaEventSynchronize");
    float ms = 0;
    ck(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    if (i > 0) gbps.push_back(static_cast<double>(bytes) / (ms * 1e6));
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaStreamDestroy(s);
  cudaFree(buf);
  cudaFree(sink);
  std::sort(gbps.begin(), gbps.end());
  return gbps[gbps.size() / 2];
}
