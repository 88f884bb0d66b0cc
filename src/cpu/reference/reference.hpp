// src/cpu/reference/reference.hpp: the scalar reference backend, the oracle every fast path
// is tested against. Straightforward loops, fp32 accumulation, one (sequence, head) at a
// time. Inputs arrive validated by src/core/dispatch.cpp.
#pragma once

#include <cstdint>
#include <span>

#include "macattn/attention.hpp"

namespace macattn::reference {

void exact_decode(const AttentionShape& shape, const KVCacheView& kv, ConstTensor q_post, Tensor out, float* lse);

void mac_decode(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv, ConstTensor q_post,
                ConstTensor q_pre, std::span<const MacStateView> states, Tensor out, float* lse,
                HeadStats* head_stats, StepStats* step_stats);

void prefill_init(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv, ConstTensor q_post,
                  ConstTensor q_pre, std::span<const std::int32_t> row_indptr, std::span<const MacStateView> states);

}  // namespace macattn::reference
