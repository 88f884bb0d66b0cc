// python/csrc/cpu_ops.cpp: the CPU kernels of the macattn ops, through the library's fast CPU
// backend (macattn::Backend::cpu). Inputs are checked here (dtypes, shapes, devices,
// contiguity); the library then validates the page table and the rings against the shape.
#include <torch/library.h>

#include <limits>
#include <span>

#include "common.hpp"

namespace macattn_torch {
namespace {

constexpr macattn::Backend kBackend = macattn::Backend::cpu;

macattn::KVCacheView cpu_view(const char* op, const PagedArgs& kv) {
  return call_library(
      op, [&] { return macattn::KVCacheView::paged(kv.paged, kv.batch_size, kv.num_kv_heads, kv.head_dim, kv.dtype); });
}

std::tuple<at::Tensor, at::Tensor> exact_decode_cpu(const at::Tensor& q, const at::Tensor& k_pages,
                                                    const at::Tensor& v_pages, const at::Tensor& kv_indptr,
                                                    const at::Tensor& kv_indices, const at::Tensor& kv_last_page_len,
                                                    c10::string_view kv_layout, double softmax_scale,
                                                    std::optional<int64_t> /*max_seq_len: device planning only*/) {
  const char* op = "exact_decode";
  const macattn::DType qd = check_queries(op, q, nullptr);
  const PagedArgs kv = parse_paged(op, q.device(), q.size(0), k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len,
                                   std::string(kv_layout));
  const macattn::AttentionShape shape = make_shape(op, q, kv, softmax_scale);
  const macattn::KVCacheView view = cpu_view(op, kv);
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({q.size(0), q.size(1)}, q.options().dtype(at::kFloat));
  call_library(op, [&] {
    macattn::exact_decode(shape, view, {q.data_ptr(), qd}, {out.data_ptr(), qd}, lse.data_ptr<float>(), kBackend);
    return 0;
  });
  return {out, lse};
}

MacOutputs mac_decode_cpu(const at::Tensor& q, const at::Tensor& q_pre, const at::Tensor& k_pages,
                          const at::Tensor& v_pages, const at::Tensor& kv_indptr, const at::Tensor& kv_indices,
                          const at::Tensor& kv_last_page_len, at::Tensor& qring, at::Tensor& oring, at::Tensor& lring,
                          at::Tensor& position, at::Tensor& ready, c10::string_view kv_layout, double softmax_scale,
                          int64_t rect_offset, double tau, int64_t front_sinks, int64_t min_context, bool return_stats,
                          std::optional<int64_t> /*max_seq_len*/, bool report_miss_matches) {
  const char* op = "mac_decode";
  const macattn::DType qd = check_queries(op, q, &q_pre);
  const PagedArgs kv = parse_paged(op, q.device(), q.size(0), k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len,
                                   std::string(kv_layout));
  const macattn::AttentionShape shape = make_shape(op, q, kv, softmax_scale);
  const int32_t w = check_rings(op, qring, oring, lring, position, ready, q.size(0), q.size(1), q.size(2), q.device());
  macattn::MacConfig config = make_config(op, w, rect_offset, tau, front_sinks, min_context);
  config.report_miss_matches = report_miss_matches;
  const macattn::KVCacheView view = cpu_view(op, kv);
  const std::vector<macattn::MacStateView> states = ring_views(qring, oring, lring, position, ready);

  auto [out, lse, hit, matched, band] = empty_mac_outputs(q, return_stats);
  std::vector<macattn::HeadStats> stats(return_stats ? static_cast<size_t>(q.size(0) * q.size(1)) : 0);
  call_library(op, [&] {
    macattn::mac_decode(shape, config, view, {q.data_ptr(), qd}, {q_pre.data_ptr(), qd}, states, {out.data_ptr(), qd},
                        lse.data_ptr<float>(), return_stats ? stats.data() : nullptr, nullptr, kBackend);
    return 0;
  });
  for (size_t i = 0; i < stats.size(); ++i) {
    hit.data_ptr<uint8_t>()[i] = stats[i].hit;
    matched.data_ptr<int64_t>()[i] = stats[i].matched_position;
    band.data_ptr<int32_t>()[i] = stats[i].band_len;
  }
  return {out, lse, hit, matched, band};
}

void mac_prefill_init_cpu(const at::Tensor& q, const at::Tensor& q_pre, const at::Tensor& k_pages,
                          const at::Tensor& v_pages, const at::Tensor& kv_indptr, const at::Tensor& kv_indices,
                          const at::Tensor& kv_last_page_len, const at::Tensor& row_indptr, at::Tensor& qring,
                          at::Tensor& oring, at::Tensor& lring, at::Tensor& position, at::Tensor& ready,
                          c10::string_view kv_layout, double softmax_scale, int64_t rect_offset, int64_t front_sinks,
                          std::optional<int64_t> /*max_rows_per_seq*/) {
  const char* op = "mac_prefill_init";
  const macattn::DType qd = check_queries(op, q, &q_pre);
  check_tensor(op, "row_indptr", row_indptr, 1, q.device());
  check_scalar_type(op, "row_indptr", row_indptr, at::kInt);
  check_tensor(op, "kv_indptr", kv_indptr, 1, q.device());
  const int64_t batch = kv_indptr.size(0) - 1;
  TORCH_CHECK_VALUE(row_indptr.size(0) == batch + 1, "macattn.", op, ": row_indptr has ", row_indptr.size(0),
                    " entries; kv_indptr's batch of ", batch, " needs ", batch + 1);
  const PagedArgs kv = parse_paged(op, q.device(), batch, k_pages, v_pages, kv_indptr, kv_indices, kv_last_page_len,
                                   std::string(kv_layout));
  const macattn::AttentionShape shape = make_shape(op, q, kv, softmax_scale);
  const int32_t w = check_rings(op, qring, oring, lring, position, ready, batch, q.size(1), q.size(2), q.device());
  const macattn::MacConfig config = make_config(op, w, rect_offset, 0.45, front_sinks, 0);
  const macattn::KVCacheView view = cpu_view(op, kv);
  const std::vector<macattn::MacStateView> states = ring_views(qring, oring, lring, position, ready);
  const std::span<const int32_t> rows(row_indptr.data_ptr<int32_t>(), static_cast<size_t>(row_indptr.numel()));
  call_library(op, [&] {
    macattn::mac_prefill_init(shape, config, view, {q.data_ptr(), qd}, {q_pre.data_ptr(), qd}, rows, states, kBackend);
    return 0;
  });
}

void mac_state_reset_cpu(at::Tensor& qring, at::Tensor& oring, at::Tensor& lring, at::Tensor& position,
                         at::Tensor& ready) {
  const char* op = "mac_state_reset";
  const int32_t w =
      check_rings(op, qring, oring, lring, position, ready, qring.dim() == 4 ? qring.size(0) : -1,
                  qring.dim() == 4 ? qring.size(2) : -1, qring.dim() == 4 ? qring.size(3) : -1, qring.device());
  (void)w;
  qring.zero_();
  oring.zero_();
  lring.fill_(-std::numeric_limits<float>::infinity());
  position.zero_();
  ready.zero_();
}

}  // namespace
}  // namespace macattn_torch

TORCH_LIBRARY_IMPL(macattn, CPU, m) {
  m.impl("exact_decode", TORCH_FN(macattn_torch::exact_decode_cpu));
  m.impl("mac_decode", TORCH_FN(macattn_torch::mac_decode_cpu));
  m.impl("mac_prefill_init", TORCH_FN(macattn_torch::mac_prefill_init_cpu));
  m.impl("mac_state_reset", TORCH_FN(macattn_torch::mac_state_reset_cpu));
}
