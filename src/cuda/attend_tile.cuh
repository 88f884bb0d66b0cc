// src/cuda/attend_tile.cuh: the one attention core every CUDA kernel uses: up to 16 query rows
// that share a KV head attend to a span of keys of one sequence, on the tensor cores.
//
// Layout of the work (128 threads = 4 warps per block):
// - the rows' queries sit in shared memory as an mma A operand [16 rows x D] (padding rows 0);
// - K and V stream through NS shared-memory stages of BK = 64 keys (cp.async, 16-byte chunks,
//   XOR-swizzled so ldmatrix reads are conflict-free); keys past the span are zero-filled;
// - each warp takes 16 keys of every stage: S = Q K^T (m16n8k16), per-row masks, online
//   softmax in base 2 in fp32, P (rounded to the K/V type) times V accumulates into O;
// - at the end the four warps' (max, sum, O) merge through shared memory.
// Each row has its own key set, the union of two intervals [a0, a1) and [b0, b1), so the same
// core serves exact decode (one interval), MAC amend (per-head start), MAC complete (sinks and
// tail) and prefill rows (per-row end). The block walks up to two spans of keys.
// Internal.
#pragma once

#include "cuda/device_common.cuh"

namespace macattn::cuda::detail {

constexpr int kRows = 16;       // query rows per block (the mma M dimension)
constexpr int kBlockKeys = 64;  // keys per pipeline stage
constexpr int kThreads = 128;

/// The keys row r attends: [a0, a1) U [b0, b1) (absolute positions).
struct RowKeys {
  long long a0, a1, b0, b1;
};

/// Up to two spans of keys the block walks, in order: [lo0, hi0) then [lo1, hi1).
struct KeySpans {
  long long lo0, hi0, lo1, hi1;
  __device__ long long count() const { return (hi0 - lo0) + (hi1 - lo1); }
};

template <int D, int NS>
struct TileSmem {
  static constexpr int kChunks = D / 8;                          // 16-byte chunks per row
  static constexpr int kStageElems = kBlockKeys * D;             // per K or V
  static constexpr std::size_t kKV = std::size_t(2) * NS * kStageElems * 2;  // bytes (16-bit types)
  static constexpr std::size_t kQ = std::size_t(kRows) * D * 2;
  static constexpr std::size_t kMerge = std::size_t(4) * kRows * D * 4 + 4 * 4 * kRows * 4;  // o, m, l, weights, lse
  static constexpr std::size_t kOffsets = std::size_t(NS) * kBlockKeys * sizeof(long long);  // NS tiles' row offsets
  // The K/V stages, reused for the merge after the last tile (and by MAC's spread plan before the
  // first): everything before the query tile.
  static constexpr std::size_t kFront = kKV > kMerge ? kKV : kMerge;
  static constexpr std::size_t kBytes = kFront + kQ + kRows * sizeof(RowKeys) + kOffsets;
};

/// Swizzled element offset of (row, chunk) in a [rows x D] tile of 16-bit elements.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

/// Writes query row r (D elements read through load_float from `q`, `dtype`) into the A
/// operand tile; null q = padding (zeros). Call from all threads, then __syncthreads(). Every
/// load is issued before the first store, so no element's load can wait behind an earlier
/// element's store (the interleaved loop's PTX had each generic load after the previous shared
/// store; the change measured within noise on the H200, h200.md).
template <int D>
struct StagedQuery {
  static constexpr int kPer = kRows * D / kThreads;
  float v[kPer];  // this thread's elements, in registers until store()

  /// Issues the loads (nothing waits for them until store()).
  __device__ __forceinline__ void load(const void* const* q_rows, int dtype) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = threadIdx.x + k * kThreads, r = i / D, c = i % D;
      const void* row = q_rows[r];
      v[k] = row ? load_float(row, dtype, c) : 0.f;
    }
  }
  template <typename T>
  __device__ __forceinline__ void store(T* s_q) const {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int i = threadIdx.x + k * kThreads, r = i / D, c = i % D;
      s_q[swz<D>(r, c >> 3) + (c & 7)] = Elem<T>::from(v[k]);
    }
  }
};

template <int D, typename T>
__device__ __forceinline__ void stage_query_rows(T* s_q, const void* const* q_rows, int dtype) {
  StagedQuery<D> sq;
  sq.load(q_rows, dtype);
  sq.store(s_q);
}

/// Runs the core. s_raw: dynamic shared memory of TileSmem<D,NS>::kBytes; the query tile and
/// row_keys must already be written there (see q_tile()/row_keys()). On return (all threads,
/// after a barrier) out_o[r*D + i] / out_lse[r] hold each row's normalised output and natural
/// LSE (out_o/out_lse live in shared memory, see merged_o()/merged_lse()).
template <int D, int NS, typename T>
struct AttendTile {
  using Smem = TileSmem<D, NS>;
  static __device__ T* k_stage(char* s, int st) { return reinterpret_cast<T*>(s) + st * Smem::kStageElems; }
  static __device__ T* v_stage(char* s, int st) { return reinterpret_cast<T*>(s) + (NS + st) * Smem::kStageElems; }
  static __device__ T* q_tile(char* s) {
    return reinterpret_cast<T*>(s + Smem::kFront);
  }
  static __device__ RowKeys* row_keys(char* s) { return reinterpret_cast<RowKeys*>(reinterpret_cast<char*>(q_tile(s)) + Smem::kQ); }
  /// [NS][kBlockKeys] element offsets of the K/V rows of upcoming tiles (slot = tile % NS).
  static __device__ long long* row_offsets(char* s) { return reinterpret_cast<long long*>(row_keys(s) + kRows); }
  static __device__ float* merged_o(char* s) { return reinterpret_cast<float*>(s); }  // [16][D] after run
  static __device__ float* merged_lse(char* s) { return reinterpret_cast<float*>(s) + 4 * kRows * D + 12 * kRows; }

  // Stage `st` <- the K/V rows of the tile starting at span index `first` (n_keys keys in all;
  // past them zero-filled), at the tile's row offsets (looked up before, in shared memory).
  static __device__ void load_stage(char* s, int st, const PagedKVArgs& kv, int n_keys, int first,
                                    const long long* offsets) {
    T* sk = k_stage(s, st);
    T* sv = v_stage(s, st);
    constexpr int kPerThread = kBlockKeys * Smem::kChunks / kThreads;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int idx = threadIdx.x + k * kThreads;
      const int r = idx / Smem::kChunks, c = idx % Smem::kChunks;
      const bool valid = first + r < n_keys;
      const long long off = offsets[r] + c * 8;
      cp_async_16(sk + swz<D>(r, c), reinterpret_cast<const T*>(kv.k) + off, valid);
      cp_async_16(sv + swz<D>(r, c), reinterpret_cast<const T*>(kv.v) + off, valid);
    }
  }

  /// `rows`: the rows the caller reads back (merged_o rows >= rows are left unmerged).
  static __device__ void run(char* s, const PagedKVArgs& kv, int b, int g, const KeySpans& spans, float scale,
                             int rows = kRows) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gid = lane >> 2, tig = lane & 3;
    const float scale_log2 = scale * 1.4426950408889634f;
    const float ninf = -__int_as_float(0x7f800000);
    // Positions fit in 31 bits (the entry points check max_seq_len): the span walk, masks and
    // page split are 32-bit (the 64-bit forms made this core several times larger in code, and
    // a short block's time is largely its code being fetched; h200.md).
    const int lo0 = static_cast<int>(spans.lo0), len0 = static_cast<int>(spans.hi0 - spans.lo0);
    const int lo1 = static_cast<int>(spans.lo1);
    const int n_keys = static_cast<int>(spans.count());
    const int n_tiles = (n_keys + kBlockKeys - 1) / kBlockKeys;
    auto span_at = [&](int v) { return v < len0 ? lo0 + v : lo1 + (v - len0); };

    // Query fragments (A operand) are re-read from shared memory per tile (8 ldmatrix for
    // D = 128) rather than held in registers: fewer registers, more resident blocks.
    const T* sq = q_tile(s);
    const RowKeys rk0l = row_keys(s)[gid], rk1l = row_keys(s)[gid + 8];
    const int r0a0 = static_cast<int>(rk0l.a0), r0a1 = static_cast<int>(rk0l.a1), r0b0 = static_cast<int>(rk0l.b0),
              r0b1 = static_cast<int>(rk0l.b1);
    const int r1a0 = static_cast<int>(rk1l.a0), r1a1 = static_cast<int>(rk1l.a1), r1b0 = static_cast<int>(rk1l.b0),
              r1b1 = static_cast<int>(rk1l.b1);

    float o[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m0 = ninf, m1 = ninf, l0 = 0.f, l1 = 0.f;

    // Row offsets of the K/V rows, a tile's in slot tile % NS: the first NS tiles' here (one key
    // per thread at a time), then each iteration loads the pages of the tile NS ahead (threads
    // 0..63, one key each) and stores their offsets at its end, so issuing a tile's copies waits
    // on no page-table load.
    long long* offsets = row_offsets(s);
    const int ibase = kv.indptr[b];
    auto row_offset = [&](int v) -> long long {  // key v of the span (v < n_keys)
      return paged_row(kv, ibase, static_cast<unsigned>(span_at(v)), g) * D;
    };
#pragma unroll 1
    for (int v = threadIdx.x; v < NS * kBlockKeys; v += kThreads) offsets[v] = v < n_keys ? row_offset(v) : 0;
    __syncthreads();
    // Prologue: NS-1 stages in flight.
#pragma unroll 1
    for (int st = 0; st < NS - 1; ++st) {
      if (st < n_tiles) load_stage(s, st, kv, n_keys, st * kBlockKeys, offsets + st * kBlockKeys);
      cp_async_commit();
    }
    for (int tile = 0; tile < n_tiles; ++tile) {
      cp_async_wait<NS - 2>();
      __syncthreads();  // also publishes the offsets stored at the end of the last iteration
      {
        const int next = tile + NS - 1;
        if (next < n_tiles) load_stage(s, next % NS, kv, n_keys, next * kBlockKeys, offsets + (next % NS) * kBlockKeys);
        cp_async_commit();
      }
      // Offset of this thread's key of tile+NS (stored at the end of the iteration).
      const int ahead = tile + NS;
      const int ahead_v = ahead * kBlockKeys + threadIdx.x;
      const bool ahead_store = threadIdx.x < kBlockKeys && ahead < n_tiles;
      const long long ahead_off = ahead_store && ahead_v < n_keys ? row_offset(ahead_v) : 0;
      const int st = tile % NS;
      const T* sk = k_stage(s, st) + warp * 16 * D;  // this warp's 16 keys (swizzle is row&7: aligned)
      const T* sv = v_stage(s, st) + warp * 16 * D;

      // S = Q K^T for 16 keys: two n-tiles of 8 keys.
      float sc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        std::uint32_t qf[4];
        ldmatrix_x4(qf, sq + swz<D>((lane & 7) + ((lane >> 3) & 1) * 8, 2 * kk + (lane >> 4)));
        std::uint32_t kb[4];
        const int key = (lane & 7) + ((lane >> 4) << 3), chunk = 2 * kk + ((lane >> 3) & 1);
        ldmatrix_x4(kb, sk + swz<D>(key, chunk));
        Mma<T>::run(sc[0], qf, kb[0], kb[1]);
        Mma<T>::run(sc[1], qf, kb[2], kb[3]);
      }
      // Masks and online softmax (base 2). Thread holds rows gid (c0,c1) and gid+8 (c2,c3).
      const int base = tile * kBlockKeys + warp * 16;
      float mx0 = ninf, mx1 = ninf;
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int v = base + nt * 8 + tig * 2 + e;
          const bool in_span = v < n_keys;
          const int pos = in_span ? span_at(v) : -1;
          const bool in0 = in_span && ((pos >= r0a0 && pos < r0a1) || (pos >= r0b0 && pos < r0b1));
          const bool in1 = in_span && ((pos >= r1a0 && pos < r1a1) || (pos >= r1b0 && pos < r1b1));
          sc[nt][e] = in0 ? sc[nt][e] * scale_log2 : ninf;
          sc[nt][2 + e] = in1 ? sc[nt][2 + e] * scale_log2 : ninf;
          mx0 = fmaxf(mx0, sc[nt][e]);
          mx1 = fmaxf(mx1, sc[nt][2 + e]);
        }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      const float nm0 = fmaxf(m0, mx0), nm1 = fmaxf(m1, mx1);
      // A row with nothing seen yet keeps m = -inf; use 0 as its base so exp2 gives 0, not NaN.
      const float b0 = nm0 == ninf ? 0.f : nm0, b1 = nm1 == ninf ? 0.f : nm1;
      const float c0 = exp2f(m0 - b0), c1 = exp2f(m1 - b1);
      m0 = nm0;
      m1 = nm1;
      float p[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        p[nt][0] = exp2f(sc[nt][0] - b0);
        p[nt][1] = exp2f(sc[nt][1] - b0);
        p[nt][2] = exp2f(sc[nt][2] - b1);
        p[nt][3] = exp2f(sc[nt][3] - b1);
      }
      l0 = l0 * c0 + p[0][0] + p[0][1] + p[1][0] + p[1][1];
      l1 = l1 * c1 + p[0][2] + p[0][3] + p[1][2] + p[1][3];
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        o[j][0] *= c0;
        o[j][1] *= c0;
        o[j][2] *= c1;
        o[j][3] *= c1;
      }
      // O += P V: P as the A operand (rows x 16 keys), V^T fragments by ldmatrix.trans.
      std::uint32_t pa[4];
      pa[0] = Elem<T>::pack(p[0][0], p[0][1]);
      pa[1] = Elem<T>::pack(p[0][2], p[0][3]);
      pa[2] = Elem<T>::pack(p[1][0], p[1][1]);
      pa[3] = Elem<T>::pack(p[1][2], p[1][3]);
#pragma unroll
      for (int j = 0; j < D / 8; j += 2) {
        std::uint32_t vb[4];
        const int key = (lane & 7) + (((lane >> 3) & 1) << 3), chunk = j + (lane >> 4);
        ldmatrix_x4_trans(vb, sv + swz<D>(key, chunk));
        Mma<T>::run(o[j], pa, vb[0], vb[1]);
        Mma<T>::run(o[j + 1], pa, vb[2], vb[3]);
      }
      // Slot (tile+NS)%NS = tile%NS held this tile's offsets, read when its copies were issued
      // NS-1 iterations ago.
      if (ahead_store) offsets[(ahead % NS) * kBlockKeys + threadIdx.x] = ahead_off;
    }
    cp_async_wait<0>();
    __syncthreads();  // stages are free: reuse them for the cross-warp merge

    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    float* wo = reinterpret_cast<float*>(s);               // [4][16][D]
    float* wm = wo + 4 * kRows * D;                        // [4][16]
    float* wl = wm + 4 * kRows;                            // [4][16]
    float* wf = wl + 4 * kRows;                            // [4][16] each warp's weight per row
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const int col = j * 8 + tig * 2;
      if (gid < rows) {
        wo[(warp * kRows + gid) * D + col] = o[j][0];
        wo[(warp * kRows + gid) * D + col + 1] = o[j][1];
      }
      if (gid + 8 < rows) {
        wo[(warp * kRows + gid + 8) * D + col] = o[j][2];
        wo[(warp * kRows + gid + 8) * D + col + 1] = o[j][3];
      }
    }
    if (tig == 0) {
      wm[warp * kRows + gid] = m0;
      wm[warp * kRows + gid + 8] = m1;
      wl[warp * kRows + gid] = l0;
      wl[warp * kRows + gid + 8] = l1;
    }
    __syncthreads();
    // Per row, once: each warp's weight exp2(m_w - max) / total and the merged LSE (this had
    // been recomputed, division included, for every element: the longest serial stretch of a
    // short block).
    float* out_lse = merged_lse(s);
    if (threadIdx.x < kRows) {
      const int r = threadIdx.x;
      float mm = ninf;
#pragma unroll
      for (int w = 0; w < 4; ++w) mm = fmaxf(mm, wm[w * kRows + r]);
      float f[4], sum = 0.f;
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        f[w] = mm == ninf ? 0.f : exp2f(wm[w * kRows + r] - mm);
        sum += wl[w * kRows + r] * f[w];
      }
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
      for (int w = 0; w < 4; ++w) wf[w * kRows + r] = f[w] * inv;
      out_lse[r] = sum > 0.f ? (mm + log2f(sum)) * 0.6931471805599453f : ninf;
    }
    __syncthreads();
    // Row r, element i: combine the warps; the result overwrites warp 0's slice (merged_o()),
    // read above only by this thread.
    for (int idx = threadIdx.x; idx < rows * D; idx += kThreads) {
      const int r = idx / D, i = idx % D;
      float acc = 0.f;
#pragma unroll
      for (int w = 0; w < 4; ++w) acc += wf[w * kRows + r] * wo[(w * kRows + r) * D + i];
      wo[r * D + i] = acc;
    }
    __syncthreads();
  }
};

/// Query row r of KV group g of sequence b in q [B, Hq, D] (elements of `esize` bytes), or null
/// past the group's rows (the attention core's padding rows).
__device__ __forceinline__ const void* group_query_row(const void* q, std::size_t esize, int d, int b, int hq, int g,
                                                       int group, int r) {
  return r < group ? static_cast<const char*>(q) + (static_cast<std::size_t>(b) * hq + g * group + r) * d * esize
                   : nullptr;
}

/// Writes the attention core's merged state of the group's rows (or an empty state: lse -inf,
/// o left unwritten, never read) as partial `part` of each row of part_o / part_lse
/// [B * Hq, parts] (x D). All threads of the block.
template <int D, int NS, typename T>
__device__ void write_group_partial(char* smem, float* part_o, float* part_lse, int b, int hq, int g, int group,
                                    int parts, int part, bool work) {
  using Tile = AttendTile<D, NS, T>;
  const float* mo = Tile::merged_o(smem);
  const float* ml = Tile::merged_lse(smem);
  for (int idx = threadIdx.x; idx < group * D; idx += kThreads) {
    const int r = idx / D, i = idx % D;
    const std::size_t row = (static_cast<std::size_t>(b) * hq + g * group + r) * parts + part;
    if (work) part_o[row * D + i] = mo[r * D + i];
    if (i == 0) part_lse[row] = work ? ml[r] : -__int_as_float(0x7f800000);
  }
}

}  // namespace macattn::cuda::detail
