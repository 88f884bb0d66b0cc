// src/cpu/fast/queries.hpp: query rows widened to fp32 once per call, and outputs narrowed
// back. Internal.
#pragma once

#include <cstddef>
#include <vector>

#include "core/convert_rows.hpp"
#include "macattn/attention.hpp"

namespace macattn::cpu {

/// rows*Hq*D elements of t as fp32.
inline std::vector<float> widen(ConstTensor t, std::size_t elems) {
  std::vector<float> out(elems);
  detail::load_row_as_float(t.data, t.dtype, 0, out.data(), elems);
  return out;
}

/// Writes n floats at element offset `at` of t.
inline void narrow(Tensor t, std::size_t at, const float* src, std::size_t n) {
  detail::store_row_from_float(t.data, t.dtype, at, src, n);
}

}  // namespace macattn::cpu
