// src/c_api.cpp: the C API (include/macattn/c_api.h) over the C++ entry points.
//
// Each function converts the plain C structs to the C++ types, calls the C++ function inside
// guarded(), and turns any exception into a status code plus a thread-local message. Checks
// done here are only those the C++ layer cannot do: null struct pointers, null handles, and
// enum values that would be truncated or invalid when cast to the C++ enums.
#include "macattn/c_api.h"

#include <cstdint>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include "macattn/macattn.hpp"

struct macattn_state {
  macattn::MacState ring;
};

namespace {

using macattn::Error;

thread_local std::string t_last_error;
thread_local bool t_last_error_lost = false;  // true if storing the message itself ran out of memory

void record_error(const char* fn, const char* what) noexcept {
  try {
    t_last_error = fn ? std::string(fn) + ": " + what : std::string(what);
    t_last_error_lost = false;
  } catch (...) {
    t_last_error.clear();
    t_last_error_lost = true;
  }
}

/// Runs body; maps exceptions to status codes. macattn::Error texts already name the C++
/// function, so they are stored as they are; other exceptions get the C function's name.
template <typename Body>
int guarded(const char* fn, Body&& body) noexcept {
  try {
    body();
    return MACATTN_OK;
  } catch (const Error& e) {
    record_error(nullptr, e.what());
    return MACATTN_ERROR_INVALID_ARGUMENT;
  } catch (const std::bad_alloc&) {
    record_error(fn, "out of memory");
    return MACATTN_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    record_error(fn, e.what());
    return MACATTN_ERROR_INTERNAL;
  } catch (...) {
    record_error(fn, "unknown exception");
    return MACATTN_ERROR_INTERNAL;
  }
}

void require_not_null(const void* p, const char* fn, const char* name) {
  if (p == nullptr) throw Error(std::string(fn) + ": " + name + " is null");
}

macattn::DType to_dtype(std::int32_t v, const char* fn, const char* name) {
  if (v != MACATTN_DTYPE_F32 && v != MACATTN_DTYPE_F16 && v != MACATTN_DTYPE_BF16) {
    throw Error(std::string(fn) + ": " + name + " = " + std::to_string(v) +
                " is not MACATTN_DTYPE_F32, MACATTN_DTYPE_F16 or MACATTN_DTYPE_BF16");
  }
  return static_cast<macattn::DType>(v);
}

/// Values the C++ enum can hold pass through (the C++ dispatch rejects those not built in);
/// others would be truncated by the cast, so they are rejected here.
macattn::Backend to_backend(std::int32_t v, const char* fn) {
  if (v < 0 || v > 255) {
    throw Error(std::string(fn) + ": backend = " + std::to_string(v) +
                " is not MACATTN_BACKEND_REFERENCE or MACATTN_BACKEND_CPU");
  }
  return static_cast<macattn::Backend>(v);
}

macattn::AttentionShape to_shape(const macattn_shape* s, const char* fn) {
  require_not_null(s, fn, "shape");
  macattn::AttentionShape shape;
  shape.num_q_heads = s->num_q_heads;
  shape.num_kv_heads = s->num_kv_heads;
  shape.head_dim = s->head_dim;
  shape.softmax_scale = s->softmax_scale;
  shape.validate();
  return shape;
}

macattn::MacConfig to_config(const macattn_config* c, const char* fn) {
  require_not_null(c, fn, "config");
  macattn::MacConfig config;
  config.window = c->window;
  config.rect_offset = c->rect_offset;
  config.tau = c->tau;
  config.front_sinks = c->front_sinks;
  config.min_context = c->min_context;
  if (c->report_miss_matches != 0 && c->report_miss_matches != 1)
    throw macattn::Error(std::string(fn) + ": config->report_miss_matches = " + std::to_string(c->report_miss_matches) +
                         ", must be 0 or 1");
  config.report_miss_matches = c->report_miss_matches != 0;
  config.validate();
  return config;
}

/// A KVCacheView plus the C++ copies it references; not movable once built (the view points
/// into `sequences`).
class KvHolder {
 public:
  KvHolder(const macattn_kv_cache* kv, const macattn::AttentionShape& shape, const char* fn) {
    require_not_null(kv, fn, "kv");
    if (kv->batch_size < 0)
      throw Error(std::string(fn) + ": kv->batch_size = " + std::to_string(kv->batch_size) + " is negative");
    const macattn::DType dtype = to_dtype(kv->dtype, fn, "kv->dtype");
    if (kv->storage == MACATTN_KV_CONTIGUOUS) {
      if (kv->batch_size > 0) require_not_null(kv->seqs, fn, "kv->seqs");
      sequences_.resize(static_cast<std::size_t>(kv->batch_size));
      for (std::int32_t b = 0; b < kv->batch_size; ++b) {
        sequences_[b].k = kv->seqs[b].k;
        sequences_[b].v = kv->seqs[b].v;
        sequences_[b].length = kv->seqs[b].length;
      }
      view_ = macattn::KVCacheView::contiguous(sequences_, shape.num_kv_heads, shape.head_dim, dtype);
    } else if (kv->storage == MACATTN_KV_PAGED) {
      const macattn_paged_kv& p = kv->paged;
      if (p.layout != MACATTN_LAYOUT_NHD && p.layout != MACATTN_LAYOUT_HND) {
        throw Error(std::string(fn) + ": kv->paged.layout = " + std::to_string(p.layout) +
                    " is not MACATTN_LAYOUT_NHD or MACATTN_LAYOUT_HND");
      }
      paged_.k_pages = p.k_pages;
      paged_.v_pages = p.v_pages;
      paged_.num_pages = p.num_pages;
      paged_.page_size = p.page_size;
      paged_.layout = static_cast<macattn::KVLayout>(p.layout);
      paged_.indptr = p.indptr;
      paged_.indices = p.indices;
      paged_.last_page_len = p.last_page_len;
      view_ = macattn::KVCacheView::paged(paged_, kv->batch_size, shape.num_kv_heads, shape.head_dim, dtype);
    } else {
      throw Error(std::string(fn) + ": kv->storage = " + std::to_string(kv->storage) +
                  " is not MACATTN_KV_CONTIGUOUS or MACATTN_KV_PAGED");
    }
  }
  KvHolder(const KvHolder&) = delete;
  KvHolder& operator=(const KvHolder&) = delete;

  const macattn::KVCacheView& view() const { return view_; }

 private:
  std::vector<macattn::ContiguousSequence> sequences_;
  macattn::PagedKV paged_;
  macattn::KVCacheView view_;
};

std::vector<macattn::MacStateView> to_views(macattn_state* const* states, std::int32_t batch, const char* fn) {
  if (batch > 0) require_not_null(states, fn, "states");
  std::vector<macattn::MacStateView> views(static_cast<std::size_t>(batch));
  for (std::int32_t b = 0; b < batch; ++b) {
    if (states[b] == nullptr) throw Error(std::string(fn) + ": states[" + std::to_string(b) + "] is null");
    views[b] = states[b]->ring.view();
  }
  return views;
}

}  // namespace

extern "C" {

const char* macattn_last_error(void) {
  if (t_last_error_lost) return "macattn: out of memory while recording an error message";
  return t_last_error.c_str();
}

const char* macattn_version(void) {
  return MACATTN_VERSION_STRING;
}

const char* macattn_dtype_name(int32_t dtype) {
  if (dtype < 0 || dtype > 255) return "invalid";
  return macattn::dtype_name(static_cast<macattn::DType>(dtype));
}

const char* macattn_backend_name(int32_t backend) {
  if (backend < 0 || backend > 255) return "invalid";
  return macattn::backend_name(static_cast<macattn::Backend>(backend));
}

int macattn_set_num_threads(int n) {
  return guarded("macattn_set_num_threads", [&] { macattn::set_num_threads(n); });
}

int macattn_cpu_isa(const char** out) {
  constexpr const char* fn = "macattn_cpu_isa";
  return guarded(fn, [&] {
    require_not_null(out, fn, "out");
    *out = macattn::cpu_isa();
  });
}

int macattn_set_cpu_products(int32_t products) {
  return guarded("macattn_set_cpu_products", [&] {
    if (products != MACATTN_CPU_PRODUCTS_FP32 && products != MACATTN_CPU_PRODUCTS_BF16)
      throw macattn::Error("products = " + std::to_string(products) + " is neither fp32 (0) nor bf16 (1)");
    macattn::set_cpu_products(static_cast<macattn::CpuProducts>(products));
  });
}

macattn_config macattn_config_default(void) {
  const macattn::MacConfig d;
  macattn_config c;
  c.window = d.window;
  c.rect_offset = d.rect_offset;
  c.tau = d.tau;
  c.front_sinks = d.front_sinks;
  c.min_context = d.min_context;
  c.report_miss_matches = d.report_miss_matches ? 1 : 0;
  return c;
}

macattn_kv_cache macattn_kv_contiguous(const macattn_contiguous_seq* seqs, int32_t batch_size, int32_t dtype) {
  macattn_kv_cache kv{};
  kv.storage = MACATTN_KV_CONTIGUOUS;
  kv.dtype = dtype;
  kv.batch_size = batch_size;
  kv.seqs = seqs;
  return kv;
}

macattn_kv_cache macattn_kv_paged(const macattn_paged_kv* paged, int32_t batch_size, int32_t dtype) {
  macattn_kv_cache kv{};
  kv.storage = MACATTN_KV_PAGED;
  kv.dtype = dtype;
  kv.batch_size = batch_size;
  if (paged != nullptr) kv.paged = *paged;  // a null paged leaves null pointers, rejected at use
  return kv;
}

int macattn_state_create(const macattn_shape* shape, const macattn_config* config, int32_t ring_dtype,
                         macattn_state** out) {
  constexpr const char* fn = "macattn_state_create";
  return guarded(fn, [&] {
    require_not_null(out, fn, "out");
    const macattn::AttentionShape s = to_shape(shape, fn);
    const macattn::MacConfig c = to_config(config, fn);
    *out = new macattn_state{macattn::MacState(s, c, to_dtype(ring_dtype, fn, "ring_dtype"))};
  });
}

int macattn_state_destroy(macattn_state* state) {
  delete state;
  return MACATTN_OK;
}

int macattn_state_reset(macattn_state* state) {
  constexpr const char* fn = "macattn_state_reset";
  return guarded(fn, [&] {
    require_not_null(state, fn, "state");
    state->ring.reset();
  });
}

int macattn_state_invalidate(macattn_state* state) {
  constexpr const char* fn = "macattn_state_invalidate";
  return guarded(fn, [&] {
    require_not_null(state, fn, "state");
    state->ring.invalidate();
  });
}

int macattn_state_position(const macattn_state* state, int64_t* out) {
  constexpr const char* fn = "macattn_state_position";
  return guarded(fn, [&] {
    require_not_null(state, fn, "state");
    require_not_null(out, fn, "out");
    *out = state->ring.position();
  });
}

int macattn_state_ready(const macattn_state* state, int* out) {
  constexpr const char* fn = "macattn_state_ready";
  return guarded(fn, [&] {
    require_not_null(state, fn, "state");
    require_not_null(out, fn, "out");
    *out = state->ring.ready() ? 1 : 0;
  });
}

int macattn_state_bytes(const macattn_state* state, int64_t* out) {
  constexpr const char* fn = "macattn_state_bytes";
  return guarded(fn, [&] {
    require_not_null(state, fn, "state");
    require_not_null(out, fn, "out");
    *out = static_cast<int64_t>(state->ring.bytes());
  });
}

int macattn_exact_decode(const macattn_shape* shape, const macattn_kv_cache* kv, const void* q_post, int32_t q_dtype,
                         void* out, float* lse, int32_t backend) {
  constexpr const char* fn = "macattn_exact_decode";
  return guarded(fn, [&] {
    const macattn::AttentionShape s = to_shape(shape, fn);
    const KvHolder cache(kv, s, fn);
    const macattn::DType dt = to_dtype(q_dtype, fn, "q_dtype");
    macattn::exact_decode(s, cache.view(), macattn::ConstTensor(q_post, dt), macattn::Tensor{out, dt}, lse,
                          to_backend(backend, fn));
  });
}

int macattn_mac_decode(const macattn_shape* shape, const macattn_config* config, const macattn_kv_cache* kv,
                       const void* q_post, const void* q_pre, int32_t q_dtype, macattn_state* const* states, void* out,
                       float* lse, macattn_head_stats* head_stats, macattn_step_stats* step_stats, int32_t backend) {
  constexpr const char* fn = "macattn_mac_decode";
  return guarded(fn, [&] {
    const macattn::AttentionShape s = to_shape(shape, fn);
    const macattn::MacConfig c = to_config(config, fn);
    const KvHolder cache(kv, s, fn);
    const macattn::DType dt = to_dtype(q_dtype, fn, "q_dtype");
    const macattn::Backend be = to_backend(backend, fn);
    const std::int32_t batch = cache.view().batch_size();
    const std::vector<macattn::MacStateView> views = to_views(states, batch, fn);

    std::vector<macattn::HeadStats> heads;
    if (head_stats != nullptr) heads.resize(static_cast<std::size_t>(batch) * static_cast<std::size_t>(s.num_q_heads));
    macattn::StepStats step;
    macattn::mac_decode(s, c, cache.view(), macattn::ConstTensor(q_post, dt), macattn::ConstTensor(q_pre, dt), views,
                        macattn::Tensor{out, dt}, lse, head_stats ? heads.data() : nullptr,
                        step_stats ? &step : nullptr, be);

    for (std::size_t i = 0; i < heads.size(); ++i) {
      head_stats[i].matched_position = heads[i].matched_position;
      head_stats[i].kv_tokens_read = heads[i].kv_tokens_read;
      head_stats[i].match_distance = heads[i].match_distance;
      head_stats[i].band_len = heads[i].band_len;
      head_stats[i].hit = heads[i].hit;
    }
    if (step_stats != nullptr) {
      step_stats->heads = step.heads;
      step_stats->heads_hit = step.heads_hit;
      step_stats->groups = step.groups;
      step_stats->groups_all_hit = step.groups_all_hit;
      step_stats->kv_tokens_read = step.kv_tokens_read;
      step_stats->kv_tokens_exact = step.kv_tokens_exact;
      step_stats->ring_wipes = step.ring_wipes;
    }
  });
}

int macattn_prefill_init(const macattn_shape* shape, const macattn_config* config, const macattn_kv_cache* kv,
                         const void* q_post, const void* q_pre, int32_t q_dtype, const int32_t* row_indptr,
                         macattn_state* const* states, int32_t backend) {
  constexpr const char* fn = "macattn_prefill_init";
  return guarded(fn, [&] {
    const macattn::AttentionShape s = to_shape(shape, fn);
    const macattn::MacConfig c = to_config(config, fn);
    const KvHolder cache(kv, s, fn);
    const macattn::DType dt = to_dtype(q_dtype, fn, "q_dtype");
    const macattn::Backend be = to_backend(backend, fn);
    const std::int32_t batch = cache.view().batch_size();
    require_not_null(row_indptr, fn, "row_indptr");
    const std::vector<macattn::MacStateView> views = to_views(states, batch, fn);
    macattn::mac_prefill_init(s, c, cache.view(), macattn::ConstTensor(q_post, dt), macattn::ConstTensor(q_pre, dt),
                              std::span<const std::int32_t>(row_indptr, static_cast<std::size_t>(batch) + 1), views,
                              be);
  });
}

int macattn_merge_states(int64_t n, int32_t head_dim, const float* o1, const float* lse1, const float* o2,
                         const float* lse2, float* out, float* lse_out) {
  return guarded("macattn_merge_states", [&] { macattn::merge_states(n, head_dim, o1, lse1, o2, lse2, out, lse_out); });
}

}  // extern "C"
