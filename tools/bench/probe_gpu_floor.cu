// tools/bench/probe_gpu_floor.cu: the fixed costs under a MAC all-hit decode step on this GPU,
// measured the way `macattn bench --backend cuda` measures a step (CUDA-graph replay, timed per
// replay with events, L2 flushed outside the events, median of 200):
//   1. a graph of k empty kernels (k = 1..4): launch + per-kernel cost of a graph;
//   2. one thread chasing N dependent pointers through cold memory: one DRAM round trip;
//   3. a full-chip kernel (528 blocks, one cold load each) with and without a last-block epilogue
//      (threadfence + atomic ticket, the last block loads one more cold value), against the same
//      work as two kernels: what a second phase costs inside one kernel and as a second kernel.
// The record behind docs/benchmarks/h200.md's floor paragraph. Not part of the build:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a tools/bench/probe_gpu_floor.cu -o probe && ./probe
#include "probe_graph_timer.cuh"

__global__ void empty_kernel() {}

// One thread follows `steps` links of a chain laid out 64 KiB apart, so every load misses.
__global__ void chase_kernel(const unsigned long long* next, int steps, unsigned long long* sink) {
  unsigned long long i = 0;
  for (int s = 0; s < steps; ++s) i = next[i];
  *sink = i;
}

// Every block loads one cold value and writes it; with `last`, the last block to finish (atomic
// ticket after a fence) loads one more cold value, writes it and resets the counter.
__global__ void phase_kernel(const float* in, float* out, unsigned* counter, bool last) {
  __shared__ bool am_last;
  const float v = in[static_cast<size_t>(blockIdx.x) * 16384 + threadIdx.x];
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
  if (!last) return;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) am_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!am_last) return;
  __threadfence();
  float acc = in[static_cast<size_t>(gridDim.x) * 16384 + threadIdx.x];
  for (int b = 0; b < 4; ++b) acc += out[b * blockDim.x + threadIdx.x];
  out[gridDim.x * blockDim.x + threadIdx.x] = acc;
  if (threadIdx.x == 0) *counter = 0;
}

// The second phase as its own kernel: one block reads the first kernel's outputs and one cold value.
__global__ void second_kernel(const float* in, float* out, int blocks) {
  float acc = in[static_cast<size_t>(blocks) * 16384 + threadIdx.x];
  for (int b = 0; b < 4; ++b) acc += out[b * blockDim.x + threadIdx.x];
  out[blocks * blockDim.x + threadIdx.x] = acc;
}

int main() {
  GraphTimer timer;
  const cudaStream_t s = timer.stream();
  const int l2 = timer.l2_bytes();
  auto time_graph = [&](const std::function<void()>& body, bool flush = true) { return timer.median_us(body, flush); };

  std::printf("probe_gpu_floor: graph replay, events, L2 (%d MiB) flushed before each replay, median of 200\n",
              l2 >> 20);
  for (int k = 1; k <= 4; ++k)
    std::printf("  graph of %d empty kernel(s)            %7.2f us\n", k, time_graph([&] {
                  for (int i = 0; i < k; ++i) empty_kernel<<<1, 32, 0, s>>>();
                }));

  // Pointer chase: 256 links 64 KiB apart (16 MiB span), visited in a scrambled order.
  const int links = 256;
  const size_t stride = 8192;  // in unsigned long long
  std::vector<unsigned long long> host(links * stride, 0);
  std::vector<int> order(links);
  for (int i = 0; i < links; ++i) order[i] = (i * 97) % links;
  for (int i = 0; i < links; ++i) host[order[i] * stride] = order[(i + 1) % links] * stride;
  unsigned long long *chain, *csink;
  CHECK(cudaMalloc(&chain, host.size() * 8));
  CHECK(cudaMemcpy(chain, host.data(), host.size() * 8, cudaMemcpyHostToDevice));
  CHECK(cudaMalloc(&csink, 8));
  float base = 0.f;
  for (int n : {0, 1, 2, 4, 8, 16}) {
    const float us = time_graph([&] { chase_kernel<<<1, 1, 0, s>>>(chain, n, csink); });
    if (n == 0) base = us;
    std::printf("  one kernel, %2d dependent cold loads    %7.2f us  (%.2f us per load)\n", n, us,
                n ? (us - base) / n : 0.f);
  }
  const float warm16 = time_graph([&] { chase_kernel<<<1, 1, 0, s>>>(chain, 16, csink); }, false);
  std::printf("  one kernel, 16 dependent loads, no flush %5.2f us  (%.2f us per load, L2 hits)\n", warm16,
              (warm16 - base) / 16);

  const int blocks = 528, threads = 128;
  float *in, *out;
  unsigned* counter;
  CHECK(cudaMalloc(&in, (blocks + 1) * 16384 * sizeof(float)));
  CHECK(cudaMemset(in, 0, (blocks + 1) * 16384 * sizeof(float)));
  CHECK(cudaMalloc(&out, (blocks + 1) * threads * sizeof(float)));
  CHECK(cudaMalloc(&counter, 4));
  CHECK(cudaMemset(counter, 0, 4));
  const float one = time_graph([&] { phase_kernel<<<blocks, threads, 0, s>>>(in, out, counter, false); });
  const float lastb = time_graph([&] { phase_kernel<<<blocks, threads, 0, s>>>(in, out, counter, true); });
  const float two = time_graph([&] {
    phase_kernel<<<blocks, threads, 0, s>>>(in, out, counter, false);
    second_kernel<<<1, threads, 0, s>>>(in, out, blocks);
  });
  std::printf("  %d blocks, one cold load each          %7.2f us\n", blocks, one);
  std::printf("  ... + last-block phase (fence, ticket)  %7.2f us  (+%.2f)\n", lastb, lastb - one);
  std::printf("  ... + the same phase as a 2nd kernel     %7.2f us  (+%.2f)\n", two, two - one);
  return 0;
}
