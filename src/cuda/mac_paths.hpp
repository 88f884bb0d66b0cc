// src/cuda/mac_paths.hpp: the MAC decode implementations mac_decode() can run, and which one it
// runs. The default is the two-kernel path (mac_decode.cu); the environment variable
// MACATTN_CUDA_MAC picks an older one for comparison on the device: "three" (mac_three.cu, scan
// + attend + finish kernels) or "fused" (mac_fused.cu, one experimental kernel). Internal.
#pragma once

#include <cuda_runtime.h>

#include "cuda/mac_fused.hpp"
#include "macattn/cuda.hpp"

namespace macattn::cuda::detail {

enum class MacPath { two, three, fused };

/// The path selected by MACATTN_CUDA_MAC (read once; unknown values select the default).
MacPath mac_path();

/// The three-kernel launcher; arguments validated by mac_decode().
void launch_mac_three(const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv, ConstTensor q_post,
                      ConstTensor q_pre, const MacRingsDevice& rings, Tensor out, float* lse, HeadStats* head_stats,
                      Workspace& workspace, cudaStream_t stream);

}  // namespace macattn::cuda::detail
