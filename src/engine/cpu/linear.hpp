// engine/cpu/linear.hpp: y = x W^T (+ bias), the projections of the forward pass.
#pragma once

#include <cstdint>

#include "engine/model.hpp"

namespace macattn::engine::cpu {

/// x: [n, w.cols] fp32 row-major; y: [n, w.rows] fp32 (must not alias x); bias: [w.rows]
/// fp32 or null. W of any dtype; fp32 accumulation. Multithreaded (OpenMP) over output
/// panels; n < 4 takes the matvec path (no packing). Throws macattn::Error on a bad shape.
void linear(const float* x, std::int64_t n, const WeightTensor& w, const float* bias, float* y);

/// The same on one row range of W: outputs [row0, row0 + rows) into y[n, ldy] columns
/// [0, rows). Used for the lm_head of a single position.
void linear_rows(const float* x, std::int64_t n, const WeightTensor& w, std::int64_t row0, std::int64_t rows, float* y,
                 std::int64_t ldy);

}  // namespace macattn::engine::cpu
