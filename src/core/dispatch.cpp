// The public entry points: validate every input, then hand over to the chosen backend.
// Validation lives here, once, so that every backend receives the same guarantees.
#include <cmath>

#include "core/check.hpp"
#include "cpu/fast/fast.hpp"
#include "cpu/reference/reference.hpp"
#include "macattn/attention.hpp"

namespace macattn {

using detail::fail;
using detail::require;

namespace {

void check_kv(const char* fn, const AttentionShape& shape, const KVCacheView& kv) {
  require(kv.num_kv_heads() == shape.num_kv_heads, fn, ": kv.num_kv_heads = ", kv.num_kv_heads(),
          " but shape.num_kv_heads = ", shape.num_kv_heads);
  require(kv.head_dim() == shape.head_dim, fn, ": kv.head_dim = ", kv.head_dim(), " but shape.head_dim = ",
          shape.head_dim);
}

void check_tensor(const char* fn, const char* name, const void* data, DType dtype, std::int64_t rows) {
  require(dtype_valid(dtype), fn, ": ", name, ".dtype value ", static_cast<int>(dtype), " is not f32, f16 or bf16");
  require(rows == 0 || data != nullptr, fn, ": ", name, " is null");
}

void check_backend(const char* fn, Backend backend) {
  if (backend != Backend::reference && backend != Backend::cpu)
    fail(fn, ": backend value ", static_cast<int>(backend), " is not available in this build");
}

void check_states(const char* fn, const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv,
                  std::span<const MacStateView> states) {
  require(states.size() == static_cast<std::size_t>(kv.batch_size()), fn, ": ", states.size(),
          " states for a batch of ", kv.batch_size(), " sequences");
  for (std::size_t b = 0; b < states.size(); ++b) {
    const std::string what = std::string(fn) + ": states[" + std::to_string(b) + "]";
    mac_state_validate(states[b], shape, config, what.c_str());
    for (std::size_t c = 0; c < b; ++c)
      require(states[c].lring != states[b].lring, fn, ": states[", c, "] and states[", b, "] are the same ring");
  }
}

}  // namespace

void exact_decode(const AttentionShape& shape, const KVCacheView& kv, ConstTensor q_post, Tensor out, float* lse,
                  Backend backend) {
  constexpr const char* fn = "exact_decode";
  shape.validate();
  check_kv(fn, shape, kv);
  check_tensor(fn, "q_post", q_post.data, q_post.dtype, kv.batch_size());
  check_tensor(fn, "out", out.data, out.dtype, kv.batch_size());
  require(out.dtype == q_post.dtype, fn, ": out.dtype = ", dtype_name(out.dtype), " but q_post.dtype = ",
          dtype_name(q_post.dtype));
  check_backend(fn, backend);
  if (backend == Backend::cpu) return cpu::exact_decode(shape, kv, q_post, out, lse);
  reference::exact_decode(shape, kv, q_post, out, lse);
}

void mac_decode(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv, ConstTensor q_post,
                ConstTensor q_pre, std::span<const MacStateView> states, Tensor out, float* lse,
                HeadStats* head_stats, StepStats* step_stats, Backend backend) {
  constexpr const char* fn = "mac_decode";
  shape.validate();
  config.validate();
  check_kv(fn, shape, kv);
  const std::int64_t batch = kv.batch_size();
  check_tensor(fn, "q_post", q_post.data, q_post.dtype, batch);
  check_tensor(fn, "q_pre", q_pre.data, q_pre.dtype, batch);
  check_tensor(fn, "out", out.data, out.dtype, batch);
  require(q_pre.dtype == q_post.dtype, fn, ": q_pre.dtype = ", dtype_name(q_pre.dtype), " but q_post.dtype = ",
          dtype_name(q_post.dtype));
  require(out.dtype == q_post.dtype, fn, ": out.dtype = ", dtype_name(out.dtype), " but q_post.dtype = ",
          dtype_name(q_post.dtype));
  check_states(fn, shape, config, kv, states);
  for (std::int32_t b = 0; b < kv.batch_size(); ++b)
    require(kv.seq_len(b) >= 1, fn, ": sequence ", b, " has seq_len 0; a decode step needs its current token's K/V");
  check_backend(fn, backend);
  if (backend == Backend::cpu)
    return cpu::mac_decode(shape, config, kv, q_post, q_pre, states, out, lse, head_stats, step_stats);
  reference::mac_decode(shape, config, kv, q_post, q_pre, states, out, lse, head_stats, step_stats);
}

void mac_prefill_init(const AttentionShape& shape, const MacConfig& config, const KVCacheView& kv,
                      ConstTensor q_post, ConstTensor q_pre, std::span<const std::int32_t> row_indptr,
                      std::span<const MacStateView> states, Backend backend) {
  constexpr const char* fn = "mac_prefill_init";
  shape.validate();
  config.validate();
  check_kv(fn, shape, kv);
  const std::int32_t batch = kv.batch_size();
  require(row_indptr.size() == static_cast<std::size_t>(batch) + 1, fn, ": row_indptr has ", row_indptr.size(),
          " entries, expected batch + 1 = ", batch + 1);
  require(row_indptr[0] == 0, fn, ": row_indptr[0] = ", row_indptr[0], ", must be 0");
  for (std::int32_t b = 0; b < batch; ++b) {
    const std::int64_t rows = static_cast<std::int64_t>(row_indptr[b + 1]) - row_indptr[b];
    require(rows >= 0, fn, ": row_indptr decreases at ", b + 1, " (", row_indptr[b], " -> ", row_indptr[b + 1], ")");
    require(rows <= kv.seq_len(b), fn, ": sequence ", b, " has ", rows, " query rows but only seq_len = ",
            kv.seq_len(b), " tokens");
  }
  const std::int64_t total_rows = row_indptr[batch];
  check_tensor(fn, "q_post", q_post.data, q_post.dtype, total_rows);
  check_tensor(fn, "q_pre", q_pre.data, q_pre.dtype, total_rows);
  require(q_pre.dtype == q_post.dtype, fn, ": q_pre.dtype = ", dtype_name(q_pre.dtype), " but q_post.dtype = ",
          dtype_name(q_post.dtype));
  check_states(fn, shape, config, kv, states);
  check_backend(fn, backend);
  if (backend == Backend::cpu) return cpu::prefill_init(shape, config, kv, q_post, q_pre, row_indptr, states);
  reference::prefill_init(shape, config, kv, q_post, q_pre, row_indptr, states);
}

}  // namespace macattn
