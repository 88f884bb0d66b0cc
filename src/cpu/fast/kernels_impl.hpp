// src/cpu/fast/kernels_impl.hpp: the fast CPU kernels, written once and compiled per ISA
// (the including file defines MACATTN_ISA_NS). Internal.
//
// attend: keys in tiles of 16, every KV head of a tile before the next tile (memory order).
// Per (tile, KV head): scores of all the head's queries (each K chunk widened once in
// registers and shared by the queries: the GQA saving), one transposing reduction per query,
// online softmax, then P*V with a block of output chunks in registers.
// scan: ring slots newest first, the rows of 16 heads summed over their first 64 dims together;
// that partial distance is a lower bound, so only rows under the threshold are read further.
//
// History (dev machine: 2-core AMD EPYC VM, family 25 model 17, i.e. Zen 4, not Zen 5 as first
// noted; Llama-3.1-8B shape, bf16, exact decode at 128K; one thread / two threads, GB/s of K/V;
// streaming read is about 20 / 33 GB/s as first measured, with 16-byte loads):
//   v1 one task per (sequence, KV head), 16 horizontal sums per tile     1.3 / 1.0 (2 KiB-strided
//      rows; measured while builds shared the machine)
//   v2 tasks per (sequence, key chunk) over all KV heads, rows by position  4.0 / 8.0
//   v3 transposing reduction, interleaved chains, next-tile prefetch     5.9 / 12.8
//   v4 K widened in registers (no fp32 copy of the tile), alpha skipped when the max holds,
//      prefetch two tiles ahead spread over the heads                    8.5 / 15.3
// In cache one thread reaches about 15 GB/s (about 32 ns per key and KV head): P*V and Q.K are
// 64 zmm FMAs per key and head, and this core sustains about one zmm FMA per cycle, so the
// kernel is compute-bound in cache and twice slower still from DRAM. See docs/benchmarks/cpu.md.
//   v5 avx512bf16 kernel set (bf16 K/V only; default where AVX512_BF16 exists): vdpbf16ps for
//      Q.K (K as stored) and P*V (key pairs interleaved with unpacklo/hi, weight pairs
//      broadcast from L1, outputs in unpack order during a call). Predicted: 32 -> ~16 ns per
//      key and head in cache with queries and weights rounded to bf16 (half the multiplies).
//      Measured (1 thread, 1K keys in cache, same session; avx512 34.7 ns): one bf16 term each
//      25.5 ns, but 2e-3 relative L2 / 4e-3 LSE off fp32, which the tests and the benchmark's
//      1e-3 check reject; two terms each (kept) 34.5 ns for fp32 queries, 29.9 ns for queries
//      that are bf16 values (second query term skipped). This core issues one vdpbf16ps per
//      cycle (latency ~9 cycles), like one zmm FMA, so with two terms the multiplies cost what
//      the FMAs did; about 17 ns per key and head is the score reduction, online softmax,
//      output reload and prefetch. From DRAM (1 thread, 32K, machine loaded to 3.5) it is the
//      faster set: 61-68 -> 54-56 ns per key and head (fewer instructions in flight besides
//      the misses).
//   v6 the lines two tiles ahead requested spread through the tile's own loads, not in one
//      burst per KV head (the burst stalled issue until the lines landed: DRAM time was the
//      in-cache time plus the walk's, no overlap). Two threads, 32K / 128K: 17-18 -> 23-26 GB/s
//      of K/V (avx512 set too); in cache 25-30 GB/s, so the arithmetic is the bound now.
//   v7 the softmax's l kept per query as 16 lanes (summed once per call, not per tile) and the
//      weights taken against the running max without a horizontal max when no score of the
//      tile is above it: 28.1 -> 27.0 ns per key and head in L3 (1 thread, scratch harness,
//      three interleaved pairs). From DRAM on huge pages (2 threads) 30-31 GB/s either way,
//      with streaming read at 34-35 GB/s then: the host was busy and memory the bound. With
//      fp32-exact products (two bf16 terms) the multiplies alone cost 64 cycles per key and
//      head (one vdpbf16ps or FMA per cycle, shared pipes: measured), which caps two cores at
//      about 57 GB/s; a quiet host streams 57-65 GB/s.
//   v8 each 4 keys' score accumulators reduced (the first two rounds of the transposing
//      reduction) while in registers: a tile stores 4 vectors per query instead of 16 (and
//      reloads them): 26.5-27.7 -> 25.6 ns per key and head with fp32 products, 20.8-21.6 ->
//      18.5-18.8 with bf16 products (L3, 1 thread, four interleaved pairs each).
//   v9 AVX2 (no AVX-512): the tile, exp and the scan's first 64 dims on explicit 8-float halves
//      (avx2::attend_tile, exp_nonpositive8, avx2::row_sums16): GCC had moved the two-register
//      v16f values through the stack and 64-bit GPRs. 233 -> 45-47 ns per key and head in L3
//      (1 thread, probe_attend_kernel built with -mavx2 -mfma -mf16c); `macattn bench`, 2
//      threads, avx2: exact 4.0-4.2 -> 17-20 GB/s at 8K-128K, MAC all-hit 1.36-1.41 -> 0.23-0.25
//      ms. The scan's partial distances stay bit-identical to the reference (same lane order).
//   v10 AVX2: the tile's masked scores and online softmax on halves too (avx2::softmax_tile):
//      45-46 -> 31-32 ns per key and head in L3 (same probe); exact 17-20 -> 20-25 GB/s.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/fast/kernels.hpp"
#include "cpu/fast/rows.hpp"
#include "cpu/fast/simd.hpp"

namespace macattn::cpu::MACATTN_ISA_NS {

namespace {

constexpr int kTile = 16;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline const v16f kLaneIndex = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/// Zero bytes that stand in for the rows of keys past the end of a partial tile (their
/// scores are masked to -inf; the row only has to be readable).
alignas(64) inline const unsigned char kZeroRow[1024] = {};

/// The first rounds of reduce_16x16 over KS (2 or 4) keys' accumulators, in registers.
template <int KS, typename V>
inline v16f reduce_keys(const V* x) {
  v16f a[KS];
  for (int i = 0; i < KS; ++i) std::memcpy(&a[i], &x[i], 64);
  if constexpr (KS == 4) return reduce_quarter(a);
  else return reduce_pair(a[0], a[1]);
}
/// The remaining rounds: the 16 keys' sums (lane = key) from 16 / KS reduce_keys results.
template <int KS>
inline v16f reduce_tile(const v16f* part) {
  if constexpr (KS == 4) return reduce_quarters(part);
  else {
    const v16f s[4] = {reduce_pairs(part[0], part[1]), reduce_pairs(part[2], part[3]), reduce_pairs(part[4], part[5]),
                       reduce_pairs(part[6], part[7])};
    return reduce_quarters(s);
  }
}

/// Scores of a tile of n keys from j0 for QB queries from q0, from each query's 16 dot products
/// (sums[qi], lane = key); keys past n and keys outside a query's [begin, end) get -inf.
template <int QB>
inline void masked_scores(const AttendGroup& a, float scale, int q0, std::int64_t j0, int n, const v16f* sums,
                          v16f* score) {
  for (int qi = 0; qi < QB; ++qi) {
    const v16f lo = splat(static_cast<float>(std::max<std::int64_t>(a.begin[q0 + qi] - j0, -1)));
    const v16f hi = splat(static_cast<float>(std::min<std::int64_t>(std::min<std::int64_t>(a.end[q0 + qi] - j0, n), kTile)));
    const v16f sc = sums[qi] * scale;
    score[qi] = (kLaneIndex >= lo && kLaneIndex < hi) ? sc : splat(kNegInf);
  }
}

/// Online softmax over one tile for QB queries: p = exp(s - m_new), and what was accumulated
/// is rescaled by alpha = exp(m_old - m_new) (0 when nothing was: m_old = -inf). Updates m and
/// lsum (per query, 16 lanes whose sum is l: summed once per call, not once per tile); false
/// when no query sees any key of the tile.
template <int QB>
inline bool online_softmax(const AttendGroup& a, int q0, const v16f* score, v16f* p, float* alpha, v16f* lsum) {
  bool any = false;
  for (int qi = 0; qi < QB; ++qi) {
    const int q = q0 + qi;
    const float m_old = a.m[q];
    // The running max rarely moves after the first tiles: then the weights are taken against
    // it straight away (no horizontal max on the way to the exponentials, nothing to rescale).
    if (m_old != kNegInf && !any_above(score[qi], m_old)) {
      p[qi] = exp_nonpositive(score[qi] - splat(m_old));  // masked keys: exp(-inf) = 0
      alpha[qi] = 1.0f;
      lsum[qi] += p[qi];
      any = true;
      continue;
    }
    const float mt = hmax(score[qi]);
    if (mt == kNegInf) {  // nothing visible to this query in the tile
      p[qi] = splat(0.0f);
      alpha[qi] = 1.0f;
      continue;
    }
    any = true;
    const float m_new = m_old > mt ? m_old : mt;
    alpha[qi] = m_new == m_old ? 1.0f : exp_nonpositive(splat(m_old - m_new))[0];
    p[qi] = exp_nonpositive(score[qi] - splat(m_new));
    lsum[qi] = lsum[qi] * alpha[qi] + p[qi];
    a.m[q] = m_new;
  }
  return any;
}

/// Tiles ahead of the one being computed whose K/V lines a tile requests (into L2) while it
/// computes (see attend_impl).
constexpr int kPrefetchTiles = 2;

/// Row pointers (KV head 0) of the n keys kPrefetchTiles tiles ahead: a tile requests their
/// lines (plus its head_off) spread through its own loads, one line beside each line it reads.
struct Ahead {
  const unsigned char* const* k = nullptr;
  const unsigned char* const* v = nullptr;
  int n = 0;
};

/// Requests the lines of [r, r + bytes) into L2.
inline void prefetch_lines(const unsigned char* r, std::size_t bytes) {
  for (std::size_t line = 0; line < bytes; line += 64) __builtin_prefetch(r + line, 0, 2);
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(__AVX512F__)
// AVX2 (16 ymm registers): a v16f spans two of them, and GCC moves such values through the
// stack and 64-bit general registers when they sit in arrays across a loop or are broadcast:
// the generic tile below ran at about 235 ns per key and KV head here (AVX-512: 25). This tile
// does the same arithmetic on explicit 8-float halves with at most 14 live registers: per key
// and query one accumulator (both halves of each 16-dim chunk added into it), 8 keys' sums
// reduced at once by horizontal adds; weights broadcast from L1 in P*V, one 16-dim output
// chunk per query at a time. Results agree with the generic tile to rounding (the sums are
// associated differently), as the ISA tests check against the reference.
namespace avx2 {

/// Both 8-float halves of elements [i, i + 16) of a K/V row of type T, widened to fp32.
template <DType T>
inline void load_halves(const unsigned char* row, int i, __m256& lo, __m256& hi) {
  if constexpr (T == DType::f32) {
    const float* p = reinterpret_cast<const float*>(row) + i;
    lo = _mm256_loadu_ps(p);
    hi = _mm256_loadu_ps(p + 8);
  } else {
    const auto* p = reinterpret_cast<const __m128i*>(reinterpret_cast<const std::uint16_t*>(row) + i);
    if constexpr (T == DType::bf16) {
      lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p)), 16));
      hi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p + 1)), 16));
    } else {
      lo = _mm256_cvtph_ps(_mm_loadu_si128(p));
      hi = _mm256_cvtph_ps(_mm_loadu_si128(p + 1));
    }
  }
}

/// Lane i = the sum of the 8 lanes of v[i].
inline __m256 hsum8x8(const __m256* v) {
  const __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/// The 16 rows' lane sums of a scan tile, each in hsum's order (lane l + l+8, then + l+4, + l+2,
/// + l+1: core/distance.hpp's order, so the partial distances equal the reference's bit for bit):
/// lo[r] / hi[r] hold lanes 0-7 / 8-15 of row r. out[r] = the sum of row r.
inline void row_sums16(const __m256* lo, const __m256* hi, float* out) {
  for (int g = 0; g < 2; ++g) {  // rows 8g .. 8g+7 as a, b, c, d, e, f, g, h
    __m256 s[8];
    for (int r = 0; r < 8; ++r) s[r] = _mm256_add_ps(lo[8 * g + r], hi[8 * g + r]);  // l + l+8
    __m256 t[4];  // l + l+4: rows (0,1), (2,3), (4,5), (6,7) in the two 128-bit halves
    for (int i = 0; i < 4; ++i)
      t[i] = _mm256_add_ps(_mm256_permute2f128_ps(s[2 * i], s[2 * i + 1], 0x20),
                           _mm256_permute2f128_ps(s[2 * i], s[2 * i + 1], 0x31));
    __m256 u[2];  // l + l+2: per 128-bit half [row x, row x, row y, row y]
    for (int i = 0; i < 2; ++i)
      u[i] = _mm256_add_ps(_mm256_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                           _mm256_shuffle_ps(t[2 * i], t[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    // l + l+1: lanes [0, 2, 4, 6 | 1, 3, 5, 7] of the 8 rows
    const __m256 d = _mm256_add_ps(_mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm256_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    alignas(32) float v[8];
    _mm256_store_ps(v, d);
    constexpr int kRow[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    for (int i = 0; i < 8; ++i) out[8 * g + kRow[i]] = v[i];
  }
}

/// masked_scores + online_softmax (same contract and the same operations, so the same bits) on
/// 8-float halves: sums[qi][h] holds lanes 8h .. 8h+7 of query qi's dot products; the weights
/// go to w[qi][0..15]. The generic forms on v16f cost about a fifth of the AVX2 tile in cache
/// (GCC moves the two-register values through memory).
template <int QB>
inline bool softmax_tile(const AttendGroup& a, float scale, int q0, std::int64_t j0, int n, const __m256 (*sums)[2],
                         float (*w)[kTile], float* alpha, v16f* lsum) {
  const __m256 idx[2] = {_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), _mm256_setr_ps(8, 9, 10, 11, 12, 13, 14, 15)};
  const __m256 ninf = _mm256_set1_ps(kNegInf), zero = _mm256_setzero_ps(), sc = _mm256_set1_ps(scale);
  bool any = false;
  for (int qi = 0; qi < QB; ++qi) {
    const int q = q0 + qi;
    const __m256 lo = _mm256_set1_ps(static_cast<float>(std::max<std::int64_t>(a.begin[q] - j0, -1)));
    const __m256 hi =
        _mm256_set1_ps(static_cast<float>(std::min<std::int64_t>(std::min<std::int64_t>(a.end[q] - j0, n), kTile)));
    __m256 score[2];
    for (int h = 0; h < 2; ++h) {
      const __m256 in = _mm256_and_ps(_mm256_cmp_ps(idx[h], lo, _CMP_GE_OQ), _mm256_cmp_ps(idx[h], hi, _CMP_LT_OQ));
      score[h] = _mm256_blendv_ps(ninf, _mm256_mul_ps(sums[qi][h], sc), in);
    }
    float* l = reinterpret_cast<float*>(&lsum[qi]);
    const float m_old = a.m[q];
    const __m256 mo = _mm256_set1_ps(m_old);
    const int above = _mm256_movemask_ps(_mm256_cmp_ps(score[0], mo, _CMP_GT_OQ)) |
                      _mm256_movemask_ps(_mm256_cmp_ps(score[1], mo, _CMP_GT_OQ));
    if (m_old != kNegInf && above == 0) {  // the running max holds: weights against it, nothing to rescale
      for (int h = 0; h < 2; ++h) {
        const __m256 p = exp_nonpositive8(_mm256_sub_ps(score[h], mo));
        _mm256_storeu_ps(w[qi] + 8 * h, p);
        _mm256_storeu_ps(l + 8 * h, _mm256_add_ps(_mm256_loadu_ps(l + 8 * h), p));
      }
      alpha[qi] = 1.0f;
      any = true;
      continue;
    }
    const __m256 m8 = _mm256_max_ps(score[0], score[1]);
    const __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    const __m128 m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float mt = _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps(m2, m2, 1)));
    if (mt == kNegInf) {  // nothing visible to this query in the tile
      _mm256_storeu_ps(w[qi], zero);
      _mm256_storeu_ps(w[qi] + 8, zero);
      alpha[qi] = 1.0f;
      continue;
    }
    any = true;
    const float m_new = m_old > mt ? m_old : mt;
    alpha[qi] = m_new == m_old ? 1.0f : _mm256_cvtss_f32(exp_nonpositive8(_mm256_set1_ps(m_old - m_new)));
    // lsum * alpha + p fused, as -ffp-contract=fast compiles the generic form.
    const __m256 mn = _mm256_set1_ps(m_new), al = _mm256_set1_ps(alpha[qi]);
    for (int h = 0; h < 2; ++h) {
      const __m256 p = exp_nonpositive8(_mm256_sub_ps(score[h], mn));
      _mm256_storeu_ps(w[qi] + 8 * h, p);
      _mm256_storeu_ps(l + 8 * h, _mm256_fmadd_ps(_mm256_loadu_ps(l + 8 * h), al, p));
    }
    a.m[q] = m_new;
  }
  return any;
}

/// attend_tile for QB <= 4 queries (same contract).
template <DType T, int D, int QB>
inline void attend_tile(const AttendGroup& a, v16f* lsum, float scale, int q0, const unsigned char* const* k,
                        const unsigned char* const* v, std::size_t head_off, std::int64_t j0, int n,
                        const Ahead& ahead) {
  static_assert(QB >= 1 && QB <= 4);
  constexpr int C = D / 16;
  constexpr int kElem = T == DType::f32 ? 4 : 2;
  constexpr int KS = QB >= 3 ? 2 : 4;  // keys per pass: QB * KS accumulators
  // Scores: part[qi][key] accumulates q . k over the head dim in 8 lanes.
  alignas(32) __m256 part[QB][kTile];
  for (int jj = 0; jj < kTile; jj += KS) {
    __m256 x[QB][KS];
    for (int qi = 0; qi < QB; ++qi)
      for (int i = 0; i < KS; ++i) x[qi][i] = _mm256_setzero_ps();
    const unsigned char* rows[KS];
    for (int i = 0; i < KS; ++i) rows[i] = jj + i < n ? k[jj + i] + head_off : kZeroRow;
    for (int c = 0; c < C; ++c) {
      if (c * 16 * kElem % 64 == 0)
        for (int i = jj; i < jj + KS && i < ahead.n; ++i)
          __builtin_prefetch(ahead.k[i] + head_off + c * 16 * kElem, 0, 2);
      __m256 klo[KS], khi[KS];
      for (int i = 0; i < KS; ++i) load_halves<T>(rows[i], c * 16, klo[i], khi[i]);
      for (int qi = 0; qi < QB; ++qi) {
        const float* q = a.q + static_cast<std::size_t>(q0 + qi) * D + c * 16;
        const __m256 qlo = _mm256_loadu_ps(q), qhi = _mm256_loadu_ps(q + 8);
        for (int i = 0; i < KS; ++i) x[qi][i] = _mm256_fmadd_ps(qhi, khi[i], _mm256_fmadd_ps(qlo, klo[i], x[qi][i]));
      }
    }
    for (int qi = 0; qi < QB; ++qi)
      for (int i = 0; i < KS; ++i) part[qi][jj + i] = x[qi][i];
  }
  __m256 sums[QB][2];
  for (int qi = 0; qi < QB; ++qi) {
    sums[qi][0] = hsum8x8(part[qi]);
    sums[qi][1] = hsum8x8(part[qi] + 8);
  }
  alignas(64) float w[QB][kTile];
  float alpha[QB];
  if (!softmax_tile<QB>(a, scale, q0, j0, n, sums, w, alpha, lsum + q0)) return;
  // P * V, one 16-dim output chunk (two halves) per query at a time; V rows come from L1
  // after the first chunk.
  for (int c = 0; c < C; ++c) {
    __m256 olo[QB], ohi[QB];
    for (int qi = 0; qi < QB; ++qi) {
      const float* o = a.o + static_cast<std::size_t>(q0 + qi) * D + c * 16;
      const __m256 al = _mm256_set1_ps(alpha[qi]);
      olo[qi] = _mm256_mul_ps(_mm256_loadu_ps(o), al);
      ohi[qi] = _mm256_mul_ps(_mm256_loadu_ps(o + 8), al);
    }
    for (int jj = 0; jj < n; ++jj) {
      if (c == 0 && jj < ahead.n) prefetch_lines(ahead.v[jj] + head_off, static_cast<std::size_t>(D) * kElem);
      __m256 vlo, vhi;
      load_halves<T>(v[jj] + head_off, c * 16, vlo, vhi);
      for (int qi = 0; qi < QB; ++qi) {
        const __m256 wt = _mm256_broadcast_ss(&w[qi][jj]);
        olo[qi] = _mm256_fmadd_ps(wt, vlo, olo[qi]);
        ohi[qi] = _mm256_fmadd_ps(wt, vhi, ohi[qi]);
      }
    }
    for (int qi = 0; qi < QB; ++qi) {
      float* o = a.o + static_cast<std::size_t>(q0 + qi) * D + c * 16;
      _mm256_storeu_ps(o, olo[qi]);
      _mm256_storeu_ps(o + 8, ohi[qi]);
    }
  }
}

}  // namespace avx2
#endif

/// One tile of n <= 16 keys (row pointers k[jj], v[jj], rows past n point at kZeroRow, plus
/// head_off) for QB queries from q0.
/// Requests the lines of `ahead`'s rows for the same head while it runs.
template <DType T, int D, int QB>
inline void attend_tile(const AttendGroup& a, v16f* lsum, float scale, int q0, const unsigned char* const* k,
                        const unsigned char* const* v, std::size_t head_off, std::int64_t j0, int n,
                        const Ahead& ahead) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(__AVX512F__)
  if constexpr (QB > 4) {  // two blocks of 4: eight queries' accumulators do not fit 16 ymm
    avx2::attend_tile<T, D, 4>(a, lsum, scale, q0, k, v, head_off, j0, n, ahead);
    attend_tile<T, D, QB - 4>(a, lsum, scale, q0 + 4, k, v, head_off, j0, n, Ahead{});
  } else {
    avx2::attend_tile<T, D, QB>(a, lsum, scale, q0, k, v, head_off, j0, n, ahead);
  }
  return;
#endif
  constexpr int C = D / 16;
  constexpr int kElem = T == DType::f32 ? 4 : 2;
  // Scores. KS keys at a time, each K chunk widened once in registers and used by every query
  // (KS * QB accumulators); each KS keys' accumulators are reduced in registers (the first
  // rounds of reduce_16x16), the rest once per tile.
  constexpr int KS = QB >= 8 ? 2 : 4;
  alignas(64) v16f acc[QB][kTile / KS];
  for (int jj = 0; jj < kTile; jj += KS) {
    v16f x[QB][KS] = {};
    const unsigned char* rows[KS];
    for (int i = 0; i < KS; ++i) rows[i] = jj + i < n ? k[jj + i] + head_off : kZeroRow;
    for (int c = 0; c < C; ++c) {
      if (c * 16 * kElem % 64 == 0)
        for (int i = jj; i < jj + KS && i < ahead.n; ++i) __builtin_prefetch(ahead.k[i] + head_off + c * 16 * kElem, 0, 2);
      v16f kc[KS];
      for (int i = 0; i < KS; ++i) kc[i] = load16<T>(rows[i], c * 16);
      for (int qi = 0; qi < QB; ++qi) {
        const v16f qc = load_f32(a.q + static_cast<std::size_t>(q0 + qi) * D + c * 16);
        for (int i = 0; i < KS; ++i) x[qi][i] += qc * kc[i];
      }
    }
    for (int qi = 0; qi < QB; ++qi) acc[qi][jj / KS] = reduce_keys<KS>(x[qi]);
  }
  v16f sums[QB], score[QB];
  for (int qi = 0; qi < QB; ++qi) sums[qi] = reduce_tile<KS>(acc[qi]);
  masked_scores<QB>(a, scale, q0, j0, n, sums, score);
  v16f p[QB];
  float alpha[QB];
  if (!online_softmax<QB>(a, q0, score, p, alpha, lsum + q0)) return;
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
      if (c0 == 0 && jj < ahead.n) prefetch_lines(ahead.v[jj] + head_off, static_cast<std::size_t>(D) * kElem);
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

#if defined(__AVX512BF16__)
// bf16 K/V with vdpbf16ps (AVX512_BF16): each instruction multiplies 16 pairs of bf16 and adds
// both products to 16 fp32 lanes, so K and V are used as stored (no widening) and one
// instruction does the work of two FMAs. Queries and softmax weights enter as sums of two bf16
// terms (x = hi + lo, one vdpbf16ps per term; relative error 2^-17, so results stay within the
// fp32 tolerances of the tests and of `macattn bench`'s check). One term (plain rounding to
// bf16, as GPU flash attention does) measured 25 instead of 34 ns per key and head in cache but
// is off by 2e-3 relative L2 (weights) and 4e-3 in LSE (queries; the error grows with the
// logits), which the benchmark's 1e-3 check and the tests reject. Queries that are bf16 values
// already (bf16 models) have lo = 0: their groups skip the second query term, exactly.
// Scores, softmax, accumulation and outputs are fp32; the match scan is the same code in every
// kernel set.
constexpr int kQTerms = 2;  // query terms stored per query (the second skipped when all zero)
// Weight terms (P*V) are a template parameter PT: 2 by default, 1 with bf16 products
// (macattn::set_cpu_products), which also uses one query term.
constexpr bool kBf16Dot = true;

inline __m512 as_m512(v16f v) {
  __m512 r;
  std::memcpy(&r, &v, 64);
  return r;
}
inline v16f as_v16f(__m512 v) {
  v16f r;
  std::memcpy(&r, &v, 64);
  return r;
}
inline __m512bh load_bh(const void* p) { return (__m512bh)_mm512_loadu_si512(p); }

/// x as Terms bf16 terms: term t at out + t * stride (16 values each).
template <int Terms>
inline void split_bf16(v16f x, std::uint16_t* out, std::size_t stride) {
  __m512 rest = as_m512(x);
  for (int t = 0; t < Terms; ++t) {
    const __m256bh h = _mm512_cvtneps_pbh(rest);
    std::memcpy(out + t * stride, &h, 32);
    rest = _mm512_sub_ps(rest, as_m512(load16<DType::bf16>(out + t * stride, 0)));
  }
}

/// vdpbf16ps pairs the two bf16 halves of each 32-bit lane, so P*V takes two keys j, j+1 at a
/// time: _mm512_unpacklo/hi_epi16 of their V rows give lanes (v_j[d], v_j+1[d]) for the dims
/// d of 32 that the two unpacks pick (within each 128-bit lane: 4 from the low half, 4 from
/// the high). The output accumulators keep that order while a call runs (o_lanes) and are
/// put back in dim order at its end (o_dims).
inline void o_lanes(float* o) {  // dims -> unpack order, 32 floats
  const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
  const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
  const __m512 a = _mm512_loadu_ps(o), b = _mm512_loadu_ps(o + 16);
  _mm512_storeu_ps(o, _mm512_permutex2var_ps(a, lo, b));
  _mm512_storeu_ps(o + 16, _mm512_permutex2var_ps(a, hi, b));
}
inline void o_dims(float* o) {  // unpack order -> dims, 32 floats
  const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i hi = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  const __m512 a = _mm512_loadu_ps(o), b = _mm512_loadu_ps(o + 16);
  _mm512_storeu_ps(o, _mm512_permutex2var_ps(a, lo, b));
  _mm512_storeu_ps(o + 16, _mm512_permutex2var_ps(a, hi, b));
}

/// attend_tile for bf16 K/V with vdpbf16ps. qb: the group's queries as bf16 terms, query q's
/// term t at qb + (q * kQTerms + t) * D, the first QT of them used; weights as PT terms; a.o in
/// unpack order (o_lanes).
template <int D, int QB, int QT, int PT>
inline void attend_tile_bf16(const AttendGroup& a, v16f* lsum, const std::uint16_t* qb, float scale, int q0,
                             const unsigned char* const* k, const unsigned char* const* v, std::size_t head_off,
                             std::int64_t j0, int n, const Ahead& ahead) {
  constexpr int C = D / 32;  // 32-dim chunks: one 64-byte line of a bf16 row
  // KS keys at a time; each KS keys' accumulators are reduced (the first rounds of
  // reduce_16x16) while still in registers, so a tile stores 16 / KS vectors per query, not 16:
  // 27.7 -> 25.2 ns per key and KV head (fp32 products), 21.2 -> 19.0 (bf16 products), in L3.
  constexpr int KS = QB >= 8 ? 2 : 4;
  alignas(64) v16f acc[QB][kTile / KS];
  for (int jj = 0; jj < kTile; jj += KS) {
    __m512 x[QB][KS];
    for (int qi = 0; qi < QB; ++qi)
      for (int i = 0; i < KS; ++i) x[qi][i] = _mm512_setzero_ps();
    const unsigned char* rows[KS];
    for (int i = 0; i < KS; ++i) rows[i] = jj + i < n ? k[jj + i] + head_off : kZeroRow;
    for (int c = 0; c < C; ++c) {
      for (int i = jj; i < jj + KS && i < ahead.n; ++i) __builtin_prefetch(ahead.k[i] + head_off + c * 64, 0, 2);
      __m512bh kc[KS];
      for (int i = 0; i < KS; ++i) kc[i] = load_bh(rows[i] + c * 64);
      for (int qi = 0; qi < QB; ++qi)
        for (int t = 0; t < QT; ++t) {
          const __m512bh qc = load_bh(qb + static_cast<std::size_t>((q0 + qi) * kQTerms + t) * D + c * 32);
          for (int i = 0; i < KS; ++i) x[qi][i] = _mm512_dpbf16_ps(x[qi][i], qc, kc[i]);
        }
    }
    for (int qi = 0; qi < QB; ++qi) acc[qi][jj / KS] = reduce_keys<KS>(x[qi]);
  }
  v16f sums[QB], score[QB];
  for (int qi = 0; qi < QB; ++qi) sums[qi] = reduce_tile<KS>(acc[qi]);
  masked_scores<QB>(a, scale, q0, j0, n, sums, score);
  v16f p[QB];
  float alpha[QB];
  if (!online_softmax<QB>(a, q0, score, p, alpha, lsum + q0)) return;
  // Weights as bf16 terms: 32-bit word jp of a term is the pair (p_2jp, p_2jp+1), broadcast
  // from L1 into all lanes by the dot products that use it.
  const int pairs = (n + 1) / 2;
  alignas(64) std::uint32_t w[QB][PT][kTile / 2];
  for (int qi = 0; qi < QB; ++qi) split_bf16<PT>(p[qi], reinterpret_cast<std::uint16_t*>(w[qi][0]), kTile);
  // P * V: CB chunks of 32 dims (2 accumulators each) per query in registers while the pairs
  // stream by; a key past n reads kZeroRow with weight 0.
  constexpr int CB = QB >= 8 ? 1 : QB >= 4 ? 2 : (C < 8 ? C : 8) / (QB >= 2 ? 2 : 1);
  for (int c0 = 0; c0 < C; c0 += CB) {
    __m512 oc[QB][CB][2];
    for (int qi = 0; qi < QB; ++qi) {
      const __m512 al = _mm512_set1_ps(alpha[qi]);
      for (int cb = 0; cb < CB; ++cb)
        for (int h = 0; h < 2; ++h)
          oc[qi][cb][h] = _mm512_mul_ps(_mm512_loadu_ps(a.o + static_cast<std::size_t>(q0 + qi) * D + (c0 + cb) * 32 + h * 16), al);
    }
    for (int jp = 0; jp < pairs; ++jp) {
      if (c0 == 0)
        for (int i = 2 * jp; i < 2 * jp + 2 && i < ahead.n; ++i) prefetch_lines(ahead.v[i] + head_off, D * 2);
      const unsigned char* va = v[2 * jp] + head_off;
      const unsigned char* vb = 2 * jp + 1 < n ? v[2 * jp + 1] + head_off : kZeroRow;
      for (int cb = 0; cb < CB; ++cb) {
        const __m512i ra = _mm512_loadu_si512(va + (c0 + cb) * 64), rb = _mm512_loadu_si512(vb + (c0 + cb) * 64);
        const __m512bh lo = (__m512bh)_mm512_unpacklo_epi16(ra, rb), hi = (__m512bh)_mm512_unpackhi_epi16(ra, rb);
        for (int qi = 0; qi < QB; ++qi)
          for (int t = 0; t < PT; ++t) {
            const __m512bh wt = (__m512bh)_mm512_set1_epi32(static_cast<int>(w[qi][t][jp]));
            oc[qi][cb][0] = _mm512_dpbf16_ps(oc[qi][cb][0], lo, wt);
            oc[qi][cb][1] = _mm512_dpbf16_ps(oc[qi][cb][1], hi, wt);
          }
      }
    }
    for (int qi = 0; qi < QB; ++qi)
      for (int cb = 0; cb < CB; ++cb)
        for (int h = 0; h < 2; ++h)
          _mm512_storeu_ps(a.o + static_cast<std::size_t>(q0 + qi) * D + (c0 + cb) * 32 + h * 16, oc[qi][cb][h]);
  }
}
/// One tile for all queries of a group, in blocks of 8, 4, 2, 1 (the first block requests the
/// lines of `ahead`).
template <int D, int QT, int PT>
void attend_tiles_bf16(const AttendGroup& grp, v16f* lsum, const std::uint16_t* qb, float scale,
                       const unsigned char* const* k, const unsigned char* const* v, std::size_t off, std::int64_t j0,
                       int n, const Ahead& ahead) {
  int q0 = 0;
  auto first = [&] { return q0 == 0 ? ahead : Ahead{}; };
  for (; q0 + 8 <= grp.nq; q0 += 8) attend_tile_bf16<D, 8, QT, PT>(grp, lsum, qb, scale, q0, k, v, off, j0, n, first());
  if (q0 + 4 <= grp.nq) { attend_tile_bf16<D, 4, QT, PT>(grp, lsum, qb, scale, q0, k, v, off, j0, n, first()); q0 += 4; }
  if (q0 + 2 <= grp.nq) { attend_tile_bf16<D, 2, QT, PT>(grp, lsum, qb, scale, q0, k, v, off, j0, n, first()); q0 += 2; }
  if (q0 < grp.nq) attend_tile_bf16<D, 1, QT, PT>(grp, lsum, qb, scale, q0, k, v, off, j0, n, first());
}
#else
constexpr bool kBf16Dot = false;
#endif

template <DType T, int D>
void attend_impl(const AttendArgs& a) {
  [[maybe_unused]] constexpr bool dot = kBf16Dot && T == DType::bf16;
  // Index of each group's first query among all queries of the call (for per-query buffers).
  std::vector<std::size_t> first_query(static_cast<std::size_t>(a.num_groups));
  std::size_t queries = 0;
  for (std::int32_t gi = 0; gi < a.num_groups; ++gi) {
    first_query[static_cast<std::size_t>(gi)] = queries;
    queries += static_cast<std::size_t>(a.groups[gi].nq);
  }
#if defined(__AVX512BF16__)
  // The queries as bf16 terms, once per call (a call covers 256 keys or more); outputs in
  // unpack order while the call runs.
  thread_local std::vector<std::uint16_t> qbuf;
  std::vector<char> one_term(static_cast<std::size_t>(a.num_groups));  // all lo terms zero
  if constexpr (dot) {
    qbuf.resize(queries * kQTerms * D);
    for (std::int32_t gi = 0; gi < a.num_groups; ++gi) {
      const AttendGroup& grp = a.groups[gi];
      for (std::int32_t q = 0; q < grp.nq; ++q) {
        std::uint16_t* dst = qbuf.data() + (first_query[static_cast<std::size_t>(gi)] + static_cast<std::size_t>(q)) * kQTerms * D;
        for (int c = 0; c < D; c += 16) split_bf16<kQTerms>(load_f32(grp.q + static_cast<std::size_t>(q) * D + c), dst + c, D);
        for (int c = 0; c < D; c += 32) o_lanes(grp.o + static_cast<std::size_t>(q) * D + c);
      }
      bool zero = true;
      for (std::int32_t q = 0; q < grp.nq && zero; ++q) {
        const std::uint16_t* lo =
            qbuf.data() + ((first_query[static_cast<std::size_t>(gi)] + static_cast<std::size_t>(q)) * kQTerms + 1) * D;
        for (int i = 0; i < D; ++i) zero = zero && (lo[i] & 0x7fff) == 0;  // +-0
      }
      one_term[static_cast<std::size_t>(gi)] = zero;
    }
  }
#endif
  // Per query, 16 lanes of l (online_softmax); their sum goes back to the group's l at the end.
  thread_local std::vector<v16f> lsum_buf;
  {
    lsum_buf.resize(queries);
    for (std::int32_t gi = 0; gi < a.num_groups; ++gi)
      for (std::int32_t q = 0; q < a.groups[gi].nq; ++q) {
        v16f l0 = splat(0.0f);
        l0[0] = a.groups[gi].l[q];
        lsum_buf[first_query[static_cast<std::size_t>(gi)] + static_cast<std::size_t>(q)] = l0;
      }
  }
  const RowLocator rows(*a.kv, a.b);
  const unsigned char* k[kTile];
  const unsigned char* v[kTile];
  for (std::int64_t j0 = a.lo; j0 < a.hi; j0 += kTile) {
    const int n = static_cast<int>(std::min<std::int64_t>(kTile, a.hi - j0));
    for (int jj = 0; jj < n; ++jj) {
      k[jj] = rows.k(j0 + jj);
      v[jj] = rows.v(j0 + jj);
    }
    // The rows kPrefetchTiles tiles ahead: each group's tile requests its head's lines of them
    // spread through its own loads. Requested in one burst per group (128 lines at D = 128),
    // they stalled the core until they had landed, so memory and arithmetic did not overlap:
    // exact decode read 17-18 GB/s with the burst, 22-25 GB/s spread (docs/benchmarks/cpu.md).
    const std::int64_t ahead0 = j0 + kPrefetchTiles * kTile;
    const int n_ahead = static_cast<int>(std::clamp<std::int64_t>(a.hi - ahead0, 0, kTile));
    const unsigned char* ak[kTile];
    const unsigned char* av[kTile];
    for (int jj = 0; jj < n_ahead; ++jj) {
      ak[jj] = rows.k(ahead0 + jj);
      av[jj] = rows.v(ahead0 + jj);
    }
    const Ahead ahead{ak, av, n_ahead};
    for (std::int32_t gi = 0; gi < a.num_groups; ++gi) {
      const AttendGroup& grp = a.groups[gi];
      if (j0 + n <= grp.lo || j0 >= grp.hi) continue;
      const std::size_t off = static_cast<std::size_t>(grp.g) * rows.head_bytes();
      v16f* lsum = lsum_buf.data() + first_query[static_cast<std::size_t>(gi)];
      int q0 = 0;
#if defined(__AVX512BF16__)
      if constexpr (dot) {
        const std::uint16_t* qb = qbuf.data() + first_query[static_cast<std::size_t>(gi)] * kQTerms * D;
        if (a.bf16_products) attend_tiles_bf16<D, 1, 1>(grp, lsum, qb, a.scale, k, v, off, j0, n, ahead);
        else if (one_term[static_cast<std::size_t>(gi)]) attend_tiles_bf16<D, 1, 2>(grp, lsum, qb, a.scale, k, v, off, j0, n, ahead);
        else attend_tiles_bf16<D, 2, 2>(grp, lsum, qb, a.scale, k, v, off, j0, n, ahead);
        continue;
      }
#endif
      auto first = [&] { return q0 == 0 ? ahead : Ahead{}; };
      for (; q0 + 8 <= grp.nq; q0 += 8) attend_tile<T, D, 8>(grp, lsum, a.scale, q0, k, v, off, j0, n, first());
      if (q0 + 4 <= grp.nq) { attend_tile<T, D, 4>(grp, lsum, a.scale, q0, k, v, off, j0, n, first()); q0 += 4; }
      if (q0 + 2 <= grp.nq) { attend_tile<T, D, 2>(grp, lsum, a.scale, q0, k, v, off, j0, n, first()); q0 += 2; }
      if (q0 < grp.nq) attend_tile<T, D, 1>(grp, lsum, a.scale, q0, k, v, off, j0, n, first());
    }
  }
  for (std::int32_t gi = 0; gi < a.num_groups; ++gi)
    for (std::int32_t q = 0; q < a.groups[gi].nq; ++q)
      a.groups[gi].l[q] = hsum(lsum_buf[first_query[static_cast<std::size_t>(gi)] + static_cast<std::size_t>(q)]);
#if defined(__AVX512BF16__)
  if constexpr (dot)
    for (std::int32_t gi = 0; gi < a.num_groups; ++gi)
      for (std::int32_t q = 0; q < a.groups[gi].nq; ++q)
        for (int c = 0; c < D; c += 32) o_dims(a.groups[gi].o + static_cast<std::size_t>(q) * D + c);
#endif
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
void scan_impl(const ScanArgs& a) {
  constexpr int C = D / 16;
  // Every row's first kFirst chunks (64 dims; 32 for D = 64) are summed for 16 heads at once
  // and reduced together (reduce_16x16 adds each row's lanes in hsum's order, so the partial
  // distances are those of core/distance.hpp bit for bit). A random ring row (distance about
  // 2D) is still under the threshold after 32 dims but over it after 64, so most rows stop
  // there; the few that do not are finished one by one, exactly as the reference sums them.
  constexpr int kFirst = C >= 4 ? 4 : C;
  constexpr std::size_t esize = R == DType::f32 ? 4 : 2;
  constexpr std::size_t kFirstBytes = static_cast<std::size_t>(kFirst) * 16 * esize;
  // Rows kAhead slots on are requested into L2 beside the rows read now (into L1 the requests
  // waited on L1's few miss buffers; spread, not one burst per slot, as in attend_impl). One
  // sequence's ring, batch 4, 8K-context bench rows, 2 threads: 550-615 us per step with one
  // row at a time, L1 requests and 2 slots ahead; 390 us with L2 requests 4 ahead; 270-305 us
  // with the rows also summed 16 at a time (scratch harness, cold ring, same run).
  constexpr std::int64_t kAhead = 4;
  for (std::int32_t h = a.h0; h < a.h1; ++h) a.out[h] = {-1, std::numeric_limits<float>::infinity()};
  const std::size_t slot_bytes = static_cast<std::size_t>(a.num_q_heads) * D * esize;
  const auto* ring = static_cast<const unsigned char*>(a.qring);
  for (std::int64_t p = a.t - 1; p >= a.first; --p) {
    const unsigned char* slot = ring + static_cast<std::size_t>(p % a.window) * slot_bytes;
    const unsigned char* next =
        p - kAhead >= a.first ? ring + static_cast<std::size_t>((p - kAhead) % a.window) * slot_bytes : nullptr;
    for (std::int32_t h0 = a.h0; h0 < a.h1; h0 += kTile) {
      const int n = static_cast<int>(std::min<std::int32_t>(kTile, a.h1 - h0));
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(__AVX512F__)
      // The same sums on explicit 8-lane halves (a v16f in an array spans two ymm registers,
      // which GCC moves through the stack), reduced in the same order (avx2::row_sums16).
      __m256 lo[kTile], hi[kTile];
      for (int r = 0; r < kTile; ++r) {
        lo[r] = hi[r] = _mm256_setzero_ps();
        if (r >= n) continue;
        const std::size_t off = static_cast<std::size_t>(h0 + r) * D * esize;
        if (next)
          for (std::size_t line = 0; line < kFirstBytes; line += 64) __builtin_prefetch(next + off + line, 0, 2);
        const unsigned char* row = slot + off;
        const float* q = a.q_pre + static_cast<std::size_t>(h0 + r) * D;
        for (int c = 0; c < kFirst; ++c) {
          __m256 rl, rh;
          avx2::load_halves<R>(row, c * 16, rl, rh);
          const __m256 dl = _mm256_sub_ps(_mm256_loadu_ps(q + c * 16), rl);
          const __m256 dh = _mm256_sub_ps(_mm256_loadu_ps(q + c * 16 + 8), rh);
          lo[r] = _mm256_fmadd_ps(dl, dl, lo[r]);
          hi[r] = _mm256_fmadd_ps(dh, dh, hi[r]);
        }
      }
      float part[kTile];  // lower bounds of the rows' distances
      avx2::row_sums16(lo, hi, part);
      auto lanes_of = [&](int r) {
        v16f v;
        std::memcpy(&v, &lo[r], 32);
        std::memcpy(reinterpret_cast<char*>(&v) + 32, &hi[r], 32);
        return v;
      };
#else
      v16f lanes[kTile];
      for (int r = 0; r < kTile; ++r) {
        lanes[r] = splat(0.0f);
        if (r >= n) continue;
        const std::size_t off = static_cast<std::size_t>(h0 + r) * D * esize;
        if (next)
          for (std::size_t line = 0; line < kFirstBytes; line += 64) __builtin_prefetch(next + off + line, 0, 2);
        const unsigned char* row = slot + off;
        const float* q = a.q_pre + static_cast<std::size_t>(h0 + r) * D;
        for (int c = 0; c < kFirst; ++c) {
          const v16f diff = load_f32(q + c * 16) - load16<R>(row, c * 16);
          lanes[r] = fma16(diff, diff, lanes[r]);
        }
      }
      const v16f part = reduce_16x16(lanes);  // lower bounds of the rows' distances
      auto lanes_of = [&](int r) { return lanes[r]; };
#endif
      for (int r = 0; r < n; ++r) {
        ScanResult& best = a.out[h0 + r];
        if (!(part[r] < a.bound) || part[r] > best.distance) continue;  // cannot win, or of no interest
        const unsigned char* row = slot + static_cast<std::size_t>(h0 + r) * D * esize;
        const float* q = a.q_pre + static_cast<std::size_t>(h0 + r) * D;
        v16f acc = lanes_of(r);
        for (int c = kFirst; c < C; ++c) {
          const v16f diff = load_f32(q + c * 16) - load16<R>(row, c * 16);
          acc = fma16(diff, diff, acc);
        }
        const float d = kFirst < C ? hsum(acc) : part[r];
        if (d <= best.distance && d < a.bound) best = {p, d};  // newest first: '<=' keeps the oldest of equals
      }
    }
  }
}

template <DType R>
void scan_dtype(const ScanArgs& a) {
  switch (a.head_dim) {
    case 64: return scan_impl<R, 64>(a);
    case 128: return scan_impl<R, 128>(a);
    case 256: return scan_impl<R, 256>(a);
    default: return;  // unreachable (supports())
  }
}

void scan(const ScanArgs& a) {
  switch (a.ring_dtype) {
    case DType::f32: return scan_dtype<DType::f32>(a);
    case DType::f16: return scan_dtype<DType::f16>(a);
    case DType::bf16: return scan_dtype<DType::bf16>(a);
  }
}

bool supports(DType, std::int32_t head_dim) { return head_dim == 64 || head_dim == 128 || head_dim == 256; }

}  // namespace

const KernelTable& kernel_table() {
  static const KernelTable table{MACATTN_ISA_NAME, supports, attend, scan};
  return table;
}

}  // namespace macattn::cpu::MACATTN_ISA_NS
