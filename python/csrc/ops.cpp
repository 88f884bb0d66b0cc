// python/csrc/ops.cpp: the macattn op schemas (TORCH_LIBRARY) and the composite state allocator.
//
// Kernels per device live in cpu_ops.cpp and cuda_ops.cpp; the fake (Meta / FakeTensor) kernels
// that torch.compile traces with are Python (macattn_torch/_fake.py), so they handle symbolic
// shapes. Tensor conventions are those of
// include/macattn/attention.hpp and cuda.hpp: q, q_pre, out [B, Hq, D]; lse [B, Hq] f32 natural
// log; paged K/V in FlashInfer's page table (common.hpp); MAC rings batched as
// macattn::cuda::MacRingsDevice (qring/oring [B, W, Hq, D], lring [B, W, Hq] f32, position [B]
// int64, ready [B] uint8).
#include <Python.h>

#include <torch/library.h>

#include "common.hpp"
#include "macattn/cuda.hpp"
#include "macattn/version.hpp"

// `import macattn_torch._C` loads this library (and so runs the registrations below); the
// module itself is empty: everything is reached through torch.ops.macattn.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&def);
}

namespace macattn_torch {
namespace {

// --- composite: allocation (decomposes into empty + mac_state_reset under torch.compile) ----

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mac_state_alloc(
    int64_t batch_size, int64_t window, int64_t num_q_heads, int64_t head_dim, at::ScalarType ring_dtype,
    at::Device device) {
  const char* op = "mac_state_alloc";
  TORCH_CHECK_VALUE(batch_size >= 1, "macattn.", op, ": batch_size = ", batch_size, ", must be >= 1");
  TORCH_CHECK_VALUE(window >= 1, "macattn.", op, ": window = ", window, ", must be >= 1");
  TORCH_CHECK_VALUE(num_q_heads >= 1, "macattn.", op, ": num_q_heads = ", num_q_heads, ", must be >= 1");
  TORCH_CHECK_VALUE(head_dim >= 1 && head_dim <= 1024, "macattn.", op, ": head_dim = ", head_dim,
                    ", must be in [1, 1024]");
  TORCH_CHECK_TYPE(ring_dtype == at::kFloat || ring_dtype == at::kHalf || ring_dtype == at::kBFloat16, "macattn.", op,
                   ": ring_dtype = ", ring_dtype, "; supported: float32, float16, bfloat16");
  auto opts = at::TensorOptions().device(device);
  at::Tensor qring = at::empty({batch_size, window, num_q_heads, head_dim}, opts.dtype(ring_dtype));
  at::Tensor oring = at::empty_like(qring);
  at::Tensor lring = at::empty({batch_size, window, num_q_heads}, opts.dtype(at::kFloat));
  at::Tensor position = at::empty({batch_size}, opts.dtype(at::kLong));
  at::Tensor ready = at::empty({batch_size}, opts.dtype(at::kByte));
  static auto reset = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("macattn::mac_state_reset", "")
                          .typed<void(at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&, at::Tensor&)>();
  reset.call(qring, oring, lring, position, ready);
  return {qring, oring, lring, position, ready};
}

std::string build_info() {
  std::string s = std::string("macattn ") + MACATTN_VERSION_STRING + "; CPU ISA " + macattn::cpu_isa() +
                  "; CUDA backend " + (MACATTN_WITH_CUDA ? "built" : "not built");
#ifdef MACATTN_TORCH_WITH_CUDA
  s += "; torch CUDA kernels registered; device: " + macattn::cuda::device_description();
#else
  s += "; torch CUDA kernels not registered";
#endif
  return s;
}

}  // namespace
}  // namespace macattn_torch

TORCH_LIBRARY(macattn, m) {
  m.def(
      "exact_decode(Tensor q, Tensor k_pages, Tensor v_pages, Tensor kv_indptr, Tensor kv_indices, "
      "Tensor kv_last_page_len, str kv_layout=\"NHD\", float softmax_scale=0.0, int? max_seq_len=None) "
      "-> (Tensor out, Tensor lse)");
  m.def(
      "mac_decode(Tensor q, Tensor q_pre, Tensor k_pages, Tensor v_pages, Tensor kv_indptr, Tensor kv_indices, "
      "Tensor kv_last_page_len, Tensor(a!) qring, Tensor(b!) oring, Tensor(c!) lring, Tensor(d!) position, "
      "Tensor(e!) ready, str kv_layout=\"NHD\", float softmax_scale=0.0, int rect_offset=256, float tau=0.45, "
      "int front_sinks=0, int min_context=2048, bool return_stats=False, int? max_seq_len=None, "
      "bool report_miss_matches=True) "
      "-> (Tensor out, Tensor lse, Tensor hit, Tensor matched_position, Tensor band_len)");
  m.def(
      "mac_prefill_init(Tensor q, Tensor q_pre, Tensor k_pages, Tensor v_pages, Tensor kv_indptr, "
      "Tensor kv_indices, Tensor kv_last_page_len, Tensor row_indptr, Tensor(a!) qring, Tensor(b!) oring, "
      "Tensor(c!) lring, Tensor(d!) position, Tensor(e!) ready, str kv_layout=\"NHD\", float softmax_scale=0.0, "
      "int rect_offset=256, int front_sinks=0, int? max_rows_per_seq=None) -> ()");
  m.def(
      "mac_state_reset(Tensor(a!) qring, Tensor(b!) oring, Tensor(c!) lring, Tensor(d!) position, "
      "Tensor(e!) ready) -> ()");
  m.def(
      "mac_state_alloc(int batch_size, int window, int num_q_heads, int head_dim, ScalarType ring_dtype, "
      "Device device) -> (Tensor qring, Tensor oring, Tensor lring, Tensor position, Tensor ready)");
  m.impl("mac_state_alloc", c10::DispatchKey::CompositeImplicitAutograd, TORCH_FN(macattn_torch::mac_state_alloc));
  m.def("build_info() -> str", &macattn_torch::build_info);
}
