// tools/bench/probe_read_paths.cu: how fast this GPU reads K/V-shaped data through each load
// path, to tell whether a different copy mechanism in the attention core could read faster than
// its cp.async pipeline does (cuDNN SDPA reads K/V at batch 16 about 3% faster than our exact
// decode, and faster than the bench's streaming-read kernel; h200.md).
//
// Every variant reads the same 4 GiB (K and V, 2 GiB each, as rows of 256 bytes: 128 bf16 dims):
//   ldcs        the bench's streaming-read kernel (16-byte __ldcs loads, grid-stride);
//   ldg4        four independent 16-byte loads per thread per iteration;
//   cpasync     the attention core's pipeline: 128-thread blocks, each streaming a span of keys of one
//               head through S shared-memory stages of 64 keys (K and V rows, 32 KiB a stage) with
//               16-byte cp.async, S-1 stages in flight while a stage is "consumed";
//   bulk        the same pipeline with Hopper's bulk copies (cp.async.bulk + mbarrier): one warp
//               issues one copy per 256-byte row (paged layouts) or one per contiguous run;
// over two layouts: "nhd" (rows [token][8 heads], a head's rows 2 KiB apart: the paged cache at
// any page size, in order) and "hnd" (each head's rows contiguous: the dense tensor SDPA reads).
// Blocks = 8 heads x splits, the splits chosen so the grid is `per_sm` blocks per SM.
// Timed with events, median of 15, after 3 warm-up runs; 4 GiB is 70x the L2.
// Not part of the build:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a tools/bench/probe_read_paths.cu -o probe_read && ./probe_read
#include <vector>

#include "probe_graph_timer.cuh"  // CHECK

constexpr int kHeads = 8;
constexpr int kRowBytes = 256;
constexpr int kTileKeys = 64;
constexpr int kThreads = 128;

__global__ void ldcs_kernel(const uint4* p, std::size_t n, unsigned* sink) {
  unsigned acc = 0;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n; i += std::size_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

__global__ void ldg4_kernel(const uint4* p, std::size_t n, unsigned* sink) {
  unsigned acc = 0;
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = __ldcs(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < 4; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

// Byte offset of (token, head)'s row.
__device__ __forceinline__ std::size_t row_at(bool hnd, long long tokens, long long t, int h) {
  return hnd ? (std::size_t(h) * tokens + t) * kRowBytes : (std::size_t(t) * kHeads + h) * kRowBytes;
}

__device__ __forceinline__ void cp16(unsigned smem, const void* g) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem), "l"(g));
}
__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Block (split, head) reads keys [t0, t1) of its head: S stages of 64 K rows + 64 V rows.
template <int S>
__global__ void cpasync_kernel(const char* k, const char* v, long long tokens, int splits, bool hnd, unsigned* sink) {
  extern __shared__ __align__(128) unsigned char smem[];
  const int h = blockIdx.x % kHeads, split = blockIdx.x / kHeads;
  const long long per = (tokens + splits - 1) / splits;
  const long long t0 = split * per, t1 = min(tokens, t0 + per);
  const int n_tiles = static_cast<int>((t1 - t0 + kTileKeys - 1) / kTileKeys);
  const unsigned base = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  constexpr int kStage = 2 * kTileKeys * kRowBytes;
  auto issue = [&](int tile) {
    const unsigned st = base + (tile % S) * kStage;
#pragma unroll
    for (int i = 0; i < kTileKeys * kRowBytes / 16 / kThreads; ++i) {
      const int idx = threadIdx.x + i * kThreads;
      const int r = idx / (kRowBytes / 16), c = idx % (kRowBytes / 16);
      const long long t = min(t1 - 1, t0 + tile * kTileKeys + r);
      const std::size_t off = row_at(hnd, tokens, t, h) + c * 16;
      cp16(st + r * kRowBytes + c * 16, k + off);
      cp16(st + kTileKeys * kRowBytes + r * kRowBytes + c * 16, v + off);
    }
  };
  unsigned acc = 0;
  for (int s = 0; s < S - 1; ++s) {
    if (s < n_tiles) issue(s);
    commit();
  }
  for (int tile = 0; tile < n_tiles; ++tile) {
    wait_group<S - 2>();
    __syncthreads();
    if (tile + S - 1 < n_tiles) issue(tile + S - 1);
    commit();
    acc ^= reinterpret_cast<const unsigned*>(smem + (tile % S) * kStage)[threadIdx.x * 7];
  }
  if (acc == 0x12345678u) *sink = acc;
}

__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes));
}
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
  asm volatile(
      "{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W;\n}\n" ::"r"(bar),
      "r"(parity));
}
__device__ __forceinline__ void bulk(unsigned dst, const void* src, unsigned bytes, unsigned bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}

// The same pipeline through bulk copies issued by warp 0 (one per row, or one per contiguous run
// of K and of V where the layout is hnd).
template <int S>
__global__ void bulk_kernel(const char* k, const char* v, long long tokens, int splits, bool hnd, unsigned* sink) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(8) unsigned long long bars[S];
  const int h = blockIdx.x % kHeads, split = blockIdx.x / kHeads;
  const long long per = (tokens + splits - 1) / splits;
  const long long t0 = split * per, t1 = min(tokens, t0 + per);
  const int n_tiles = static_cast<int>((t1 - t0 + kTileKeys - 1) / kTileKeys);
  const unsigned base = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const unsigned bar0 = static_cast<unsigned>(__cvta_generic_to_shared(bars));
  constexpr int kStage = 2 * kTileKeys * kRowBytes;
  if (threadIdx.x == 0)
    for (int s = 0; s < S; ++s) mbar_init(bar0 + 8 * s, 1);
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::);
  __syncthreads();
  const int lane = threadIdx.x & 31;
  auto issue = [&](int tile) {  // warp 0 only
    const unsigned st = base + (tile % S) * kStage, bar = bar0 + 8 * (tile % S);
    const long long first = t0 + tile * kTileKeys;
    const int rows = static_cast<int>(min(static_cast<long long>(kTileKeys), t1 - first));
    if (lane == 0) mbar_expect(bar, 2u * rows * kRowBytes);
    __syncwarp();
    if (hnd) {
      if (lane == 0) bulk(st, k + row_at(true, tokens, first, h), rows * kRowBytes, bar);
      if (lane == 1) bulk(st + kTileKeys * kRowBytes, v + row_at(true, tokens, first, h), rows * kRowBytes, bar);
    } else {
      for (int r = lane; r < rows; r += 32) {
        const std::size_t off = row_at(false, tokens, first + r, h);
        bulk(st + r * kRowBytes, k + off, kRowBytes, bar);
        bulk(st + kTileKeys * kRowBytes + r * kRowBytes, v + off, kRowBytes, bar);
      }
    }
  };
  unsigned acc = 0;
  if (threadIdx.x < 32)
    for (int s = 0; s < S - 1 && s < n_tiles; ++s) issue(s);
  for (int tile = 0; tile < n_tiles; ++tile) {
    mbar_wait(bar0 + 8 * (tile % S), (tile / S) & 1);
    acc ^= reinterpret_cast<const unsigned*>(smem + (tile % S) * kStage)[threadIdx.x * 7];
    __syncthreads();  // every thread is done with the stage the next issue overwrites
    if (threadIdx.x < 32 && tile + S - 1 < n_tiles) {
      asm volatile("fence.proxy.async.shared::cta;\n" ::);
      issue(tile + S - 1);
    }
  }
  if (acc == 0x12345678u) *sink = acc;
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 15;
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  const std::size_t half = std::size_t(2) << 30;  // K and V, 2 GiB each
  const long long tokens = static_cast<long long>(half / (kHeads * kRowBytes));
  char* buf = nullptr;
  unsigned* sink = nullptr;
  CHECK(cudaMalloc(&buf, 2 * half));
  CHECK(cudaMalloc(&sink, 4));
  CHECK(cudaMemset(buf, 1, 2 * half));
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  auto time_gbps = [&](auto&& launch) {
    for (int i = 0; i < 3; ++i) launch();
    CHECK(cudaGetLastError());
    std::vector<float> ms;
    for (int i = 0; i < reps; ++i) {
      CHECK(cudaEventRecord(a));
      launch();
      CHECK(cudaEventRecord(b));
      CHECK(cudaEventSynchronize(b));
      float t = 0;
      CHECK(cudaEventElapsedTime(&t, a, b));
      ms.push_back(t);
    }
    CHECK(cudaGetLastError());
    std::sort(ms.begin(), ms.end());
    return 2.0 * half / (ms[ms.size() / 2] * 1e-3) / 1e9;
  };
  std::printf("probe_read_paths: %s, %d SMs, 4 GiB read per run, median of %d\n", prop.name, sms, reps);
  std::printf("%-34s %10s\n", "variant", "GB/s");
  for (int per_sm : {4, 8})
    std::printf("ldcs grid %dx%d x512%*s %10.0f\n", sms, per_sm, 14, "", time_gbps([&] {
                  ldcs_kernel<<<sms * per_sm, 512>>>(reinterpret_cast<const uint4*>(buf), 2 * half / 16, sink);
                }));
  std::printf("ldg4 grid %dx4 x512%*s %10.0f\n", sms, 14, "", time_gbps([&] {
                ldg4_kernel<<<sms * 4, 512>>>(reinterpret_cast<const uint4*>(buf), 2 * half / 16, sink);
              }));
  constexpr int kStage = 2 * kTileKeys * kRowBytes;
  auto run_pipe = [&](const char* kind, auto kernel, int stages, int per_sm, bool hnd) {
    const int bytes = stages * kStage;
    CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    const int splits = std::max(1, sms * per_sm / kHeads);
    const double g = time_gbps([&] {
      kernel<<<splits * kHeads, kThreads, bytes>>>(buf, buf + half, tokens, splits, hnd, sink);
    });
    std::printf("%-7s S=%d %d/SM (%4d blocks) %s %9.0f\n", kind, stages, per_sm, splits * kHeads, hnd ? "hnd" : "nhd", g);
  };
  for (bool hnd : {false, true}) {
    run_pipe("cpasync", cpasync_kernel<2>, 2, 3, hnd);
    run_pipe("cpasync", cpasync_kernel<3>, 3, 2, hnd);
    run_pipe("cpasync", cpasync_kernel<4>, 4, 1, hnd);
    run_pipe("bulk", bulk_kernel<2>, 2, 3, hnd);
    run_pipe("bulk", bulk_kernel<3>, 3, 2, hnd);
    run_pipe("bulk", bulk_kernel<4>, 4, 1, hnd);
  }
  CHECK(cudaFree(buf));
  return 0;
}
