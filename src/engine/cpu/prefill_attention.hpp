// engine/cpu/prefill_attention.hpp: exact causal attention for a chunk of prompt rows
// against a K/V cache that already holds them (blocked, online softmax, fp32).
//
// The library's entry points are decode-shaped (one query row per sequence); a prefill
// chunk has many rows that share the same keys, so it is computed here as blocked
// matrix products: per KV head, a block of query rows of all its GQA heads against
// blocks of keys, so each K/V block is read once per block of queries.
#pragma once

#include <cstdint>

#include "macattn/config.hpp"
#include "macattn/kv_cache.hpp"

namespace macattn::engine::cpu {

/// q: [n, Hq, D] fp32 post-RoPE queries of positions [p0, p0 + n) of sequence 0 of `kv`,
/// where kv.seq_len(0) == p0 + n. out: [n, Hq, D] fp32. Row i attends keys [0, p0 + i]
/// with scale shape.scale(). Threads over (KV head, query block). Throws macattn::Error on
/// inconsistent arguments.
void prefill_attention(const AttentionShape& shape, const KVCacheView& kv, std::int64_t p0, std::int64_t n,
                       const float* q, float* out);

/// The same, one row and one key at a time, in double: the independent reference for tests.
void prefill_attention_reference(const AttentionShape& shape, const KVCacheView& kv, std::int64_t p0, std::int64_t n,
                                 const float* q, float* out);

}  // namespace macattn::engine::cpu
