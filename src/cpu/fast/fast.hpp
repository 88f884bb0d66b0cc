// src/cpu/fast/fast.hpp: the fast CPU backend (SIMD kernels per ISA, OpenMP threads over
// sequences, KV heads and KV chunks). Same contract as src/cpu/reference; inputs arrive
// validated. Shapes the kernels do not specialise (head dim other than 64/128/256) run on
// the reference backend.
#pragma once

#include <span>

#include "macattn/attention.hpp"

namespace macattn::cpu {

void exact_decode(const AttentionShape& shape, const KVCacheView& kv, ConstTensor q_post, Tensor out, float* lse);

void mac_decode(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv, ConstTensor q_post,
                ConstTensor q_pre, std::span<const MacStateView> states, Tensor out, float* lse,
                HeadStats* head_stats, StepStats* step_stats);

void prefill_init(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv, ConstTensor q_post,
                  ConstTensor q_pre, std::span<const std::int32_t> row_indptr, std::span<const MacStateView> states);

}  // namespace macattn::cpu
