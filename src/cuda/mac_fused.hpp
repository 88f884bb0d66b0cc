// src/cuda/mac_fused.hpp: the fused one-kernel MAC decode (mac_fused.cu), as mac_decode()
// and Workspace::reserve() see it. Internal.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "macattn/cuda.hpp"

namespace macattn::cuda::detail {

/// Words of the fused kernel's counters in Workspace::Buffers::sync: kQueueWords queue words,
/// then per group scan_done, group_done, group_state, then per sequence seq_done, then the
/// dynamic queue of old-region splits (capacity_groups * capacity_splits).
constexpr std::size_t kQueueWords = 8;
inline std::size_t sync_words(std::int64_t groups, std::int32_t batch, std::int32_t splits) {
  return kQueueWords + 3 * static_cast<std::size_t>(groups) + static_cast<std::size_t>(batch) +
         static_cast<std::size_t>(groups) * static_cast<std::size_t>(splits);
}

/// Most parts the recent region (the last W candidates' keys) is attended in.
constexpr std::int32_t kMaxRecentParts = 16;

/// Parts of the recent region for a window of W candidates: one per 64 keys, at most 16.
std::int32_t mac_recent_parts(std::int32_t window);

/// Whether mac_decode() runs the fused kernel (environment variable MACATTN_CUDA_MAC=fused;
/// experimental: correct on the device tests, but measured slower than the three-kernel path,
/// docs/benchmarks/h200.md) instead of the three-kernel path (the default).
bool mac_fused_enabled();

/// The fused kernel's launcher; arguments validated by mac_decode().
void launch_mac_fused(const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv,
                      ConstTensor q_post, ConstTensor q_pre, const MacRingsDevice& rings, Tensor out, float* lse,
                      HeadStats* head_stats, Workspace& workspace, cudaStream_t stream);

}  // namespace macattn::cuda::detail
