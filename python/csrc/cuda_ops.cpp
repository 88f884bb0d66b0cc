// python/csrc/cuda_ops.cpp: the CUDA kernels of the macattn ops, through macattn::cuda
// (compiled only when the library has its CUDA backend and torch has CUDA:
// MACATTN_TORCH_WITH_CUDA). Nothing here reads device memory on the host, so every op can be
// captured in a CUDA graph, provided the device's workspace was reserved before capture
// (macattn.reserve_cuda_workspace; outside capture an op grows it as needed).
//
// The device cannot throw: page indices, sequence lengths and row counts are not checked
// against the cache on the GPU (as in FlashInfer); shapes, dtypes and devices are.
#ifdef MACATTN_TORCH_WITH_CUDA

#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstddef>
#include <memory>
#include <mutex>

#include "common.hpp"
#include "macattn/cuda.hpp"

namespace macattn_torch {
namespace {

// --- one workspace per device, sized for the largest call seen --------------------------------

struct DeviceWorkspace {
  std::mutex mutex;
  macattn::cuda::Workspace workspace;
  macattn::AttentionShape shape;
  int32_t batch = 0;
  int64_t max_seq_len = 0;
  int32_t window = 0;
  bool reserved = false;
};

DeviceWorkspace& device_workspace(int device) {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<DeviceWorkspace>> all;
  std::lock_guard<std::mutex> lock(mutex);
  if (static_cast<size_t>(device) >= all.size()) all.resize(static_cast<size_t>(device) + 1);
  auto& w = all[static_cast<size_t>(device)];
  if (!w) w = std::make_unique<DeviceWorkspace>();
  return *w;
}

bool same_shape(const macattn::AttentionShape& a, const macattn::AttentionShape& b) {
  return a.num_q_heads == b.num_q_heads && a.num_kv_heads == b.num_kv_heads && a.head_dim == b.head_dim;
}

/// The device's workspace, reserved for (shape, batch, max_seq_len, window). Growing it frees
/// the old buffers (graphs captured with them must be captured again), so it is refused while
/// the current stream is capturing.
macattn::cuda::Workspace& workspace_for(const char* op, int device, const macattn::AttentionShape& shape, int32_t batch,
                                        int64_t max_seq_len, int32_t window) {
  DeviceWorkspace& w = device_workspace(device);
  std::lock_guard<std::mutex> lock(w.mutex);
  const bool fits = w.reserved && same_shape(w.shape, shape) && batch <= w.batch && max_seq_len <= w.max_seq_len &&
                    window <= w.window;
  if (fits) return w.workspace;
  TORCH_CHECK_VALUE(c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None, "macattn.", op,
                    ": the CUDA workspace of device ", device, " is not reserved for this call (", shape.to_string(),
                    ", batch ", batch, ", max_seq_len ", max_seq_len, ", window ", window,
                    ") and cannot grow during graph capture: call macattn_torch.reserve_cuda_workspace(...) first");
  const bool keep = w.reserved && same_shape(w.shape, shape);
  const int32_t b = keep ? std::max(batch, w.batch) : batch;
  const int64_t n = keep ? std::max(max_seq_len, w.max_seq_len) : max_seq_len;
  const int32_t win = keep ? std::max(window, w.window) : window;
  call_library(op, [&] {
    w.workspace.reserve(shape, b, n, win);
    return 0;
  });
  w.shape = shape;
  w.batch = b;
  w.max_seq_len = n;
  w.window = win;
  w.reserved = true;
  return w.workspace;
}

void reserve_cuda_workspace(int64_t device, int64_t num_q_heads, int64_t num_kv_heads, int64_t head_dim,
                            int64_t batch_size, int64_t max_seq_len, int64_t window) {
  const char* op = "reserve_cuda_workspace";
  TORCH_CHECK_VALUE(device >= 0 && device < c10::cuda::device_count(), "macattn.", op, ": device = ", device, " of ",
                    static_cast<int>(c10::cuda::device_count()), " CUDA devices");
  TORCH_CHECK_VALUE(batch_size >= 1 && batch_size <= INT32_MAX, "macattn.", op, ": batch_size = ", batch_size);
  TORCH_CHECK_VALUE(max_seq_len >= 1, "macattn.", op, ": max_seq_len = ", max_seq_len, ", must be >= 1");
  TORCH_CHECK_VALUE(window >= 1 && window <= INT32_MAX, "macattn.", op, ": window = ", window);
  macattn::AttentionShape shape;
  shape.num_q_heads = static_cast<int32_t>(num_q_heads);
  shape.num_kv_heads = static_cast<int32_t>(num_kv_heads);
  shape.head_dim = static_cast<int32_t>(head_dim);
  call_library(op, [&] {
    shape.validate();
    return 0;
  });
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  workspace_for(op, static_cast<int>(device), shape, static_cast<int32_t>(batch_size), max_seq_len,
                static_cast<int32_t>(window));
}

// --- argument conversion -------------------------------------------------------------------

/// max_seq_len: the caller's bound, or one that needs no device read: every page of kv_indices
/// full (exact for batch 1; an over-estimate only costs split-grid size).
macattn::cuda::PagedKVDevice device_view(const char* op, const PagedArgs& kv, std::optional<int64_t> max_seq_len) {
  TORCH_CHECK_TYPE(kv.dtype != macattn::DType::f32, "macattn.", op,
                   ": the CUDA backend reads bf16 or f16 K/V; k_pages is float32");
  for (const void* p : {kv.paged.k_pages, kv.paged.v_pages})
    TORCH_CHECK_VALUE(reinterpret_cast<std::uintptr_t>(p) % 16 == 0, "macattn.", op,
                      ": k_pages/v_pages must start 16-byte aligned, got address ", p);
  macattn::cuda::PagedKVDevice d;
  d.k_pages = kv.paged.k_pages;
  d.v_pages = kv.paged.v_pages;
  d.num_pages = kv.paged.num_pages;
  d.page_size = kv.paged.page_size;
  d.layout = kv.paged.layout;
  d.indptr = kv.paged.indptr;
  d.indices = kv.paged.indices;
  d.last_page_len = kv.paged.last_page_len;
  d.batch_size = kv.batch_size;
  d.num_kv_heads = kv.num_kv_heads;
  d.head_dim = kv.head_dim;
  d.dtype = kv.dtype;
  const int64_t bound = std::max<int64_t>(1, kv.caller_indices * kv.page_size);
  if (max_seq_len)
    TORCH_CHECK_VALUE(*max_seq_len >= 1, "macattn.", op, ": max_seq_len = ", *max_seq_len, ", must be >= 1");
  d.max_seq_len = max_seq_len ? *max_seq_len : bound;
  return d;
}

macattn::cuda::MacRingsDevice device_rings(const at::Tensor& qring, const at::Tensor& oring, at::Tensor& lring,
                                           at::Tensor& position, at::Tensor& ready) {
  macattn::cuda::MacRingsDevice r;
  r.qring = qring.data_ptr();
  r.oring = oring.data_ptr();
  r.lring = lring.data_ptr<float>();
  r.position = position.data_ptr<int64_t>();
  r.ready = ready.data_ptr<uint8_t>();
  r.ring_dtype = to_dtype("ring", "qring", qring);
  r.window = static_cast<int32_t>(qring.size(1));
  r.num_q_heads = static_cast<int32_t>(qring.size(2));
  r.head_dim = static_cast<int32_t>(qring.size(3));
  r.batch_size = static_cast<int32_t>(qring.size(0));
  return r;
}

void* current_stream() {
  return c10::cuda::getCurrentCUDAStream().stream();
}

// --- the ops -------------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> exact_decode_cuda(const at::Tensor& q, const at::Tensor& k_pages,
                                                     const at::Tensor& v_pages, const at::Tensor& kv_indptr,
                                                     const at::Tensor& kv_indices, const at::Tensor& kv_last_page_len,
                                                     c10::string_view kv_layout, double softmax_scale,
                                                     std::optional<int64_t> max_seq_len) {
  const char* op = "exact_decode";
  c10::cuda::CUDAGuard guard(q.device());
  const macattn::DType qd = check_queries(op, q, nullptr);
  const PagedArgs kv = parse_paged(op, q.device(), q.size(0), k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len,
                                   std::string(kv_layout));
  const macattn::AttentionShape shape = make_shape(op, q, kv, softmax_scale);
  const macattn::cuda::PagedKVDevice view = device_view(op, kv, max_seq_len);
  macattn::cuda::Workspace& ws = workspace_for(op, q.get_device(), shape, kv.batch_size, view.max_seq_len, 1);
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({q.size(0), q.size(1)}, q.options().dtype(at::kFloat));
  call_library(op, [&] {
    macattn::cuda::exact_decode(shape, view, {q.data_ptr(), qd}, {out.data_ptr(), qd}, lse.data_ptr<float>(), ws,
                                current_stream());
    return 0;
  });
  return {out, lse};
}

MacOutputs mac_decode_cuda(const at::Tensor& q, const at::Tensor& q_pre, const at::Tensor& k_pages,
                           const at::Tensor& v_pages, const at::Tensor& kv_indptr, const at::Tensor& kv_indices,
                           const at::Tensor& kv_last_page_len, at::Tensor& qring, at::Tensor& oring, at::Tensor& lring,
                           at::Tensor& position, at::Tensor& ready, c10::string_view kv_layout, double softmax_scale,
                           int64_t rect_offset, double tau, int64_t front_sinks, int64_t min_context, bool return_stats,
                           std::optional<int64_t> max_seq_len, bool report_miss_matches) {
  const char* op = "mac_decode";
  c10::cuda::CUDAGuard guard(q.device());
  const macattn::DType qd = check_queries(op, q, &q_pre);
  const PagedArgs kv = parse_paged(op, q.device(), q.size(0), k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len,
                                   std::string(kv_layout));
  const macattn::AttentionShape shape = make_shape(op, q, kv, softmax_scale);
  const int32_t w = check_rings(op, qring, oring, lring, position, ready, q.size(0), q.size(1), q.size(2), q.device());
  macattn::MacConfig config = make_config(op, w, rect_offset, tau, front_sinks, min_context);
  config.report_miss_matches = report_miss_matches;
  const macattn::cuda::PagedKVDevice view = device_view(op, kv, max_seq_len);
  const macattn::cuda::MacRingsDevice rings = device_rings(qring, oring, lring, position, ready);
  macattn::cuda::Workspace& ws = workspace_for(op, q.get_device(), shape, kv.batch_size, view.max_seq_len, w);

  auto [out, lse, hit, matched, band] = empty_mac_outputs(q, return_stats);
  // HeadStats land in a byte tensor on the device; the fields are cut out of it as views.
  constexpr int64_t kStat = sizeof(macattn::HeadStats);
  at::Tensor raw;
  if (return_stats) raw = at::empty({q.size(0) * q.size(1), kStat}, q.options().dtype(at::kByte));
  call_library(op, [&] {
    macattn::cuda::mac_decode(shape, config, view, {q.data_ptr(), qd}, {q_pre.data_ptr(), qd}, rings,
                              {out.data_ptr(), qd}, lse.data_ptr<float>(),
                              return_stats ? reinterpret_cast<macattn::HeadStats*>(raw.data_ptr()) : nullptr, ws,
                              current_stream());
    return 0;
  });
  if (return_stats) {
    const std::vector<int64_t> bh{q.size(0), q.size(1)};
    auto field = [&](size_t offset, int64_t bytes, at::ScalarType t) {
      return raw.narrow(1, static_cast<int64_t>(offset), bytes).contiguous().view(t).view(bh);
    };
    hit = field(offsetof(macattn::HeadStats, hit), 1, at::kByte);
    matched = field(offsetof(macattn::HeadStats, matched_position), 8, at::kLong);
    band = field(offsetof(macattn::HeadStats, band_len), 4, at::kInt);
  }
  return {out, lse, hit, matched, band};
}

void mac_prefill_init_cuda(const at::Tensor& q, const at::Tensor& q_pre, const at::Tensor& k_pages,
                           const at::Tensor& v_pages, const at::Tensor& kv_indptr, const at::Tensor& kv_indices,
                           const at::Tensor& kv_last_page_len, const at::Tensor& row_indptr, at::Tensor& qring,
                           at::Tensor& oring, at::Tensor& lring, at::Tensor& position, at::Tensor& ready,
                           c10::string_view kv_layout, double softmax_scale, int64_t rect_offset, int64_t front_sinks,
                           std::optional<int64_t> max_rows_per_seq) {
  const char* op = "mac_prefill_init";
  c10::cuda::CUDAGuard guard(q.device());
  const macattn::DType qd = check_queries(op, q, &q_pre);
  check_tensor(op, "kv_indptr", kv_indptr, 1, q.device());
  check_tensor(op, "row_indptr", row_indptr, 1, q.device());
  check_scalar_type(op, "row_indptr", row_indptr, at::kInt);
  const int64_t batch = kv_indptr.size(0) - 1;
  TORCH_CHECK_VALUE(row_indptr.size(0) == batch + 1, "macattn.", op, ": row_indptr has ", row_indptr.size(0),
                    " entries; kv_indptr's batch of ", batch, " needs ", batch + 1);
  const PagedArgs kv = parse_paged(op, q.device(), batch, k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len,
                                   std::string(kv_layout));
  const macattn::AttentionShape shape = make_shape(op, q, kv, softmax_scale);
  const int32_t w = check_rings(op, qring, oring, lring, position, ready, batch, q.size(1), q.size(2), q.device());
  const macattn::MacConfig config = make_config(op, w, rect_offset, 0.45, front_sinks, 0);
  const macattn::cuda::PagedKVDevice view = device_view(op, kv, std::nullopt);
  const int64_t rows = max_rows_per_seq ? *max_rows_per_seq : q.size(0);
  TORCH_CHECK_VALUE(rows >= 0 && rows <= INT32_MAX, "macattn.", op, ": max_rows_per_seq = ", rows);
  const macattn::cuda::MacRingsDevice rings = device_rings(qring, oring, lring, position, ready);
  macattn::cuda::Workspace& ws = workspace_for(op, q.get_device(), shape, kv.batch_size, view.max_seq_len, w);
  call_library(op, [&] {
    macattn::cuda::mac_prefill_init(shape, config, view, {q.data_ptr(), qd}, {q_pre.data_ptr(), qd},
                                    row_indptr.data_ptr<int32_t>(), static_cast<int32_t>(rows), rings, ws,
                                    current_stream());
    return 0;
  });
}

void mac_state_reset_cuda(at::Tensor& qring, at::Tensor& oring, at::Tensor& lring, at::Tensor& position,
                          at::Tensor& ready) {
  const char* op = "mac_state_reset";
  c10::cuda::CUDAGuard guard(qring.device());
  check_rings(op, qring, oring, lring, position, ready, qring.dim() == 4 ? qring.size(0) : -1,
              qring.dim() == 4 ? qring.size(2) : -1, qring.dim() == 4 ? qring.size(3) : -1, qring.device());
  const macattn::cuda::MacRingsDevice rings = device_rings(qring, oring, lring, position, ready);
  call_library(op, [&] {
    macattn::cuda::mac_rings_reset(rings, current_stream());
    return 0;
  });
}

}  // namespace
}  // namespace macattn_torch

TORCH_LIBRARY_FRAGMENT(macattn, m) {
  m.def(
      "reserve_cuda_workspace(int device, int num_q_heads, int num_kv_heads, int head_dim, int batch_size, "
      "int max_seq_len, int window=512) -> ()",
      &macattn_torch::reserve_cuda_workspace);
}

TORCH_LIBRARY_IMPL(macattn, CUDA, m) {
  m.impl("exact_decode", TORCH_FN(macattn_torch::exact_decode_cuda));
  m.impl("mac_decode", TORCH_FN(macattn_torch::mac_decode_cuda));
  m.impl("mac_prefill_init", TORCH_FN(macattn_torch::mac_prefill_init_cuda));
  m.impl("mac_state_reset", TORCH_FN(macattn_torch::mac_state_reset_cuda));
}

#endif  // MACATTN_TORCH_WITH_CUDA
