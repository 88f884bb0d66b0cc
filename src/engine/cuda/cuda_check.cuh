// engine/cuda/cuda_check.cuh (internal): CUDA and cuBLAS return codes as macattn::Error naming
// the call, the file and the line.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "macattn/error.hpp"

namespace macattn::engine::gpu {

inline void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess)
    throw Error(std::string("CUDA engine: ") + call + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) +
                ") at " + file + ":" + std::to_string(line));
}
inline void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("CUDA engine: ") + call + " failed: " + cublasGetStatusName(s) + " (" +
                cublasGetStatusString(s) + ") at " + file + ":" + std::to_string(line));
}

// Launches kernel<<<grid, block, 0, s>>>(args...), with programmatic stream serialization when
// `pdl` (the kernel must wait, griddepcontrol.wait, before it reads what the kernel before it
// wrote). Errors name `name`.
template <typename... KArgs, typename... Args>
void launch_kernel(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, cudaStream_t s, bool pdl,
                   Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = 0;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, static_cast<KArgs>(args)...), name, __FILE__, __LINE__);
}

}  // namespace macattn::engine::gpu

#define ENGINE_CUDA(call) ::macattn::engine::gpu::check_cuda((call), #call, __FILE__, __LINE__)
#define ENGINE_CUBLAS(call) ::macattn::engine::gpu::check_cublas((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad configuration shows up here, not at the next call.
#define ENGINE_LAUNCHED(name) ::macattn::engine::gpu::check_cuda(cudaGetLastError(), name, __FILE__, __LINE__)
