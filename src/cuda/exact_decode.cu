// src/cuda/exact_decode.cu: exact decode attention, flash-decoding style, one kernel by default:
//   grid splits x Hkv x B: the G query heads of a group attend to one split of the sequence's
//   keys through AttendTile. A sequence whose keys fit one split writes out and lse directly;
//   otherwise each working split writes a partial (o, lse), takes a ticket on its group's counter
//   (after a fence), and the last one merges the group's partials (a kernel launch less than a
//   separate merge kernel: docs/benchmarks/h200.md). MACATTN_CUDA_EXACT_MERGE=kernel keeps the
//   older split kernel + merge kernel (grid B*Hq) for comparison.
// Both go through launch_pdl (programmatic dependent launch when MACATTN_CUDA_PDL=1).
#include <cstdlib>
#include <cstring>

#include "cuda/launch.cuh"
#include "cuda/merge_splits.cuh"

namespace macattn::cuda {
namespace detail {
namespace {

// tickets null: every split writes its partial (an empty split lse = -inf) for exact_merge_kernel.
// tickets non-null: the in-kernel merge described at the top (tickets[B*Hkv], zero between calls).
template <int D, int NS, typename T>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1) exact_split_kernel(PagedKVArgs kv, const void* q, int q_dtype, int hq,
                                                               int group, int splits, float scale, float* part_o,
                                                               float* part_lse, unsigned* tickets, void* out,
                                                               float* lse) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  __shared__ float s_lse[kRows];
  __shared__ bool s_last;
  grid_dependency_wait();  // q and the cache come from earlier kernels
  allow_dependents();
  const int split = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const long long len = seq_len(kv, b);
  const int n_work = tickets ? working_splits(0, len, splits) : splits;
  if (split >= n_work) return;  // no keys here (in-kernel merge only: nobody waits for this split)
  long long lo, hi;
  split_range(0, len, splits, split, &lo, &hi);
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  const std::size_t row0 = static_cast<std::size_t>(b) * hq + static_cast<std::size_t>(g) * group;
  if (threadIdx.x < kRows) {
    const int r = threadIdx.x;
    const bool real = r < group;
    q_rows[r] = real ? static_cast<const char*>(q) + (row0 + r) * D * esize : nullptr;
    Tile::row_keys(smem)[r] = real ? RowKeys{0, len, 0, 0} : RowKeys{0, 0, 0, 0};
  }
  __syncthreads();
  if (lo < hi) {
    stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);
    __syncthreads();
    Tile::run(smem, kv, b, g, KeySpans{lo, hi, 0, 0}, scale);
  }
  const float* mo = Tile::merged_o(smem);
  const float* ml = Tile::merged_lse(smem);
  const float ninf = -__int_as_float(0x7f800000);
  if (tickets && n_work == 1) {  // the whole sequence was this block's: no partials
    for (int idx = threadIdx.x; idx < group * D; idx += kThreads) {
      const int r = idx / D, i = idx % D;
      store_float(out, q_dtype, (row0 + r) * D + i, lo < hi ? mo[r * D + i] : 0.f);
      if (lse && i == 0) lse[row0 + r] = lo < hi ? ml[r] : ninf;
    }
    return;
  }
  for (int idx = threadIdx.x; idx < group * D; idx += kThreads) {
    const int r = idx / D, i = idx % D;
    const std::size_t row = (row0 + r) * splits + split;
    if (lo < hi) part_o[row * D + i] = mo[r * D + i];  // an empty split's o is never read
    if (i == 0) part_lse[row] = lo < hi ? ml[r] : ninf;
  }
  if (!tickets) return;
  // Publish the partial, then take a ticket; the group's last working split merges.
  __threadfence();
  __syncthreads();
  unsigned* ticket = tickets + static_cast<std::size_t>(b) * gridDim.y + g;
  if (threadIdx.x == 0) s_last = atomicAdd(ticket, 1u) == static_cast<unsigned>(n_work - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence();  // the other splits' partials are visible (they fenced before their tickets)
  float* w = reinterpret_cast<float*>(smem);  // the K/V stages are free: [group][n_work] weights
  group_split_weights(part_lse, row0, splits, 0, n_work, group, w, s_lse);
  for (int idx = threadIdx.x; idx < group * D; idx += kThreads) {
    const int r = idx / D, i = idx % D;
    const float o = weighted_partials(part_o, row0 + r, splits, 0, n_work, w + r * n_work, D, i);
    store_float(out, q_dtype, (row0 + r) * D + i, o);
    if (lse && i == 0) lse[row0 + r] = s_lse[r];
  }
  if (threadIdx.x == 0) *ticket = 0;  // every working split has taken its ticket
}

__global__ void exact_merge_kernel(const float* part_o, const float* part_lse, int splits, int head_dim, void* out,
                                   int out_dtype, float* lse) {
  __shared__ float w[kMaxSplits + 1];
  grid_dependency_wait();  // the split kernel's partials
  allow_dependents();
  const std::size_t row = blockIdx.x;
  float o, l;
  merge_splits_block(part_o, part_lse, row, splits, 0, splits, head_dim, w, &o, &l);
  if (threadIdx.x < head_dim) store_float(out, out_dtype, row * head_dim + threadIdx.x, o);
  if (lse && threadIdx.x == 0) lse[row] = l;
}

}  // namespace

bool exact_merge_kernel_enabled() {
  static const bool v = [] {
    const char* env = std::getenv("MACATTN_CUDA_EXACT_MERGE");
    return env != nullptr && std::strcmp(env, "kernel") == 0;
  }();
  return v;
}

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
  require_workspace(fn, workspace, shape, rows, splits, 0, kv.batch_size);
  const auto& ws = workspace.buffers();
  auto s = static_cast<cudaStream_t>(stream);
  const PagedKVArgs args = kv_args(kv);
  const float scale = shape.scale();
  const bool merge_kernel = exact_merge_kernel_enabled();
  unsigned* tickets = merge_kernel ? nullptr : ws.tickets;
  dispatch(d, kv.dtype, [&]<int D, int NS, typename T>() {
    auto kernel = exact_split_kernel<D, NS, T>;
    constexpr std::size_t bytes = TileSmem<D, NS>::kBytes;
    allow_smem(kernel, bytes);
    launch_pdl("exact_split_kernel", kernel, dim3(splits, hkv, kv.batch_size), dim3(kThreads), bytes, s, args,
               q_post.data, static_cast<int>(q_post.dtype), hq, group, splits, scale, ws.part_o, ws.part_lse, tickets,
               out.data, lse);
  });
  if (!merge_kernel) return;
  const int merge_threads = d * (d == 256 ? 4 : 1024 / d / 2);  // 4 (D=256) or 8/4 threads per element
  launch_pdl("exact_merge_kernel", exact_merge_kernel, dim3(static_cast<unsigned>(rows)), dim3(merge_threads), 0, s,
             static_cast<const float*>(ws.part_o), static_cast<const float*>(ws.part_lse), splits, d, out.data,
             static_cast<int>(out.dtype), lse);
}

}  // namespace macattn::cuda
