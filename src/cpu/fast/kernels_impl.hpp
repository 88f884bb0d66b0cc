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

inline const v16f kLaneIndex = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/// One tile of n <= 16 keys (row pointers k[jj], v[jj] plus head_off) for QB queries from q0.
/// kf is the tile's K widened to fp32 once for all the group's queries: kf[jj * D + i].
template <DType T, int D, int QB>
inline void attend_tile(const AttendGroup& a, float scale, int q0, const float* kf, const unsigned char* const* v,
                        std::size_t head_off, std::int64_t j0, int n) {
  constexpr int C = D / 16;
  // Scores of the 16 keys for each query, as one vector: 16 dot-product accumulators, then
  // one transposing reduction. Keys past n and masked keys get -inf.
  v16f score[QB];
  for (int qi = 0; qi < QB; ++qi) {
    const float* q = a.q + static_cast<std::size_t>(q0 + qi) * D;
    v16f qc[C];
    for (int c = 0; c < C; ++c) qc[c] = load_f32(q + c * 16);
    v16f acc[kTile];
    for (int jj = 0; jj < kTile; jj += 4) {  // four keys' chains interleaved: FMA latency hides
      const float* kr = kf + jj * D;
      v16f x0 = qc[0] * load_f32(kr), x1 = qc[0] * load_f32(kr + D), x2 = qc[0] * load_f32(kr + 2 * D),
           x3 = qc[0] * load_f32(kr + 3 * D);
      for (int c = 1; c < C; ++c) {
        x0 += qc[c] * load_f32(kr + c * 16);
        x1 += qc[c] * load_f32(kr + D + c * 16);
        x2 += qc[c] * load_f32(kr + 2 * D + c * 16);
        x3 += qc[c] * load_f32(kr + 3 * D + c * 16);
      }
      acc[jj] = x0;
      acc[jj + 1] = x1;
      acc[jj + 2] = x2;
      acc[jj + 3] = x3;
    }
    const v16f lo = splat(static_cast<float>(std::max<std::int64_t>(a.begin[q0 + qi] - j0, -1)));
    const v16f hi = splat(static_cast<float>(std::min<std::int64_t>(std::min<std::int64_t>(a.end[q0 + qi] - j0, n), kTile)));
    const v16f sc = reduce_16x16(acc) * scale;
    score[qi] = (kLaneIndex >= lo && kLaneIndex < hi) ? sc : splat(kNegInf);
  }
  // Online softmax: p = exp(s - m_new), and what was accumulated is rescaled by
  // exp(m_old - m_new) (0 when nothing was: m_old = -inf).
  v16f p[QB];
  float alpha[QB];
  bool any = false;
  for (int qi = 0; qi < QB; ++qi) {
    const int q = q0 + qi;
    const float mt = hmax(score[qi]);
    if (mt == kNegInf) {  // nothing visible to this query in the tile
      p[qi] = splat(0.0f);
      alpha[qi] = 1.0f;
      continue;
    }
    any = true;
    const float m_new = a.m[q] > mt ? a.m[q] : mt;
    alpha[qi] = exp_nonpositive(splat(a.m[q] - m_new))[0];
    const v16f pv = exp_nonpositive(score[qi] - splat(m_new));
    p[qi] = pv;
    a.l[q] = a.l[q] * alpha[qi] + hsum(pv);
    a.m[q] = m_new;
  }
  if (!any) return;
  // P * V: the head dim in blocks of CB 16-wide chunks, the QB * CB output chunks of the block
  // in registers while the tile's keys stream by (each V row read in whole cache lines; the
  // weights broadcast once per key and block).
  constexpr int CB = QB >= 8 ? 2 : QB >= 4 ? 4 : (C < 8 ? C : 8);
  for (int c0 = 0; c0 < C; c0 += CB) {
    v16f oc[QB][CB];
    for (int qi = 0; qi < QB; ++qi)
      for (int cb = 0; cb < CB; ++cb)
        oc[qi][cb] = load_f32(a.o + static_cast<std::size_t>(q0 + qi) * D + (c0 + cb) * 16) * alpha[qi];
    for (int jj = 0; jj < n; ++jj) {
      v16f w[QB];
      for (int qi = 0; qi < QB; ++qi) w[qi] = lane_broadcast(p[qi], jj);
      for (int cb = 0; cb < CB; ++cb) {
        const v16f vc = load16<T>(v[jj] + head_off, (c0 + cb) * 16);
        for (int qi = 0; qi < QB; ++qi) oc[qi][cb] += w[qi] * vc;
      }
    }
    for (int qi = 0; qi < QB; ++qi)
      for (int cb = 0; cb < CB; ++cb)
        store_f32(a.o + static_cast<std::size_t>(q0 + qi) * D + (c0 + cb) * 16, oc[qi][cb]);
  }
}

template <DType T, int D>
void attend_impl(const AttendArgs& a) {
  const RowLocator rows(*a.kv, a.b);
  const unsigned char* k[kTile];
  const unsigned char* v[kTile];
  alignas(64) float kf[kTile * D];
  constexpr std::size_t kRowBytes = static_cast<std::size_t>(D) * (T == DType::f32 ? 4 : 2);
  for (std::int64_t j0 = a.lo; j0 < a.hi; j0 += kTile) {
    const int n = static_cast<int>(std::min<std::int64_t>(kTile, a.hi - j0));
    for (int jj = 0; jj < n; ++jj) {
      k[jj] = rows.k(j0 + jj);
      v[jj] = rows.v(j0 + jj);
    }
    // Ask for the next tile's rows now (into L2): they arrive while this tile computes. The
    // hardware prefetchers alone leave a [tokens, heads, D] walk latency-bound here.
    const std::int64_t next_end = std::min(a.hi, j0 + 2 * kTile);
    for (std::int64_t j = j0 + kTile; j < next_end; ++j) {
      const unsigned char* kn = rows.k(j);
      const unsigned char* vn = rows.v(j);
      for (std::int32_t gi = 0; gi < a.num_groups; ++gi) {
        const std::size_t off = static_cast<std::size_t>(a.groups[gi].g) * rows.head_bytes();
        for (std::size_t line = 0; line < kRowBytes; line += 64) {
          __builtin_prefetch(kn + off + line, 0, 2);
          __builtin_prefetch(vn + off + line, 0, 2);
        }
      }
    }
    for (std::int32_t gi = 0; gi < a.num_groups; ++gi) {
      const AttendGroup& grp = a.groups[gi];
      if (j0 + n <= grp.lo || j0 >= grp.hi) continue;
      const std::size_t off = static_cast<std::size_t>(grp.g) * rows.head_bytes();
      for (int jj = 0; jj < kTile; ++jj)
        for (int c = 0; c < D / 16; ++c) store_f32(kf + jj * D + c * 16, jj < n ? load16<T>(k[jj] + off, c * 16) : splat(0.0f));
      int q0 = 0;
      for (; q0 + 8 <= grp.nq; q0 += 8) attend_tile<T, D, 8>(grp, a.scale, q0, kf, v, off, j0, n);
      if (q0 + 4 <= grp.nq) { attend_tile<T, D, 4>(grp, a.scale, q0, kf, v, off, j0, n); q0 += 4; }
      if (q0 + 2 <= grp.nq) { attend_tile<T, D, 2>(grp, a.scale, q0, kf, v, off, j0, n); q0 += 2; }
      if (q0 < grp.nq) attend_tile<T, D, 1>(grp, a.scale, q0, kf, v, off, j0, n);
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
