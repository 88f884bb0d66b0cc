// src/cuda/prefill_init.cu: MAC prefill ring initialisation (MAC_ATTENTION.md §6), exact
// prefix states computed directly (no downdate), as the CPU backends do.
//   kernel 1 (grid B): keeps or wipes each ring (chunked prefill continues a ready ring), then
//            sets position = P, ready = 1 (nothing later in the call reads them).
//   kernel 2 (grid row-tiles x Hkv x B): packs floor(16/G) kept rows x G heads into the 16 mma
//            rows of one AttendTile, each row attending [min(F, E(p)), E(p)), and writes the
//            ring rows directly (one split per block: there are W/(16/G) * Hkv blocks per
//            sequence already, and each K/V tile is shared by all of a block's rows).
#include "cuda/launch.cuh"
#include "cuda/mac_decide.cuh"

namespace macattn::cuda {
namespace detail {
namespace {

__global__ void prefill_prepare_kernel(PagedKVArgs kv, const std::int32_t* row_indptr, RingArgs ring, int hq,
                                       int head_dim) {
  const int b = blockIdx.x;
  const long long p_len = seq_len(kv, b);
  const long long first = p_len - (row_indptr[b + 1] - row_indptr[b]);
  const bool keep = ring.ready[b] != 0 && ring.position[b] == first;
  __syncthreads();  // everyone has read ready/position before thread 0 rewrites them
  if (!keep) {
    const std::size_t rows = static_cast<std::size_t>(ring.window) * hq;
    const std::size_t base = static_cast<std::size_t>(b) * rows;
    for (std::size_t e = threadIdx.x; e < rows * head_dim; e += blockDim.x) {
      store_float(ring.qring, ring.dtype, base * head_dim + e, 0.f);
      store_float(ring.oring, ring.dtype, base * head_dim + e, 0.f);
    }
    for (std::size_t r = threadIdx.x; r < rows; r += blockDim.x) ring.lring[base + r] = -__int_as_float(0x7f800000);
  }
  if (threadIdx.x == 0) {
    ring.position[b] = p_len;
    ring.ready[b] = 1;
  }
}

template <int D, int NS, typename T>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1) prefill_attend_kernel(PagedKVArgs kv, const void* q_post, const void* q_pre,
                                                                  int q_dtype, const std::int32_t* row_indptr,
                                                                  RingArgs ring, MacArgs mac, int hq, int group,
                                                                  float scale) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  __shared__ long long row_pos[kRows];  // position p of each mma row, -1 = padding
  const int rows_per_tile = kRows / group;
  const int tile = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const long long p_len = seq_len(kv, b);
  const long long n_rows = row_indptr[b + 1] - row_indptr[b];
  const long long first = p_len - n_rows;
  const long long kept_first = first > p_len - mac.window ? first : p_len - mac.window;
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  if (threadIdx.x < kRows) {
    const int r = threadIdx.x, k = r / group, h = g * group + r % group;
    const long long p = kept_first + static_cast<long long>(tile) * rows_per_tile + k;
    const bool real = k < rows_per_tile && p < p_len;
    row_pos[r] = real ? p : -1;
    RowKeys rk{0, 0, 0, 0};
    if (real) {
      const long long e = entry_end_dev(p, mac.rect);
      rk = RowKeys{e < mac.sinks ? e : mac.sinks, e, 0, 0};
      const std::size_t qrow = static_cast<std::size_t>(row_indptr[b] + (p - first)) * hq + h;
      q_rows[r] = static_cast<const char*>(q_post) + qrow * D * esize;
    } else {
      q_rows[r] = nullptr;
    }
    Tile::row_keys(smem)[r] = rk;
  }
  __syncthreads();
  if (row_pos[0] < 0) return;  // this tile is past the kept rows (uniform)
  long long lo = -1, hi = 0;
  for (int r = 0; r < kRows; ++r) {
    const RowKeys rk = Tile::row_keys(smem)[r];
    if (row_pos[r] < 0 || rk.a1 <= rk.a0) continue;
    lo = (lo < 0 || rk.a0 < lo) ? rk.a0 : lo;
    hi = rk.a1 > hi ? rk.a1 : hi;
  }
  const bool work = lo >= 0 && hi > lo;
  if (work) {
    stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);
    __syncthreads();
    Tile::run(smem, kv, b, g, KeySpans{lo, hi, 0, 0}, scale);
  }
  const float* mo = Tile::merged_o(smem);
  const float* ml = Tile::merged_lse(smem);
  const float ninf = -__int_as_float(0x7f800000);
  for (int idx = threadIdx.x; idx < kRows * D; idx += kThreads) {
    const int r = idx / D, i = idx % D;
    const long long p = row_pos[r];
    if (p < 0) continue;
    const int h = g * group + r % group;
    const std::size_t qrow = static_cast<std::size_t>(row_indptr[b] + (p - first)) * hq + h;
    const std::size_t wrow = (static_cast<std::size_t>(b) * mac.window + p % mac.window) * hq + h;
    const RowKeys rk = Tile::row_keys(smem)[r];
    const bool has = work && rk.a1 > rk.a0;
    store_float(ring.qring, ring.dtype, wrow * D + i, load_float(q_pre, q_dtype, qrow * D + i));
    store_float(ring.oring, ring.dtype, wrow * D + i, has ? mo[r * D + i] : 0.f);
    if (i == 0) ring.lring[wrow] = has ? ml[r] : ninf;
  }
}

}  // namespace
}  // namespace detail

void mac_prefill_init(const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv,
                      ConstTensor q_post, ConstTensor q_pre, const std::int32_t* row_indptr,
                      std::int32_t max_rows_per_seq, const MacRingsDevice& rings, Workspace& workspace, void* stream) {
  using namespace detail;
  constexpr const char* fn = "cuda::mac_prefill_init";
  (void)workspace;  // one split per block: no partials
  validate_kv(fn, shape, kv);
  validate_rings(fn, shape, config, kv, rings);
  validate_query(fn, "q_post", q_post.data, q_post.dtype);
  validate_query(fn, "q_pre", q_pre.data, q_pre.dtype);
  macattn::detail::require(q_pre.dtype == q_post.dtype, fn, ": q_pre.dtype = ", dtype_name(q_pre.dtype),
                           " but q_post.dtype = ", dtype_name(q_post.dtype));
  macattn::detail::require(row_indptr != nullptr, fn, ": row_indptr is null");
  macattn::detail::require(max_rows_per_seq >= 0, fn, ": max_rows_per_seq = ", max_rows_per_seq, ", must be >= 0");
  if (kv.batch_size == 0) return;
  const int hq = shape.num_q_heads, hkv = shape.num_kv_heads, d = shape.head_dim, group = shape.group_size();
  auto s = static_cast<cudaStream_t>(stream);
  const PagedKVArgs kva = kv_args(kv);
  const RingArgs ring = ring_args(rings);
  const MacArgs mac = mac_args(config, d);
  prefill_prepare_kernel<<<kv.batch_size, 256, 0, s>>>(kva, row_indptr, ring, hq, d);
  MACATTN_CUDA_CHECK_LAUNCH("prefill_prepare_kernel");
  const int kept = max_rows_per_seq < config.window ? max_rows_per_seq : config.window;
  if (kept == 0) return;
  const int rows_per_tile = kRows / group;
  const unsigned tiles = static_cast<unsigned>((kept + rows_per_tile - 1) / rows_per_tile);
  const float scale = shape.scale();
  dispatch(d, kv.dtype, [&]<int D, int NS, typename T>() {
    auto kernel = prefill_attend_kernel<D, NS, T>;
    constexpr std::size_t bytes = TileSmem<D, NS>::kBytes;
    allow_smem(kernel, bytes);
    kernel<<<dim3(tiles, hkv, kv.batch_size), kThreads, bytes, s>>>(kva, q_post.data, q_pre.data,
                                                                      static_cast<int>(q_post.dtype), row_indptr, ring,
                                                                      mac, hq, group, scale);
    MACATTN_CUDA_CHECK_LAUNCH("prefill_attend_kernel");
  });
}

}  // namespace macattn::cuda
