// src/cuda/exact_decode.cu: exact decode attention, flash-decoding style.
//   kernel 1 (grid splits x Hkv x B): the G query heads of a group attend to one split of the
//            sequence's keys through AttendTile; each writes a partial (o, lse).
//   kernel 2 (grid B*Hq): merges the splits' partials into out and lse.
// Both go through launch_pdl (programmatic dependent launch when MACATTN_CUDA_PDL=1).
#include <algorithm>

#include "cuda/block_profile.cuh"
#include "cuda/launch.cuh"
#include "cuda/merge_splits.cuh"

namespace macattn::cuda {
namespace detail {
namespace {

template <int D, int NS, typename T>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1) exact_split_kernel(PagedKVArgs kv, const void* q, int q_dtype, int hq,
                                                               int group, int splits, float scale, float* part_o,
                                                               float* part_lse, BlockStamps prof) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  grid_dependency_wait();  // q and the cache come from earlier kernels
  allow_dependents();
  stamp(prof, 0);
  const int split = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  if (threadIdx.x < kRows) q_rows[threadIdx.x] = group_query_row(q, esize, D, b, hq, g, group, threadIdx.x);
  __syncthreads();
  // The query is staged before the length is known (it does not depend on it), so its loads
  // travel with the page-table loads of seq_len() instead of after them.
  const long long len = seq_len(kv, b);
  stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);
  long long lo, hi;
  split_range(0, len, splits, split, &lo, &hi);
  if (threadIdx.x < kRows) Tile::row_keys(smem)[threadIdx.x] = threadIdx.x < group ? RowKeys{0, len, 0, 0} : RowKeys{0, 0, 0, 0};
  __syncthreads();
  stamp(prof, 1);
  if (lo < hi) Tile::run(smem, kv, b, g, KeySpans{lo, hi, 0, 0}, scale, group);
  stamp(prof, 2);
  write_group_partial<D, NS, T>(smem, part_o, part_lse, b, hq, g, group, splits, split, lo < hi);
  if (prof.p) {
    __syncthreads();
    stamp(prof, 3);
  }
}

__global__ void exact_merge_kernel(const float* part_o, const float* part_lse, int splits, int head_dim, void* out,
                                   int out_dtype, float* lse, BlockStamps prof) {
  grid_dependency_wait();  // the split kernel's partials
  allow_dependents();
  stamp(prof, 0);
  const std::size_t row = blockIdx.x;
  float o, l;
  merge_splits_block(part_o, part_lse, row, splits, 0, splits, head_dim, &o, &l);
  if (threadIdx.x < head_dim) store_float(out, out_dtype, row * head_dim + threadIdx.x, o);
  if (lse && threadIdx.x == 0) lse[row] = l;
  stamp(prof, 1);
}

}  // namespace
}  // namespace detail

void exact_decode(const AttentionShape& shape, const PagedKVDevice& kv, ConstTensor q_post, Tensor out, float* lse,
                  Workspace& workspace, void* stream) {
  using namespace detail;
  constexpr const char* fn = "cuda::exact_decode";
  validate_kv(fn, shape, kv);
  validate_query(fn, "q_post", q_post.data, q_post.dtype);
  validate_query(fn, "out", out.data, out.dtype);
  macattn::detail::require(out.dtype == q_post.dtype, fn, ": out.dtype = ", dtype_name(out.dtype),
                           " but q_post.dtype = ", dtype_name(q_post.dtype));
  if (kv.batch_size == 0) return;
  const int hq = shape.num_q_heads, hkv = shape.num_kv_heads, d = shape.head_dim, group = shape.group_size();
  const int splits = plan_splits(kv.batch_size, hkv, d, kv.max_seq_len);
  const std::int64_t rows = static_cast<std::int64_t>(kv.batch_size) * hq;
  require_workspace(fn, workspace, shape, rows, splits, 0, 0);
  const auto& ws = workspace.buffers();
  auto s = static_cast<cudaStream_t>(stream);
  const PagedKVArgs args = kv_args(kv);
  const float scale = shape.scale();
  ProfileScope prof(s);  // MACATTN_CUDA_PROFILE=1 (block_profile.cuh)
  const dim3 split_grid(splits, hkv, kv.batch_size);
  dispatch(d, kv.dtype, [&]<int D, int NS, typename T>() {
    auto kernel = exact_split_kernel<D, NS, T>;
    constexpr std::size_t bytes = TileSmem<D, NS>::kBytes;
    allow_smem(kernel, bytes);
    launch_pdl("exact_split_kernel", kernel, split_grid, dim3(kThreads), bytes, s, args, q_post.data,
               static_cast<int>(q_post.dtype), hq, group, splits, scale, ws.part_o, ws.part_lse,
               prof.kernel("exact_split_kernel", split_grid, {"stage query", "attend", "write partial"}));
  });
  // Threads per element: enough that each holds at most 16 splits in registers (merge_splits_block's
  // one round trip), at most 4 (D=256, 128) or 8 (D=64). Few splits (batch 16: 3) get one thread per
  // element: a 512-thread block of 56 registers fits twice per SM, a 128-thread one many times.
  const int max_parts = d == 256 ? 4 : 1024 / d / 2;
  const int merge_threads = d * std::clamp((splits + 15) / 16, 1, max_parts);
  const dim3 merge_grid(static_cast<unsigned>(rows));
  launch_pdl("exact_merge_kernel", exact_merge_kernel, merge_grid, dim3(merge_threads), 0, s,
             static_cast<const float*>(ws.part_o), static_cast<const float*>(ws.part_lse), splits, d, out.data,
             static_cast<int>(out.dtype), lse, prof.kernel("exact_merge_kernel", merge_grid, {"merge"}));
  prof.finish();
}

}  // namespace macattn::cuda
