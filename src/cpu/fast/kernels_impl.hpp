// src/cpu/fast/kernels_impl.hpp: the fast CPU kernels, written once and compiled per ISA
// (the including file defines MACATTN_ISA_NS). Internal.
//
// attend: keys are processed in tiles of 16. For each tile: scores of every query against
// every key (K row widened to fp32 once, reused by all queries of the KV head: the GQA
// saving), online-softmax update, then P*V with the output chunk of all queries in registers.
// scan: ring rows newest first; after the first chunks the partial distance is a lower bound,
// so most rows stop after 32 dims once a close candidate is known.
#include <cmath>
#include <limits>

#include "cpu/fast/kernels.hpp"
#include "cpu/fast/rows.hpp"
#include "cpu/fast/simd.hpp"

namespace macattn::cpu::MACATTN_ISA_NS {

namespace {

constexpr int kTile = 16;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

/// One tile of up to 16 keys (rows k, v with stride) for QB queries starting at query q0.
template <DType T, int D, int QB>
inline void attend_tile(const AttendGroup& a, float scale, int q0, const unsigned char* const* k,
                        const unsigned char* const* v, std::size_t head_off, std::int64_t j0, int n) {
  constexpr int C = D / 16;
  alignas(64) float s[QB][kTile];
  // Scores. Keys past n and masked keys get -inf.
  for (int jj = 0; jj < n; ++jj) {
    v16f kc[C];
    const unsigned char* krow = k[jj] + head_off;
    for (int c = 0; c < C; ++c) kc[c] = load16<T>(krow, c * 16);
    for (int qi = 0; qi < QB; ++qi) {
      const float* q = a.q + static_cast<std::size_t>(q0 + qi) * D;
      v16f acc = load_f32(q) * kc[0];
      for (int c = 1; c < C; ++c) acc += load_f32(q + c * 16) * kc[c];
      s[qi][jj] = hsum(acc) * scale;
    }
  }
  for (int qi = 0; qi < QB; ++qi) {
    const std::int64_t lo = a.begin[q0 + qi] - j0, hi = a.end[q0 + qi] - j0;
    for (int jj = 0; jj < kTile; ++jj)
      if (jj >= n || jj < lo || jj >= hi) s[qi][jj] = kNegInf;
  }
  // Online softmax: p = exp(s - m_new), rescale what was accumulated by exp(m_old - m_new).
  alignas(64) float p[QB][kTile];
  float alpha[QB];
  bool any = false;
  for (int qi = 0; qi < QB; ++qi) {
    const int q = q0 + qi;
    const v16f sv = load_f32(s[qi]);
    const float mt = hmax(sv);
    if (mt == kNegInf) {  // nothing visible to this query in the tile
      store_f32(p[qi], splat(0.0f));
      alpha[qi] = 1.0f;
      continue;
    }
    any = true;
    const float m_new = a.m[q] > mt ? a.m[q] : mt;
    alpha[qi] = a.m[q] == kNegInf ? 0.0f : std::exp(a.m[q] - m_new);
    const v16f pv = exp_nonpositive(sv - splat(m_new));
    store_f32(p[qi], pv);
    a.l[q] = a.l[q] * alpha[qi] + hsum(pv);
    a.m[q] = m_new;
  }
  if (!any) return;
  // P * V, one 16-wide chunk of the head dim at a time for all QB queries.
  for (int c = 0; c < C; ++c) {
    v16f oc[QB];
    for (int qi = 0; qi < QB; ++qi) oc[qi] = load_f32(a.o + static_cast<std::size_t>(q0 + qi) * D + c * 16) * alpha[qi];
    for (int jj = 0; jj < n; ++jj) {
      const v16f vc = load16<T>(v[jj] + head_off, c * 16);
      for (int qi = 0; qi < QB; ++qi) oc[qi] += p[qi][jj] * vc;
    }
    for (int qi = 0; qi < QB; ++qi) store_f32(a.o + static_cast<std::size_t>(q0 + qi) * D + c * 16, oc[qi]);
  }
}

template <DType T, int D>
void attend_impl(const AttendArgs& a) {
  const RowLocator rows(*a.kv, a.b);
  const unsigned char* k[kTile];
  const unsigned char* v[kTile];
  for (std::int64_t j0 = a.lo; j0 < a.hi; j0 += kTile) {
    const int n = static_cast<int>(std::min<std::int64_t>(kTile, a.hi - j0));
    for (int jj = 0; jj < n; ++jj) {
      k[jj] = rows.k(j0 + jj);
      v[jj] = rows.v(j0 + jj);
    }
    for (std::int32_t gi = 0; gi < a.num_groups; ++gi) {
      const AttendGroup& grp = a.groups[gi];
      if (j0 + n <= grp.lo || j0 >= grp.hi) continue;
      const std::size_t off = static_cast<std::size_t>(grp.g) * rows.head_bytes();
      int q0 = 0;
      for (; q0 + 8 <= grp.nq; q0 += 8) attend_tile<T, D, 8>(grp, a.scale, q0, k, v, off, j0, n);
      if (q0 + 4 <= grp.nq) { attend_tile<T, D, 4>(grp, a.scale, q0, k, v, off, j0, n); q0 += 4; }
      if (q0 + 2 <= grp.nq) { attend_tile<T, D, 2>(grp, a.scale, q0, k, v, off, j0, n); q0 += 2; }
      if (q0 < grp.nq) attend_tile<T, D, 1>(grp, a.scale, q0, k, v, off, j0, n);
    }
  }
}

template <DType T>
void attend_dtype(const AttendArgs& a) {
  switch (a.kv->head_dim()) {
    case 64: return attend_impl<T, 64>(a);
    case 128: return attend_impl<T, 128>(a);
    case 256: return attend_impl<T, 256>(a);
    default: return;  // unreachable: supports() said no and the caller used the reference
  }
}

void attend(const AttendArgs& a) {
  switch (a.kv->dtype()) {
    case DType::f32: return attend_dtype<DType::f32>(a);
    case DType::f16: return attend_dtype<DType::f16>(a);
    case DType::bf16: return attend_dtype<DType::bf16>(a);
  }
}

template <DType R, int D>
ScanResult scan_impl(const ScanArgs& a) {
  constexpr int C = D / 16;
  constexpr int kPruneChunks = C >= 4 ? 2 : 1;  // 32 dims (16 for D = 64) before the first bound
  v16f q[C];
  for (int c = 0; c < C; ++c) q[c] = load_f32(a.q_pre + c * 16);
  ScanResult best{-1, std::numeric_limits<float>::infinity()};
  const std::size_t row_elems = static_cast<std::size_t>(a.num_q_heads) * D;
  const std::size_t esize = R == DType::f32 ? 4 : 2;
  for (std::int64_t p = a.t - 1; p >= a.first; --p) {
    const auto* row = static_cast<const unsigned char*>(a.qring) +
                      ((static_cast<std::size_t>(p % a.window)) * row_elems + static_cast<std::size_t>(a.head) * D) * esize;
    v16f lanes = splat(0.0f);
    for (int c = 0; c < kPruneChunks; ++c) {
      const v16f diff = q[c] - load16<R>(row, c * 16);
      lanes = fma16(diff, diff, lanes);
    }
    if (hsum(lanes) > best.distance) continue;  // lower bound already worse: cannot win
    for (int c = kPruneChunks; c < C; ++c) {
      const v16f diff = q[c] - load16<R>(row, c * 16);
      lanes = fma16(diff, diff, lanes);
    }
    const float d = hsum(lanes);
    if (d <= best.distance) best = {p, d};  // newest first, so '<=' keeps the oldest of equals
  }
  return best;
}

template <DType R>
ScanResult scan_dtype(const ScanArgs& a) {
  switch (a.head_dim) {
    case 64: return scan_impl<R, 64>(a);
    case 128: return scan_impl<R, 128>(a);
    case 256: return scan_impl<R, 256>(a);
    default: return {-1, std::numeric_limits<float>::infinity()};  // unreachable (supports())
  }
}

ScanResult scan(const ScanArgs& a) {
  switch (a.ring_dtype) {
    case DType::f32: return scan_dtype<DType::f32>(a);
    case DType::f16: return scan_dtype<DType::f16>(a);
    case DType::bf16: return scan_dtype<DType::bf16>(a);
  }
  return {-1, std::numeric_limits<float>::infinity()};
}

bool supports(DType, std::int32_t head_dim) { return head_dim == 64 || head_dim == 128 || head_dim == 256; }

}  // namespace

const KernelTable& kernel_table() {
  static const KernelTable table{MACATTN_ISA_NAME, supports, attend, scan};
  return table;
}

}  // namespace macattn::cpu::MACATTN_ISA_NS
