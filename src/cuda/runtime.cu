// src/cuda/runtime.cu: the CUDA backend's host side: device queries, the workspace, the split
// plan, input validation shared by the entry points, and the ring reset.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>

#include "cuda/launch.cuh"

namespace macattn::cuda {

using macattn::detail::fail;
using macattn::detail::require;

namespace {

struct DeviceInfo {
  int sm_count = 0;
  int major = 0, minor = 0;
  std::string name;
  std::size_t memory = 0;
  std::size_t smem_per_sm = 0;
};

// A function-local static: initialised once, thread-safe.
const DeviceInfo* device_info() {
  static const DeviceInfo info = [] {
    DeviceInfo d;
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaGetLastError();  // clear the sticky "no device" error
      return d;
    }
    int dev = 0;
    cudaDeviceProp p{};
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) return d;
    d.sm_count = p.multiProcessorCount;
    d.major = p.major;
    d.minor = p.minor;
    d.name = p.name;
    d.memory = p.totalGlobalMem;
    d.smem_per_sm = p.sharedMemPerMultiprocessor;
    return d;
  }();
  return info.major >= 8 ? &info : nullptr;  // the kernels use sm_80 instructions (cp.async, ldmatrix, bf16 mma)
}

}  // namespace

bool available() { return device_info() != nullptr; }

std::string device_description() {
  const DeviceInfo* d = device_info();
  if (!d) return "no usable CUDA device (none found, or older than sm_80)";
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s (sm_%d%d, %d SMs, %.1f GiB)", d->name.c_str(), d->major, d->minor, d->sm_count,
                static_cast<double>(d->memory) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

namespace detail {

int device_sm_count() {
  const DeviceInfo* d = device_info();
  return d ? d->sm_count : 132;
}

std::int32_t plan_splits(std::int32_t batch, std::int32_t num_kv_heads, std::int32_t head_dim,
                         std::int64_t max_seq_len) {
  const DeviceInfo* d = device_info();
  const int sms = d ? d->sm_count : 132;
  // Blocks resident per SM: three for D <= 128 (registers and shared memory), one for D = 256.
  // Aim for `waves` full waves of blocks over the chip (whole waves: no half-empty last wave);
  // a split never gets fewer than 256 keys.
  const int per_sm = head_dim <= 128 ? 3 : 1;
  double max_waves = 4.0;
  if (const char* env = std::getenv("MACATTN_CUDA_WAVES")) max_waves = std::max(0.25, std::atof(env));
  const std::int64_t slots = static_cast<std::int64_t>(sms) * per_sm;
  const std::int64_t groups = static_cast<std::int64_t>(batch) * num_kv_heads;
  const int by_length = static_cast<int>(std::max<std::int64_t>(1, (max_seq_len + 255) / 256));
  const int limit = static_cast<int>(std::min<std::int64_t>(
      {by_length, 1024, std::max<std::int64_t>(1, static_cast<std::int64_t>(max_waves * slots) / groups)}));
  // Predicted time of a split count: waves of blocks (a last wave that is only partly full
  // costs as much as a full one) x keys per block, plus a small cost per split for writing
  // and merging partials (4 keys' worth: measured on the H200 at batch 1, 8K, exact decode
  // took 52.0 / 33.0 / 26.7 / 28.1 / 37.3 us with 8 / 16 / 32 / 49 / 64 splits; a cost of 16
  // per split had picked 22 splits, 31.3 us). The lowest wins.
  int splits = 1;
  double best_cost = 0;
  for (int c = 1; c <= limit; ++c) {
    const std::int64_t blocks = groups * c;
    const double waves = static_cast<double>((blocks + slots - 1) / slots);
    const double keys = static_cast<double>(((max_seq_len + c - 1) / c + 63) / 64 * 64);
    const double cost = waves * (keys + 64.0) + 4.0 * c;
    if (c == 1 || cost < best_cost) {
      best_cost = cost;
      splits = c;
    }
  }
  if (const char* env = std::getenv("MACATTN_CUDA_SPLITS")) splits = std::clamp(std::atoi(env), 1, 1024);
  return splits;
}

namespace {
// Whether environment variable `name` is set to exactly `value` (the switches below).
bool env_is(const char* name, const char* value) {
  const char* env = std::getenv(name);
  return env != nullptr && std::strcmp(env, value) == 0;
}

// Which of two values environment variable `name` holds: 0 for `first` (or unset, or empty), 1
// for `second`; another value is refused, naming it.
int env_either(const char* name, const char* first, const char* second) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0' || std::strcmp(env, first) == 0) return 0;
  if (std::strcmp(env, second) == 0) return 1;
  require(false, name, " = '", env, "': expected ", first, " or ", second);
  return 0;
}

// Programmatic dependent launch needs sm_90+ (the device's at first use, as the launches assume).
bool pdl_supported() {
  static const bool v = [] {
    const DeviceInfo* d = device_info();
    return d != nullptr && d->major >= 9;
  }();
  return v;
}
}  // namespace

bool pdl_enabled() {
  static const bool v = [] {
    const char* env = std::getenv("MACATTN_CUDA_PDL");
    return env && std::atoi(env) == 1 && pdl_supported();
  }();
  return v;
}

bool finish_pdl() {
  if (pdl_enabled()) return true;
  return pdl_supported() && !env_is("MACATTN_CUDA_PDL_FINISH", "0");
}

bool scan_pdl() {
  if (pdl_enabled()) return true;
  return env_is("MACATTN_CUDA_PDL_SCAN", "1") && pdl_supported();
}

bool split_scan_pdl() {
  if (env_is("MACATTN_CUDA_PDL_SCAN", "0")) return false;
  return pdl_supported();
}

bool attend_two_per_sm(std::int32_t groups, std::int32_t head_dim) {
  if (head_dim > 128) return false;  // one block per SM already (plan_splits)
  // Two padded blocks (kAttendThirdBytes each, plus the 1 KiB the runtime reserves per block)
  // must fit an SM: not on parts with less shared memory per SM than the A100's 164 KiB.
  const DeviceInfo* info = device_info();
  if (info == nullptr || info->smem_per_sm < 2 * (kAttendThirdBytes + 1024)) return false;
  if (env_is("MACATTN_CUDA_ATTEND_PER_SM", "2")) return true;
  if (env_is("MACATTN_CUDA_ATTEND_PER_SM", "3")) return false;
  // Measured on the H200 (h200.md, fourteenth session): at 8 groups (batch 1 of Llama-3.1-8B)
  // two blocks per SM with the attend kernel under PDL took 0.8-1.5 us off all-hit steps and
  // left misses as they were or faster; at 32 and 128 groups (batch 4, 16) misses lost 2-5%.
  return static_cast<std::int64_t>(groups) * 16 <= device_sm_count();
}

std::int32_t mac_splits(std::int32_t planned, std::int32_t groups, bool two_per_sm, std::int64_t max_seq_len) {
  std::int32_t s = planned;
  if (two_per_sm) {
    s = std::clamp(2 * device_sm_count() / std::max(groups, 1), 1, planned);
  } else if (const char* f = std::getenv("MACATTN_CUDA_MAC_SPLIT_FACTOR")) {
    // An experiment, off by default: F times the plan's splits (at least one 64-key tile each,
    // at most 1024), so that when few groups miss, each missing group's span is read by F times
    // as many blocks (h200.md, "What is left": partial hit rates).
    const std::int64_t factor = std::clamp(std::atoi(f), 1, 16);
    const std::int64_t by_tiles = std::max<std::int64_t>(1, (max_seq_len + 63) / 64);
    s = static_cast<std::int32_t>(
        std::min<std::int64_t>({planned * factor, std::max<std::int64_t>(planned, by_tiles), 1024}));
  }
  const char* env = std::getenv("MACATTN_CUDA_MAC_SPLITS");
  return env ? std::clamp(std::atoi(env), 1, planned) : s;
}

bool mac_spread_enabled(std::int64_t kv_bytes, std::int64_t max_seq_len) {
  if (env_is("MACATTN_CUDA_MAC_SPREAD", "1")) return true;
  if (env_is("MACATTN_CUDA_MAC_SPREAD", "0")) return false;
  return kv_bytes >= kSpreadMinBytes && max_seq_len >= kSpreadMinKeys;
}

std::int32_t mac_spread_slots(std::int32_t splits, std::int64_t blocks, std::int64_t heads, std::int32_t head_dim) {
  constexpr std::int64_t kBudget = 32ll << 20;  // bytes of amend partials (o in fp32)
  const std::int64_t by_budget =
      kBudget / (std::max<std::int64_t>(heads, 1) * std::max(head_dim, 1) * 4) - kCompleteSplits;
  const std::int64_t slots = std::min<std::int64_t>({blocks, by_budget, 1024});
  return static_cast<std::int32_t>(std::max<std::int64_t>(splits, slots));
}

bool attend_pdl(bool two_per_sm) {
  if (pdl_enabled()) return true;
  if (env_is("MACATTN_CUDA_PDL_ATTEND", "1")) return pdl_supported();
  if (env_is("MACATTN_CUDA_PDL_ATTEND", "0")) return false;
  return two_per_sm && pdl_supported();
}

int stages_override() {
  static const int v = [] {
    const char* env = std::getenv("MACATTN_CUDA_STAGES");
    const int n = env ? std::atoi(env) : 0;
    return (n == 2 || n == 3 || n == 4) ? n : 0;
  }();
  return v;
}

bool side_complete(std::int64_t complete_blocks) {
  if (env_is("MACATTN_CUDA_COMPLETE", "side")) return true;
  if (env_is("MACATTN_CUDA_COMPLETE", "attend")) return false;
  return complete_blocks <= device_sm_count();
}

int scan_form() { return env_either("MACATTN_CUDA_SCAN", "direct", "staged") == 1 ? kScanStaged : kScanDirect; }

int mac_carveout(const char* kind, bool two_per_sm) {
  const int preferred = two_per_sm ? 100 : -1;
  const char* env = std::getenv("MACATTN_CUDA_CARVEOUT");
  if (env == nullptr || *env == '\0') return preferred;
  if (const char* list = std::getenv("MACATTN_CUDA_CARVEOUT_KERNELS")) {
    const std::string l = std::string(",") + list + ",";
    if (l.find(std::string(",") + kind + ",") == std::string::npos) return preferred;
  }
  return std::clamp(std::atoi(env), -1, 100);
}

bool carveout_changed(const void* kernel, int value) {
  // Per device: the attribute belongs to the function in the current device's context.
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return true;  // set it; the call reports any error
  static std::mutex m;
  static std::map<std::pair<int, const void*>, int> last;
  const std::lock_guard<std::mutex> lock(m);
  const auto [it, inserted] = last.try_emplace({device, kernel}, value);
  if (!inserted && it->second == value) return false;
  it->second = value;
  return true;
}

int finish_band_limit() {
  if (const char* env = std::getenv("MACATTN_CUDA_FINISH_BAND")) return std::clamp(std::atoi(env), 0, kFinishBandMax);
  return kFinishBandMax;
}

void validate_query(const char* fn, const char* name, const void* data, DType dtype) {
  require(dtype_valid(dtype), fn, ": ", name, ".dtype value ", static_cast<int>(dtype), " is not f32, f16 or bf16");
  require(data != nullptr, fn, ": ", name, " is null");
}

void validate_kv(const char* fn, const AttentionShape& shape, const PagedKVDevice& kv) {
  shape.validate();
  require(available(), fn, ": ", device_description());
  const int d = shape.head_dim;
  require(d == 64 || d == 128 || d == 256, fn, ": head_dim = ", d, "; the CUDA backend supports 64, 128 and 256");
  require(shape.group_size() <= kRows, fn, ": group size Hq/Hkv = ", shape.group_size(),
          "; the CUDA backend supports 1..16");
  require(kv.batch_size >= 0, fn, ": kv.batch_size = ", kv.batch_size, ", must be >= 0");
  require(kv.num_kv_heads == shape.num_kv_heads, fn, ": kv.num_kv_heads = ", kv.num_kv_heads,
          " but shape.num_kv_heads = ", shape.num_kv_heads);
  require(kv.head_dim == d, fn, ": kv.head_dim = ", kv.head_dim, " but shape.head_dim = ", d);
  require(kv.dtype == DType::bf16 || kv.dtype == DType::f16, fn, ": kv.dtype = ", dtype_name(kv.dtype),
          "; the CUDA backend reads bf16 or f16 K/V");
  require(kv.layout == KVLayout::NHD || kv.layout == KVLayout::HND, fn, ": kv.layout value ",
          static_cast<int>(kv.layout), " is not NHD or HND");
  if (kv.batch_size == 0) return;
  require(kv.k_pages && kv.v_pages, fn, ": kv.k_pages or kv.v_pages is null");
  require(kv.indptr && kv.indices && kv.last_page_len, fn, ": a page-table pointer (indptr, indices, last_page_len) is null");
  require(kv.page_size >= 1, fn, ": kv.page_size = ", kv.page_size, ", must be >= 1");
  require(kv.num_pages >= 1, fn, ": kv.num_pages = ", kv.num_pages, ", must be >= 1");
  require(kv.max_seq_len >= 1 && kv.max_seq_len < (std::int64_t{1} << 31), fn, ": kv.max_seq_len = ", kv.max_seq_len,
          ", must be in [1, 2^31)");
  require(reinterpret_cast<std::uintptr_t>(kv.k_pages) % 16 == 0 && reinterpret_cast<std::uintptr_t>(kv.v_pages) % 16 == 0,
          fn, ": kv.k_pages and kv.v_pages must be 16-byte aligned");
}

/// The ring pointers and element type, which every call that touches rings needs.
void validate_ring_storage(const char* fn, const MacRingsDevice& rings) {
  require(rings.qring && rings.oring && rings.lring && rings.position && rings.ready, fn,
          ": a rings pointer (qring, oring, lring, position, ready) is null");
  require(dtype_valid(rings.ring_dtype), fn, ": rings.ring_dtype value ", static_cast<int>(rings.ring_dtype),
          " is not f32, f16 or bf16");
  // The scan copies ring rows with 16-byte async copies.
  require(reinterpret_cast<std::uintptr_t>(rings.qring) % 16 == 0, fn, ": rings.qring (", rings.qring,
          ") must be 16-byte aligned");
}

void validate_rings(const char* fn, const AttentionShape& shape, const MacConfig& config, const PagedKVDevice& kv,
                    const MacRingsDevice& rings) {
  config.validate();
  validate_ring_storage(fn, rings);
  require(rings.window == config.window, fn, ": rings.window = ", rings.window, " but config.window = ", config.window);
  require(rings.num_q_heads == shape.num_q_heads, fn, ": rings.num_q_heads = ", rings.num_q_heads,
          " but shape.num_q_heads = ", shape.num_q_heads);
  require(rings.head_dim == shape.head_dim, fn, ": rings.head_dim = ", rings.head_dim, " but shape.head_dim = ",
          shape.head_dim);
  require(rings.batch_size == kv.batch_size, fn, ": rings.batch_size = ", rings.batch_size, " but kv.batch_size = ",
          kv.batch_size);
}

void require_workspace(const char* fn, const Workspace& ws, const AttentionShape& shape, std::int64_t rows,
                       std::int32_t splits, std::int64_t heads, std::int32_t batch) {
  const auto& b = ws.buffers();
  require(b.part_o != nullptr, fn, ": the workspace is empty; call Workspace::reserve() first");
  require(b.head_dim >= shape.head_dim && rows * splits <= b.capacity_rows * b.capacity_splits && heads <= b.capacity_heads &&
              batch <= b.capacity_batch,
          fn, ": the workspace is too small for this call (needs ", rows, " rows x ", splits, " splits, reserved ",
          b.capacity_rows, " x ", b.capacity_splits, "); reserve() it for this batch and max_seq_len");
}

namespace {

__global__ void fill_u64_kernel(unsigned long long* p, std::size_t n, unsigned long long v) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    p[i] = v;
}

__global__ void rings_reset_kernel(RingArgs ring, std::size_t elems, std::size_t rows, int batch) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  const std::size_t i0 = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  for (std::size_t i = i0; i < elems; i += stride) {
    store_float(ring.qring, ring.dtype, i, 0.f);
    store_float(ring.oring, ring.dtype, i, 0.f);
  }
  for (std::size_t i = i0; i < rows; i += stride) ring.lring[i] = -__int_as_float(0x7f800000);
  for (std::size_t i = i0; i < static_cast<std::size_t>(batch); i += stride) {
    ring.position[i] = 0;
    ring.ready[i] = 0;
  }
}

}  // namespace
}  // namespace detail

Workspace::~Workspace() { release(); }

void Workspace::release() {
  if (buffers_.side_stream) cudaStreamDestroy(static_cast<cudaStream_t>(buffers_.side_stream));
  if (buffers_.fork_event) cudaEventDestroy(static_cast<cudaEvent_t>(buffers_.fork_event));
  if (buffers_.join_event) cudaEventDestroy(static_cast<cudaEvent_t>(buffers_.join_event));
  if (buffers_.scan_event) cudaEventDestroy(static_cast<cudaEvent_t>(buffers_.scan_event));
  cudaFree(buffers_.part_o);
  cudaFree(buffers_.part_lse);
  cudaFree(buffers_.best);
  cudaFree(buffers_.seq_flags);
  cudaFree(buffers_.group_parts);
  buffers_ = Buffers{};
  pending_ = PendingScan{};
  bytes_ = 0;
}

void Workspace::reserve(const AttentionShape& shape, std::int32_t batch, std::int64_t max_seq_len,
                        std::int32_t window) {
  using namespace detail;
  constexpr const char* fn = "cuda::Workspace::reserve";
  shape.validate();
  require(batch >= 1, fn, ": batch = ", batch, ", must be >= 1");
  require(max_seq_len >= 1, fn, ": max_seq_len = ", max_seq_len, ", must be >= 1");
  require(window >= 1, fn, ": window = ", window, ", must be >= 1");
  require(available(), fn, ": ", device_description());
  const std::int64_t heads = static_cast<std::int64_t>(batch) * shape.num_q_heads;
  // Partials per head: the exact kernel's splits or MAC's amend slots (its splits, more with
  // MACATTN_CUDA_MAC_SPLIT_FACTOR, or the spread plan's slots), and MAC's complete parts.
  const std::int32_t planned = plan_splits(batch, shape.num_kv_heads, shape.head_dim, max_seq_len);
  const std::int32_t groups = batch * shape.num_kv_heads;
  const std::int32_t mac = mac_splits(planned, groups, attend_two_per_sm(groups, shape.head_dim), max_seq_len);
  const std::int32_t splits =
      std::max(planned, mac_spread_slots(mac, static_cast<std::int64_t>(groups) * mac, heads, shape.head_dim)) +
      kCompleteSplits;
  const auto& b = buffers_;
  if (b.part_o && b.head_dim >= shape.head_dim && heads <= b.capacity_rows && splits <= b.capacity_splits &&
      heads <= b.capacity_heads && batch <= b.capacity_batch)
    return;  // already large enough
  Buffers n;
  n.capacity_rows = std::max<std::int64_t>(heads, b.capacity_rows);
  n.capacity_splits = std::max(splits, b.capacity_splits);
  n.capacity_heads = std::max<std::int64_t>(heads, b.capacity_heads);
  n.capacity_batch = std::max(batch, b.capacity_batch);
  n.head_dim = std::max(shape.head_dim, b.head_dim);
  release();
  const std::size_t partials = static_cast<std::size_t>(n.capacity_rows) * static_cast<std::size_t>(n.capacity_splits);
  auto alloc = [&](void** p, std::size_t bytes) {
    const cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
      release();
      fail(fn, ": cudaMalloc of ", bytes, " bytes failed: ", cudaGetErrorString(e));
    }
    bytes_ += bytes;
  };
  alloc(reinterpret_cast<void**>(&n.part_o), partials * static_cast<std::size_t>(n.head_dim) * sizeof(float));
  buffers_.part_o = n.part_o;
  alloc(reinterpret_cast<void**>(&n.part_lse), partials * sizeof(float));
  buffers_.part_lse = n.part_lse;
  alloc(reinterpret_cast<void**>(&n.best), static_cast<std::size_t>(n.capacity_heads) * sizeof(unsigned long long));
  buffers_.best = n.best;
  alloc(reinterpret_cast<void**>(&n.seq_flags), static_cast<std::size_t>(n.capacity_batch));
  buffers_.seq_flags = n.seq_flags;
  alloc(reinterpret_cast<void**>(&n.group_parts), static_cast<std::size_t>(n.capacity_heads) * sizeof(std::int32_t));
  buffers_.group_parts = n.group_parts;
  // A stream and two events for MAC's side kernel (fork/join: capturable in a CUDA graph), and
  // the event mac_decode waits on after mac_scan.
  cudaStream_t side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr, scan = nullptr;
  const cudaError_t se = cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking);
  const cudaError_t fe = se == cudaSuccess ? cudaEventCreateWithFlags(&fork, cudaEventDisableTiming) : se;
  const cudaError_t je = fe == cudaSuccess ? cudaEventCreateWithFlags(&join, cudaEventDisableTiming) : fe;
  const cudaError_t ce = je == cudaSuccess ? cudaEventCreateWithFlags(&scan, cudaEventDisableTiming) : je;
  n.side_stream = side;
  n.fork_event = fork;
  n.join_event = join;
  n.scan_event = scan;
  buffers_ = n;
  if (ce != cudaSuccess) {
    release();
    fail(fn, ": creating the side stream and its events failed: ", cudaGetErrorString(je));
  }
  fill_u64_kernel<<<64, 256>>>(n.best, static_cast<std::size_t>(n.capacity_heads), ~0ull);
  MACATTN_CUDA_CHECK_LAUNCH("fill_u64_kernel");
  MACATTN_CUDA_CHECK(cudaDeviceSynchronize());
}

void mac_rings_reset(const MacRingsDevice& rings, void* stream) {
  using namespace detail;
  constexpr const char* fn = "cuda::mac_rings_reset";
  require(available(), fn, ": ", device_description());
  validate_ring_storage(fn, rings);
  require(rings.window >= 1 && rings.num_q_heads >= 1 && rings.head_dim >= 1 && rings.batch_size >= 0, fn,
          ": rings sizes must be positive (window ", rings.window, ", heads ", rings.num_q_heads, ", head_dim ",
          rings.head_dim, ", batch ", rings.batch_size, ")");
  const std::size_t rows = static_cast<std::size_t>(rings.batch_size) * rings.window * rings.num_q_heads;
  rings_reset_kernel<<<256, 256, 0, static_cast<cudaStream_t>(stream)>>>(ring_args(rings), rows * rings.head_dim, rows,
                                                                         rings.batch_size);
  MACATTN_CUDA_CHECK_LAUNCH("rings_reset_kernel");
}

std::int32_t planned_splits(const AttentionShape& shape, std::int32_t batch, std::int64_t max_seq_len) {
  shape.validate();
  return detail::plan_splits(batch, shape.num_kv_heads, shape.head_dim, max_seq_len);
}

}  // namespace macattn::cuda
