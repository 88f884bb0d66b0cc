// src/core/ring_row.hpp: reading and writing one ring row (MAC_ATTENTION.md §4), the same way
// in every backend and in prefill as in decode. Internal.
#pragma once

#include <cstddef>

#include "core/convert_rows.hpp"
#include "macattn/mac_state.hpp"

namespace macattn::detail {

/// Row index of (slot, head) in qring/oring ([W, Hq, D]) and lring ([W, Hq]).
inline std::size_t ring_row(const MacStateView& ring, std::int64_t slot, std::size_t head) {
  return static_cast<std::size_t>(slot) * static_cast<std::size_t>(ring.num_q_heads) + head;
}

/// Stores a row: the pre-RoPE query q_pre and the entry state (o, lse), D floats each,
/// rounded to the ring dtype (lse stays fp32).
inline void write_ring_row(const MacStateView& ring, std::size_t row, const float* q_pre, const float* o, float lse) {
  const std::size_t d = static_cast<std::size_t>(ring.head_dim), base = row * d;
  store_row_from_float(ring.qring, ring.ring_dtype, base, q_pre, d);
  store_row_from_float(ring.oring, ring.ring_dtype, base, o, d);
  ring.lring[row] = lse;
}

/// Loads the entry output o of a row (D floats) from the ring dtype.
inline void read_ring_output(const MacStateView& ring, std::size_t row, float* o) {
  const std::size_t d = static_cast<std::size_t>(ring.head_dim);
  load_row_as_float(ring.oring, ring.ring_dtype, row * d, o, d);
}

}  // namespace macattn::detail
