// src/cuda/mac_decode.cu: MAC decode (MAC_ATTENTION.md §5) in three or four kernels, every decision
// on the device (no host synchronisation; capturable in a CUDA graph; launch_pdl can launch
// them with programmatic dependent launch, off by default):
//   1. scan   (grid slot-tiles x Hq x B): distances of q_pre to the ring's rows in the fixed
//      fp32 order of core/distance.hpp, packed minimum per head by atomicMin. Also records
//      whether each sequence's ring is stale (not ready / at another position).
//   2. attend (grid Hkv x splits x B: the exact kernel's blocks, group-major): each block
//      computes the heads' amend state (band [E(m), E(t)) on a hit, the prefix
//      [min(F,E(t)), E(t)) on a miss) over one split of the group's span, through the same
//      AttendTile as exact decode, so a miss group costs what exact costs and an all-hit group
//      touches only its bands; the last blocks also compute the complete state (sinks + tail)
//      in kCompleteSplits parts, unless
//   2b. complete (grid kCompleteSplits x Hkv x B, small grids: side_complete()) computes them
//      on a side stream beside 1 and 2: no decision changes the complete state's keys.
//   The last of a group's attend blocks to arrive (a ticket counter the scan zeroes; with 2b,
//   after the group's complete parts are counted in) finishes the group (mac_group_finish.cuh):
//   reuse + amend partials into entry(t), the ring row (wiping a stale ring first), the complete
//   state into out, stats, and the reset of the scan's minimum for the next step. No kernel runs
//   after the attend kernel, so an all-hit step is two kernels deep.
#include "cuda/block_profile.cuh"
#include "cuda/launch.cuh"
#include "cuda/mac_decide.cuh"
#include "cuda/mac_group_finish.cuh"
#include "cuda/mac_scan.cuh"
#include "cuda/merge_splits.cuh"

namespace macattn::cuda {
namespace detail {
namespace {

constexpr int kScanThreads = 256;  // 16 half-warps, one candidate each at a time
// scan_direct: candidates whose loads one thread has in flight (4 measured faster than 8 at
// batch 1, 4 and 16 on the H200; h200.md).
constexpr int kDirectPerThread = 4;

// Scan of one head's candidates (mac_scan.cuh), then one atomicMin per block. Form (kScan*):
// kScanDirect, candidates [blockIdx.x * n, +n) by scan_direct (n = direct_block_candidates; no
// shared memory); kScanStaged, tiles [blockIdx.x * tiles_per_block, +tiles_per_block) of 64 by
// scan_staged (staged_smem_bytes). Also records whether each sequence's ring is stale (not ready
// / at another position). Rows at distance >= bound are dropped (mac_scan.cuh).
template <int D, typename RT, int Form>
__global__ void __launch_bounds__(kScanThreads) mac_scan_kernel(PagedKVArgs kv, const void* q_pre, int q_dtype,
                                                                RingArgs ring, MacArgs mac, int hq, int group,
                                                                int tiles_per_block, float bound, unsigned long long* best,
                                                                std::uint8_t* stale_flags, int* tickets, BlockStamps prof) {
  extern __shared__ __align__(16) char scan_smem[];
  grid_dependency_wait();  // q_pre, the page table and the rings come from earlier kernels
  allow_dependents();
  stamp(prof, 0);
  const int h = blockIdx.y, b = blockIdx.z;
  const long long t = seq_len(kv, b) - 1;
  const bool stale = ring.ready[b] == 0 || ring.position[b] != t;
  if (blockIdx.x == 0 && h == 0 && threadIdx.x == 0) stale_flags[b] = stale ? 1 : 0;
  // The attend kernel's tickets of this step start at 0 (it runs after this kernel, the last
  // step's after the previous one).
  if (blockIdx.x == 0 && threadIdx.x == 0 && h % group == 0) tickets[static_cast<std::size_t>(b) * (hq / group) + h / group] = 0;
  if (t < mac.min_context) return;
  const ScanRows<RT> rows = scan_rows<RT>(ring, mac, hq, D, b, h, t, stale);
  float q[D / 16];
  const std::size_t qbase = (static_cast<std::size_t>(b) * hq + h) * D + (threadIdx.x & 15);
#pragma unroll
  for (int k = 0; k < D / 16; ++k) q[k] = load_float(q_pre, q_dtype, qbase + k * 16);
  unsigned long long m;
  if constexpr (Form == kScanDirect) {
    constexpr int kPer = direct_block_candidates<D, RT, kScanThreads, kDirectPerThread>();
    m = scan_direct<D, RT, kScanThreads, kDirectPerThread>(q_pre, q_dtype, qbase - (threadIdx.x & 15), q, rows,
                                                            blockIdx.x * kPer, bound);
  } else
    m = scan_staged<D, RT, kScanThreads>(scan_smem, q, rows, blockIdx.x * tiles_per_block, tiles_per_block, bound);
  if (threadIdx.x == 0 && m != kNoMatch) atomicMin(best + static_cast<std::size_t>(b) * hq + h, m);
  stamp(prof, 1);
}

template <int D, int NS, typename T>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1) mac_attend_kernel(PagedKVArgs kv, const void* q, int q_dtype, RingArgs ring,
                                                              MacArgs mac, int hq, int group, int splits, float scale,
                                                              const unsigned long long* best,
                                                              const std::uint8_t* stale_flags, float* part_o,
                                                              float* part_lse, bool side_complete, FinishArgs fa,
                                                              BlockStamps prof) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  __shared__ long long starts[kRows];
  __shared__ __align__(8) char dec_raw[kRows * sizeof(Decision)];  // the rows' decisions, for the finish
  Decision* dec = reinterpret_cast<Decision*>(dec_raw);
  __shared__ long long step_t;  // t and the stale flag again for the finish (not held in registers
  __shared__ int step_stale;    // across the attention runs)
  grid_dependency_wait();  // the scan's minima and stale flags
  allow_dependents();
  stamp(prof, 0);
  // Group-major grid (Hkv x splits x B): every group's split 0, which holds a hit's band, is
  // among the first blocks dispatched (measured: all-hit 0.1-0.4 us shorter at batch 1-16).
  const int g = blockIdx.x, split = blockIdx.y, b = blockIdx.z;
  const long long t = seq_len(kv, b) - 1;
  const long long new_end = entry_end_dev(t, mac.rect);
  const bool stale = stale_flags[b] != 0;
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  const int parts = splits + kCompleteSplits;
  if (threadIdx.x < kRows) q_rows[threadIdx.x] = group_query_row(q, esize, D, b, hq, g, group, threadIdx.x);
  if (threadIdx.x == 0) {
    step_t = t;
    step_stale = stale ? 1 : 0;
  }
  __syncthreads();
  // The query (every run of this block uses it) is staged first: its loads travel with the
  // scan minimum's instead of waiting for the decision.
  stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);
  if (threadIdx.x < kRows) {
    const int r = threadIdx.x, h = g * group + r;
    const bool real = r < group;
    // Loaded unconditionally, so it travels with the position and stale-flag loads instead of
    // waiting for them (one dependent round trip less before the first K/V copy).
    const unsigned long long best_raw = real ? best[static_cast<std::size_t>(b) * hq + h] : kNoMatch;
    long long start = new_end;
    if (real) {
      const unsigned long long m = t < mac.min_context ? kNoMatch : best_raw;
      // A stale step decides as a wiped ring does: no hit (its best row has lse = -inf); the
      // stats still report the best row the scan found.
      Decision x = decide(stale ? kNoMatch : m, t, mac, ring, b, h, hq);
      if (stale && m != kNoMatch) {
        x.matched = first_candidate(t, mac.window) + static_cast<long long>(m & 0xffffffffull);
        x.distance = __uint_as_float(static_cast<unsigned>(m >> 32));
      }
      start = x.start;
      dec[r] = x;
    }
    starts[r] = start;
    Tile::row_keys(smem)[r] = real ? RowKeys{start, new_end, 0, 0} : RowKeys{0, 0, 0, 0};
  }
  __syncthreads();
  stamp(prof, 1);
  long long lo = new_end, sink_end = 0;
  for (int r = 0; r < group; ++r) {
    lo = starts[r] < lo ? starts[r] : lo;
    const long long e = starts[r] < mac.sinks ? starts[r] : mac.sinks;
    sink_end = e > sink_end ? e : sink_end;
  }
  // Writes the rows' state of the run just done (or an empty state) as partial `part`.
  auto write_partial = [&](int part, bool work) {
    write_group_partial<D, NS, T>(smem, part_o, part_lse, b, hq, g, group, parts, part, work);
  };
  auto attend = [&](const KeySpans& spans) {
    __syncthreads();  // query tile and row keys written; the previous run's results read
    Tile::run(smem, kv, b, g, spans, scale, group);
  };
  // Amend: this split of the group's span [min start, E(t)).
  KeySpans spans{0, 0, 0, 0};
  split_range(lo, new_end, splits, split, &spans.lo0, &spans.hi0);
  const bool amend_work = spans.count() > 0;
  if (amend_work) attend(spans);
  write_partial(split, amend_work);
  stamp(prof, 2);
  // Complete parts owned by this block: part j of the tail [E(t), t+1); part 0 also the sinks.
  // Consecutive parts owned by the block are one run over their union (its state is written
  // as the first part's partial, the others' as empty): the finish merges them all anyway.
  for (int ja = side_complete ? kCompleteSplits : 0; ja < kCompleteSplits;) {  // side: mac_complete_kernel's
    if (complete_owner(ja, splits, lo, new_end) != split) {
      ++ja;
      continue;
    }
    int jb = ja;
    while (jb + 1 < kCompleteSplits && complete_owner(jb + 1, splits, lo, new_end) == split) ++jb;
    long long a, z, a2, z2;
    split_range(new_end, t + 1, kCompleteSplits, ja, &a, &z);
    split_range(new_end, t + 1, kCompleteSplits, jb, &a2, &z2);
    const KeySpans cs{0, ja == 0 ? sink_end : 0, a, z2 > a ? z2 : a};
    const bool work = cs.count() > 0;
    if (work) {
      __syncthreads();  // everyone has finished reading the previous results
      if (threadIdx.x < group) {
        const long long start = starts[threadIdx.x];
        Tile::row_keys(smem)[threadIdx.x] = RowKeys{0, start < mac.sinks ? start : mac.sinks, new_end, t + 1};
      }
      stamp(prof, 3);  // the last run's start (blocks that run a complete part)
      attend(cs);
      stamp(prof, 4);
    }
    write_partial(splits + ja, work);
    for (int j = ja + 1; j <= jb; ++j) write_partial(splits + j, false);
    ja = jb + 1;
  }
  // The last of the group's blocks finishes it (with the side kernel, once its complete parts are in).
  const std::size_t gid = static_cast<std::size_t>(b) * gridDim.x + g;
  if (!take_group_ticket(fa.tickets + gid, splits)) return;
  if (side_complete) wait_for_count(fa.complete_done + gid, kCompleteSplits);
  stamp(prof, 5);
  constexpr int kScratch = static_cast<int>((TileSmem<D, NS>::kKV > TileSmem<D, NS>::kMerge ? TileSmem<D, NS>::kKV
                                                                                             : TileSmem<D, NS>::kMerge) /
                                            sizeof(float));
  finish_group<D>(reinterpret_cast<float*>(smem), kScratch, ring, mac, fa, part_o, part_lse, q_dtype, hq, group, splits,
                  b, g, step_t, step_stale != 0, dec);
  if (side_complete && threadIdx.x == 0) fa.complete_done[gid] = 0;
  stamp(prof, 6);
}

// MAC's complete state on its own (when side_complete(); grid kCompleteSplits x Hkv x B,
// launched on the workspace's side stream beside the scan and the attend kernel): part j of the
// tail [E(t), t+1), part 0 also the sinks [0, min(F, E(t))), as partial splits + j of every
// row of the group. No decision changes these keys: a hit needs E(m) >= F, so its sinks
// [0, min(F, E(m))) are [0, F) = [0, min(F, E(t))), and a miss's (or a stale ring's) start is
// min(F, E(t)) itself.
template <int D, int NS, typename T>
__global__ void __launch_bounds__(kThreads, D <= 128 ? 3 : 1) mac_complete_kernel(PagedKVArgs kv, const void* q,
                                                                                   int q_dtype, MacArgs mac, int hq,
                                                                                   int group, int splits, float scale,
                                                                                   float* part_o, float* part_lse,
                                                                                   int* complete_done, BlockStamps prof) {
  extern __shared__ __align__(128) char smem[];
  using Tile = AttendTile<D, NS, T>;
  __shared__ const void* q_rows[kRows];
  grid_dependency_wait();
  allow_dependents();
  stamp(prof, 0);
  const int j = blockIdx.x, g = blockIdx.y, b = blockIdx.z;
  const long long t = seq_len(kv, b) - 1;
  const long long new_end = entry_end_dev(t, mac.rect);
  const long long sink_end = new_end < mac.sinks ? new_end : mac.sinks;
  const std::size_t esize = q_dtype == kF32 ? 4 : 2;
  const int parts = splits + kCompleteSplits;
  if (threadIdx.x < kRows) {
    const int r = threadIdx.x;
    q_rows[r] = group_query_row(q, esize, D, b, hq, g, group, r);
    Tile::row_keys(smem)[r] = r < group ? RowKeys{0, sink_end, new_end, t + 1} : RowKeys{0, 0, 0, 0};
  }
  __syncthreads();
  stage_query_rows<D, T>(Tile::q_tile(smem), q_rows, q_dtype);
  long long a, z;
  split_range(new_end, t + 1, kCompleteSplits, j, &a, &z);
  const KeySpans cs{0, j == 0 ? sink_end : 0, a, z};
  const bool work = cs.count() > 0;
  if (work) {
    __syncthreads();  // query tile written
    Tile::run(smem, kv, b, g, cs, scale, group);
  }
  write_group_partial<D, NS, T>(smem, part_o, part_lse, b, hq, g, group, parts, splits + j, work);
  // Counted in for the attend kernel's finish of the group (which waits for all kCompleteSplits).
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(complete_done + static_cast<std::size_t>(b) * gridDim.y + g, 1);
  }
  stamp(prof, 1);
}

}  // namespace
}  // namespace detail

void mac_decode(const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv, ConstTensor q_post,
                ConstTensor q_pre, const MacRingsDevice& rings, Tensor out, float* lse, HeadStats* head_stats,
                Workspace& workspace, void* stream) {
  using namespace detail;
  constexpr const char* fn = "cuda::mac_decode";
  validate_kv(fn, shape, kv);
  validate_rings(fn, shape, config, kv, rings);
  validate_query(fn, "q_post", q_post.data, q_post.dtype);
  validate_query(fn, "q_pre", q_pre.data, q_pre.dtype);
  validate_query(fn, "out", out.data, out.dtype);
  macattn::detail::require(q_pre.dtype == q_post.dtype && out.dtype == q_post.dtype, fn,
                           ": q_post, q_pre and out must share one dtype (got ", dtype_name(q_post.dtype), ", ",
                           dtype_name(q_pre.dtype), ", ", dtype_name(out.dtype), ")");
  if (kv.batch_size == 0) return;
  const int hq = shape.num_q_heads, hkv = shape.num_kv_heads, d = shape.head_dim, group = shape.group_size();
  const int splits = plan_splits(kv.batch_size, hkv, d, kv.max_seq_len);
  const std::int64_t heads = static_cast<std::int64_t>(kv.batch_size) * hq;
  require_workspace(fn, workspace, shape, heads, splits + kCompleteSplits, heads, kv.batch_size);
  const auto& ws = workspace.buffers();
  auto s = static_cast<cudaStream_t>(stream);
  const PagedKVArgs kva = kv_args(kv);
  const RingArgs ring = ring_args(rings);
  const MacArgs mac = mac_args(config, d);
  const int qd = static_cast<int>(q_post.dtype);
  ProfileScope prof(s);  // MACATTN_CUDA_PROFILE=1 (block_profile.cuh)

  // Rows that cannot be hits are dropped after their first 64 dims (scan_direct) unless the
  // caller reads the best row of a miss (per-head stats with config.report_miss_matches), as on
  // the CPU; without a bound every row is read whole (scan_staged).
  const float bound = head_stats && config.report_miss_matches ? __builtin_huge_valf() : mac.threshold;
  const int form = bound < __builtin_huge_valf() ? scan_form() : kScanStaged;
  const int scan_tiles = (config.window + kScanSlots - 1) / kScanSlots;
  int per = 1;
  if (form == kScanStaged) {
    // A block takes `per` consecutive tiles of a head (double-buffered in shared memory); `per`
    // grows while the grid still fills the chip about four blocks deep, so large batches get
    // fewer, longer blocks with more bytes in flight each.
    const std::int64_t heads_total = static_cast<std::int64_t>(hq) * kv.batch_size;
    const std::int64_t target = 4 * static_cast<std::int64_t>(device_sm_count());
    while (per * 2 <= scan_tiles && ((scan_tiles + per * 2 - 1) / (per * 2)) * heads_total >= target) per *= 2;
  }
  auto launch_scan = [&]<int D, typename RT, int Form>() {
    auto kernel = mac_scan_kernel<D, RT, Form>;
    constexpr int kDirectPer = direct_block_candidates<D, RT, kScanThreads, kDirectPerThread>();
    const unsigned blocks = Form == kScanDirect ? static_cast<unsigned>((config.window + kDirectPer - 1) / kDirectPer)
                                                : static_cast<unsigned>((scan_tiles + per - 1) / per);
    const dim3 scan_grid(blocks, hq, kv.batch_size);
    constexpr std::size_t bytes = Form == kScanDirect ? 0 : staged_smem_bytes<D, RT>();
    constexpr const char* name = Form == kScanDirect ? "mac_scan_kernel (direct)" : "mac_scan_kernel";
    allow_smem(kernel, bytes);
    launch_pdl("mac_scan_kernel", kernel, scan_grid, dim3(kScanThreads), bytes, s, kva, q_pre.data, qd, ring, mac, hq,
               group, per, bound, ws.best, ws.seq_flags, ws.group_counters, prof.kernel(name, scan_grid, {"scan"}));
  };
  auto launch_scan_pd = [&]<int D, typename RT>() {
    if (form == kScanDirect) launch_scan.template operator()<D, RT, kScanDirect>();
    else launch_scan.template operator()<D, RT, kScanStaged>();
  };
  auto launch_scan_d = [&]<typename RT>() {
    if (d == 64) launch_scan_pd.template operator()<64, RT>();
    else if (d == 128) launch_scan_pd.template operator()<128, RT>();
    else launch_scan_pd.template operator()<256, RT>();
  };
  const float scale = shape.scale();
  // The groups' counters: attend tickets, then side complete parts done ([B * Hkv] each).
  int* complete_done = ws.group_counters + ws.capacity_heads;
  FinishArgs fa;
  fa.q_pre = q_pre.data;
  fa.out = out.data;
  fa.lse = lse;
  fa.head_stats = head_stats;
  fa.best = ws.best;
  fa.tickets = ws.group_counters;
  fa.complete_done = complete_done;
  // The complete kernel on the side stream (side_complete() says when), forked from `s` here and
  // joined after the attend kernel (a fork/join that stream capture records as graph edges). The
  // attend kernel's finishing blocks wait for its parts by a counter, not by the join: the side
  // kernel starts with the scan (before the attend kernel exists), and at most one block per
  // group waits, so the side kernel's blocks always find room.
  const bool side = side_complete(static_cast<std::int64_t>(kCompleteSplits) * hkv * kv.batch_size);
  auto side_stream = static_cast<cudaStream_t>(ws.side_stream);
  if (side) {
    check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(ws.fork_event), s), "cudaEventRecord (fork)");
    check_cuda(cudaStreamWaitEvent(side_stream, static_cast<cudaEvent_t>(ws.fork_event), 0), "cudaStreamWaitEvent (fork)");
    dispatch(d, kv.dtype, [&]<int D, int NS, typename T>() {
      auto kernel = mac_complete_kernel<D, NS, T>;
      constexpr std::size_t bytes = TileSmem<D, NS>::kBytes;
      allow_smem(kernel, bytes);
      const dim3 grid(kCompleteSplits, hkv, kv.batch_size);
      launch_pdl("mac_complete_kernel", kernel, grid, dim3(kThreads), bytes, side_stream, kva, q_post.data, qd, mac,
                 hq, group, splits, scale, ws.part_o, ws.part_lse, complete_done,
                 prof.kernel("mac_complete_kernel", grid, {"complete"}));
    });
    check_cuda(cudaEventRecord(static_cast<cudaEvent_t>(ws.join_event), side_stream), "cudaEventRecord (join)");
  }
  if (rings.ring_dtype == DType::bf16) launch_scan_d.template operator()<__nv_bfloat16>();
  else if (rings.ring_dtype == DType::f16) launch_scan_d.template operator()<__half>();
  else launch_scan_d.template operator()<float>();
  dispatch(d, kv.dtype, [&]<int D, int NS, typename T>() {
    auto kernel = mac_attend_kernel<D, NS, T>;
    constexpr std::size_t bytes = TileSmem<D, NS>::kBytes;
    allow_smem(kernel, bytes);
    const dim3 grid(hkv, splits, kv.batch_size);
    launch_pdl("mac_attend_kernel", kernel, grid, dim3(kThreads), bytes, s, kva, q_post.data, qd, ring, mac, hq, group,
               splits, scale, ws.best, ws.seq_flags, ws.part_o, ws.part_lse, side, fa,
               prof.kernel("mac_attend_kernel", grid,
                           {"decide", "amend", "to complete run", "complete run", "to the finish", "finish"}));
  });
  if (side)
    check_cuda(cudaStreamWaitEvent(s, static_cast<cudaEvent_t>(ws.join_event), 0), "cudaStreamWaitEvent (join)");
  prof.finish();
}

}  // namespace macattn::cuda
