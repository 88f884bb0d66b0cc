// src/cpu/fast/queries.hpp: query rows widened to fp32 once per call, and outputs narrowed
// back. Internal.
#pragma once

#include <cstddef>
#include <vector>

#include "macattn/attention.hpp"

namespace macattn::cpu {

/// rows*Hq*D elements of t as fp32.
inline std::vector<float> widen(ConstTensor t, std::size_t elems) {
  std::vector<float> out(elems);
  for (std::size_t i = 0; i < elems; ++i) out[i] = load_as_float(t.data, t.dtype, i);
  return out;
}

/// Writes n floats at element offset `at` of t.
inline void narrow(Tensor t, std::size_t at, const float* src, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) store_from_float(t.data, t.dtype, at + i, src[i]);
}

}  // namespace macattn::cpu
