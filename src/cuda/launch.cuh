// src/cuda/launch.cuh: what the CUDA kernels' host launchers share: argument structs, the
// dispatch over head dim and K/V type, the split plan, and error checks. Internal.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "core/check.hpp"
#include "cuda/attend_tile.cuh"
#include "cuda/split_plan.hpp"
#include "macattn/cuda.hpp"

namespace macattn::cuda::detail {

static_assert(kSplitTileKeys == kBlockKeys, "the split plan's tiles are the attention core's");

/// Throws macattn::Error for a failed CUDA call, naming the call site and CUDA's message.
inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) macattn::detail::fail("CUDA error in ", what, ": ", cudaGetErrorString(e));
}
#define MACATTN_CUDA_CHECK(call) ::macattn::cuda::detail::check_cuda((call), #call)
#define MACATTN_CUDA_CHECK_LAUNCH(name) ::macattn::cuda::detail::check_cuda(cudaGetLastError(), name)

/// Device view of the rings (MacRingsDevice).
struct RingArgs {
  void* qring = nullptr;
  void* oring = nullptr;
  float* lring = nullptr;
  std::int64_t* position = nullptr;
  std::uint8_t* ready = nullptr;
  int dtype = 0;
  int window = 0;
};

/// Longest hit band MAC's finish kernel can attend itself (mac_band.cuh; two registers per key
/// and thread).
constexpr int kFinishBandMax = 8;

/// MAC parameters on the device.
struct MacArgs {
  int window = 0, rect = 0, sinks = 0;
  long long min_context = 0;
  float threshold = 0.f;
  int finish_band = 0;  // longest hit band the finish kernel attends itself (mac_band.cuh; 0 = none)
};

inline MacArgs mac_args(const MacConfig& config, int head_dim) {
  MacArgs m;
  m.window = config.window;
  m.rect = config.rect_offset;
  m.sinks = config.front_sinks;
  m.min_context = config.min_context;
  m.threshold = config.threshold(head_dim);
  return m;
}

inline PagedKVArgs kv_args(const PagedKVDevice& kv) {
  PagedKVArgs a;
  a.k = static_cast<const char*>(kv.k_pages);
  a.v = static_cast<const char*>(kv.v_pages);
  a.indptr = kv.indptr;
  a.indices = kv.indices;
  a.last_page_len = kv.last_page_len;
  a.page_size = kv.page_size;
  a.num_kv_heads = kv.num_kv_heads;
  a.hnd = kv.layout == KVLayout::HND ? 1 : 0;
  a.dtype = static_cast<std::int32_t>(kv.dtype);
  return a;
}
inline RingArgs ring_args(const MacRingsDevice& r) {
  return {r.qring, r.oring, r.lring, r.position, r.ready, static_cast<int>(r.ring_dtype), r.window};
}

/// Pipeline depth. Measured on the H200 (docs/benchmarks/h200.md): for D = 128 two stages,
/// which let three blocks share an SM, beat three or four stages with fewer blocks. The
/// environment variable MACATTN_CUDA_STAGES (2, 3 or 4) picks another depth for D = 128.
template <int D> constexpr int stages() { return D == 64 ? 4 : 2; }
int stages_override();  // 0 = none

/// Calls f.template operator()<D, NS, T>() for the runtime head dim, pipeline depth and K/V
/// dtype (validated before).
template <typename F>
void dispatch(int head_dim, DType kv_dtype, F&& f) {
  const bool bf = kv_dtype == DType::bf16;
  switch (head_dim) {
    case 64: bf ? f.template operator()<64, 4, __nv_bfloat16>() : f.template operator()<64, 4, __half>(); break;
    case 128:
      switch (stages_override()) {
        case 2: bf ? f.template operator()<128, 2, __nv_bfloat16>() : f.template operator()<128, 2, __half>(); break;
        case 4: bf ? f.template operator()<128, 4, __nv_bfloat16>() : f.template operator()<128, 4, __half>(); break;
        case 3: bf ? f.template operator()<128, 3, __nv_bfloat16>() : f.template operator()<128, 3, __half>(); break;
        default: bf ? f.template operator()<128, 2, __nv_bfloat16>() : f.template operator()<128, 2, __half>(); break;
      }
      break;
    default: bf ? f.template operator()<256, 2, __nv_bfloat16>() : f.template operator()<256, 2, __half>(); break;
  }
}

/// The shared-memory carveout preference (percent of the most an SM can have, or -1 for the
/// driver's choice, cudaSharedmemCarveoutDefault) of MAC's decode kernels, `kind` one of "scan",
/// "complete", "attend", "finish". By default 100 when `two_per_sm` (attend_two_per_sm: the
/// attend kernel under PDL beside the side complete kernel and the scan), else -1. Why: an SM's
/// split between L1 and shared memory changes only while the SM is idle, and the driver sizes it
/// for the kernel whose block lands first; a kernel trace on the H200 showed the finish kernel
/// launching only as the complete kernel ended, as if the SMs the complete kernel (or the scan)
/// had configured could not take the overlapping attend kernel's blocks before draining. With
/// every MAC kernel asking for the most shared memory, batch-1 all-hit steps took 0.2-0.7 us
/// less (h200.md, sixteenth session); at batch 16 it cost 0.5 us, so only two_per_sm uses it.
/// The split outlives these kernels: kernels launched after them under PDL keep 28 KB of L1 until
/// an SM goes idle (the engine launches o_proj without PDL after a MAC layer for that reason:
/// docs/benchmarks/e2e_cuda.md, twenty-second session).
/// MACATTN_CUDA_CARVEOUT=0..100 (or -1) overrides it for the kernels listed in
/// MACATTN_CUDA_CARVEOUT_KERNELS (comma-separated; all four when unset). Read on every call.
int mac_carveout(const char* kind, bool two_per_sm);

/// Whether `kernel`'s carveout attribute must be (re)set to `value` on the current device: false
/// when the last call for this kernel and device set the same value (the attribute persists per
/// function), so each call does not pay for the host API call. Thread-safe.
bool carveout_changed(const void* kernel, int value);

/// Raises a kernel's dynamic shared memory limit to `bytes` (when over the default 48 KiB) and,
/// when `carveout` is not kNoCarveout, sets its carveout preference (-1 = the driver's choice).
constexpr int kNoCarveout = -2;
template <typename K>
void allow_smem(K kernel, std::size_t bytes, int carveout = kNoCarveout) {
  if (bytes > 48 * 1024)
    MACATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  if (carveout != kNoCarveout && carveout_changed(reinterpret_cast<const void*>(kernel), carveout))
    MACATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, carveout));
}

/// Whether kernels are launched with programmatic dependent launch: only with the environment
/// variable MACATTN_CUDA_PDL=1 on sm_90+. Off by default because it measured slower on the H200
/// (docs/benchmarks/h200.md: MAC hit 1.0 at batch 1 27.4 us without, 34.6 us with; exact
/// unchanged); kept as a switch for later experiments.
bool pdl_enabled();

/// Launches kernel<<<grid, block, smem, stream>>>(args...) with programmatic dependent launch
/// when pdl_enabled(): the kernel must call grid_dependency_wait() before reading what an
/// earlier kernel wrote (see device_common.cuh). Works under stream capture (a programmatic
/// edge in the graph).
template <typename... Params, typename... Args>
void launch_pdl_if(bool pdl, const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
                   cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  check_cuda(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...), name);
}
template <typename... Params, typename... Args>
void launch_pdl(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t smem,
                cudaStream_t stream, Args... args) {
  launch_pdl_if(pdl_enabled(), name, kernel, grid, block, smem, stream, args...);
}

/// Whether MAC's finish kernel alone is launched with programmatic dependent launch (its work
/// that does not read the attend kernel's partials then overlaps that kernel): on sm_90+ unless
/// MACATTN_CUDA_PDL_FINISH=0 (read on every call, so tests can force either); always with
/// MACATTN_CUDA_PDL=1.
bool finish_pdl();

/// Whether MAC's attend kernel runs two blocks per SM instead of three for `groups` = batch x
/// KV heads (head_dim <= 128): the kernel then asks for enough shared memory that at most two
/// fit, and its split count is capped to fill two per SM (mac_splits), which leaves a third
/// of every SM to the scan, complete and finish kernels. By default for grids of few groups
/// (groups x 16 <= SMs: batch 1 of Llama-3.1-8B on the H200); MACATTN_CUDA_ATTEND_PER_SM=2 or
/// =3 forces either (read on every call).
bool attend_two_per_sm(std::int32_t groups, std::int32_t head_dim);

/// Shared memory the attend kernel asks for when attend_two_per_sm(): more than a third of the
/// H100/H200's 228 KiB per SM, so at most two of its blocks share an SM. (With the 1 KiB the
/// runtime reserves per block and the kernels' static shared memory, two attend blocks and one
/// side complete block need about 228.5 KiB, 0.5 KiB too many; 75 KiB, which makes them fit,
/// measured the same on the H200: h200.md, twenty-first session.)
constexpr std::size_t kAttendThirdBytes = 76 * 1024;

/// Whether MAC's attend kernel is launched with programmatic dependent launch (its query loads,
/// the page table's lookups and its blocks' placement then overlap the scan): by default with
/// two blocks per SM (above; with three, its early blocks fill the SMs that the finish kernel's
/// first part needs); MACATTN_CUDA_PDL_ATTEND=1 or =0 forces either, MACATTN_CUDA_PDL=1 turns it
/// on; sm_90+ only (read on every call).
bool attend_pdl(bool two_per_sm);

/// Whether MAC's scan kernel is launched with programmatic dependent launch: only with
/// MACATTN_CUDA_PDL_SCAN=1 or MACATTN_CUDA_PDL=1 on sm_90+ (read on every call; measured
/// slower on misses in the layer benchmark, h200.md).
bool scan_pdl();

/// Whether mac_scan's scan kernel (launched apart, on the caller's scan stream) uses
/// programmatic dependent launch: by default on sm_90+, so that it is resident when the kernel
/// before it (an engine's q|k|v projection) ends; MACATTN_CUDA_PDL_SCAN=0 turns it off.
bool split_scan_pdl();

/// MAC's split count for `groups` = batch x KV heads: `planned` (plan_splits), capped to two
/// blocks per SM when `two_per_sm`; MACATTN_CUDA_MAC_SPLIT_FACTOR=F (an experiment, off by
/// default, only without two_per_sm) multiplies it by F, up to one 64-key tile of `max_seq_len`
/// per split and 1024; MACATTN_CUDA_MAC_SPLITS overrides it, clamped to [1, planned] (an
/// experiment; exact decode keeps the plan). Read on every call (Workspace::reserve sizes the
/// partials with it: set the variables before reserving).
std::int32_t mac_splits(std::int32_t planned, std::int32_t groups, bool two_per_sm, std::int64_t max_seq_len);

/// Whether MAC's attend kernel shares its blocks among the groups that have amend keys (the
/// spread plan, mac_spread.cuh) for a step whose full K/V read is `kv_bytes` over sequences of up
/// to `max_seq_len` keys: by default when that read is at least kSpreadMinBytes and the spans at
/// least kSpreadMinKeys. Measured on the H200 (h200.md, nineteenth session): the plan took steps
/// where few groups miss from 1086 to 268 us (batch 16, 128K, 10% of groups missing) and from 98
/// to 62 us (batch 1, 128K), but all-miss steps, whose splits are the static plan's, cost more:
/// 7-14 us until the amend had one call site of the attention core (ncu: instruction fetch, 37-39%
/// of the cycles), 4-6 us after at batches 1 and 4 (5ae76ca: 1.5 us of plan in every block, the
/// rest in the runs; twentieth session). At 8caebbd all-miss steps lost 8-10% at batch 1, 128K,
/// 30% at 8K, 2% at batch 4, 128K, 2% at batch 16, 32K (0.97x -> 0.95x of exact decode) and 0.2%
/// at batch 16, 128K. So it is on where that cost is small against a miss step: batch 4 from
/// 96K keys, batch 16 from 64K for Llama-3.1-8B. MACATTN_CUDA_MAC_SPREAD=1 or =0 forces either
/// (read on every call).
constexpr std::int64_t kSpreadMinBytes = 3ll << 29;  // 1.5 GiB
constexpr std::int64_t kSpreadMinKeys = 65536;
bool mac_spread_enabled(std::int64_t kv_bytes, std::int64_t max_seq_len);

/// Amend partial slots per head with the spread plan, for an attend grid of `blocks` blocks of
/// `splits` per group: one per block (a group may get the whole grid), at most 1024 and at most
/// what keeps the partials of `heads` heads of `head_dim` under 32 MiB, never fewer than `splits`.
std::int32_t mac_spread_slots(std::int32_t splits, std::int64_t blocks, std::int64_t heads, std::int32_t head_dim);

/// Whether MAC's complete state (sinks + tail, which no decision changes) is computed by its own
/// kernel of `complete_blocks` blocks on the workspace's side stream, beside the scan and the
/// amend kernel, instead of by the amend kernel's blocks with the least amend work: when that
/// grid is at most one block per multiprocessor. Measured on the H200 (h200.md): at batch 1 the
/// side kernel takes the tail off the critical path (all-hit 22.9 -> 19.3 us; a miss at 8K
/// 38.8 -> 29.3 us); at batch 16 its 512 blocks delay the exact splits of a miss step (8K / 32K,
/// hit 0, with the register-only scan at 1d092e9: 156.4 -> 158.4 / 502.5 -> 508.4 us) and gain
/// nothing on hits in the benchmark (128K: 35.7 vs 37.6 us). MACATTN_CUDA_COMPLETE=side|attend
/// forces either (read on every call).
bool side_complete(std::int64_t complete_blocks);

/// Forms of MAC's match scan (mac_scan.cuh: scan_staged, scan_direct; the scan kernel's
/// template argument).
constexpr int kScanStaged = 0, kScanDirect = 1;

/// The form of MAC's match scan for a scan with a finite bound: kScanDirect (the first 64 dims
/// of each row, the rare rows still under the bound summed again whole; measured faster than
/// whole rows at every batch, h200.md). MACATTN_CUDA_SCAN=staged|direct forces either (read on
/// every call, so tests can force each; another value is refused). Scans without a bound always
/// stream whole rows.
int scan_form();

/// The longest hit band MAC's finish kernel attends itself instead of the attend kernel
/// (mac_band.cuh) when the complete kernel runs on the side stream (mac_decode uses 0 otherwise):
/// kFinishBandMax by default; MACATTN_CUDA_FINISH_BAND=n (0..kFinishBandMax; 0 = every band
/// through the attend kernel) overrides it (read on every call, so tests can force either path).
int finish_band_limit();


/// Streaming multiprocessors of the current device (132 when it cannot be read).
int device_sm_count();

/// Splits per (sequence, KV head) for a decode call (see planned_splits in cuda.hpp).
std::int32_t plan_splits(std::int32_t batch, std::int32_t num_kv_heads, std::int32_t head_dim, std::int64_t max_seq_len);

/// Validation shared by the entry points (throws macattn::Error naming the bad value).
void validate_kv(const char* fn, const AttentionShape& shape, const PagedKVDevice& kv);
void validate_ring_storage(const char* fn, const MacRingsDevice& rings);
void validate_rings(const char* fn, const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv,
                    const MacRingsDevice& rings);
void validate_query(const char* fn, const char* name, const void* data, DType dtype);
void require_workspace(const char* fn, const Workspace& ws, const AttentionShape& shape, std::int64_t rows,
                       std::int32_t splits, std::int64_t heads, std::int32_t batch);

inline std::size_t dtype_bytes(DType t) { return t == DType::f32 ? 4 : 2; }

}  // namespace macattn::cuda::detail
