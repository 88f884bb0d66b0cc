// src/cpu/fast/kernels.hpp: the per-ISA kernel table of the fast CPU backend. Each ISA's
// translation unit (kernels_avx512bf16.cpp, kernels_avx512.cpp, kernels_avx2.cpp, kernels_portable.cpp) compiles the
// same templates with its own flags and fills one table; isa.cpp picks a table at run time.
#pragma once

#include <cstdint>

#include "macattn/dtype.hpp"
#include "macattn/kv_cache.hpp"

namespace macattn::cpu {

/// Queries of one KV head g, attended over keys [lo, hi): query i only counts keys in
/// [begin[i], end[i]) (others are masked out). The state is updated in place, online-softmax
/// style: m[i] running max score, l[i] = sum exp(s - m), o[i*D..] = sum exp(s - m) * v
/// (unnormalised). Start from m = -inf, l = 0, o = 0.
///   q: [nq, D] fp32 post-RoPE; begin, end, m, l: [nq]; o: [nq, D].
struct AttendGroup {
  std::int32_t g;
  const float* q;
  std::int32_t nq;
  const std::int64_t* begin;
  const std::int64_t* end;
  std::int64_t lo, hi;
  float* m;
  float* l;
  float* o;
};

/// Several KV heads of sequence b over keys [lo, hi). The kernel walks the keys once, in
/// memory order, and for each tile of 16 keys serves every group whose range meets it: each
/// K/V row is read once for all query heads of its group, and the walk over all heads of a
/// token is sequential in memory (a [tokens, kv_heads, D] cache visited one head at a time
/// is a 2 KiB-strided pattern that hardware prefetchers on our dev machine serve at a
/// quarter of streaming bandwidth).
struct AttendArgs {
  const KVCacheView* kv;
  std::int32_t b;
  const AttendGroup* groups;
  std::int32_t num_groups;
  std::int64_t lo, hi;
  float scale;
  /// macattn::CpuProducts::bf16: queries and weights rounded to bf16 in the bf16 dot products
  /// (the avx512bf16 set with bf16 K/V; every other set and dtype ignores it).
  bool bf16_products = false;
};

/// Best ring candidate of each query head in [h0, h1) of one sequence: scans the ring rows of
/// positions [first, t) newest first, with the exact distance of core/distance.hpp, pruning a
/// row once its first dims already exceed the head's best distance (exact: partial sums only
/// grow). A slot's rows of all heads are contiguous, so walking slots with every head inside
/// reads the ring in memory order.
///   qring: row of position p, head h at ((p % W) * Hq + h) * D elements; q_pre: [Hq, D] fp32;
///   out: [Hq], entries h0 .. h1-1 written (position -1, distance +inf if [first, t) is empty).
struct ScanResult {
  std::int64_t position;
  float distance;
};
struct ScanArgs {
  const void* qring;
  DType ring_dtype;
  std::int32_t window, num_q_heads, head_dim;
  std::int32_t h0, h1;
  const float* q_pre;
  std::int64_t first, t;
  /// Rows at distance >= bound are of no interest (never reported): with bound = the match
  /// threshold, rows that cannot be hits stop after the first dims. +inf reports the best row
  /// even when it is no hit (HeadStats wants it).
  float bound;
  ScanResult* out;
};

struct KernelTable {
  const char* isa;
  /// True if the table has a specialised kernel for this dtype and head dim.
  bool (*supports)(DType kv_dtype, std::int32_t head_dim);
  void (*attend)(const AttendArgs& args);
  void (*scan)(const ScanArgs& args);
};

namespace avx512bf16 { const KernelTable& kernel_table(); }
namespace avx512 { const KernelTable& kernel_table(); }
namespace avx2 { const KernelTable& kernel_table(); }
namespace portable { const KernelTable& kernel_table(); }

}  // namespace macattn::cpu
