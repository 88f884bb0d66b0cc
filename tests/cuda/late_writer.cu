// tests/cuda/late_writer.cu: a kernel that behaves like an engine's RoPE kernel towards MAC's
// kernels: it lets the kernels after it launch at once (programmatic dependent launch) and writes
// its output only later. The split-scan tests put it between mac_scan and mac_decode to write
// q_post, so an attend kernel that read q_post before waiting would read the poison.
#include <cuda_runtime.h>

#include <cstddef>

#include "late_writer.hpp"

namespace {

__global__ void late_copy_kernel(const unsigned char* src, unsigned char* dst, std::size_t n,
                                 unsigned long long delay_ns) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < delay_ns);
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

}  // namespace

cudaError_t launch_late_copy(const void* src, void* dst, std::size_t bytes, cudaStream_t stream) {
  late_copy_kernel<<<8, 256, 0, stream>>>(static_cast<const unsigned char*>(src), static_cast<unsigned char*>(dst),
                                          bytes, 50'000ull);
  return cudaGetLastError();
}
