// python/csrc/common.cpp: see common.hpp.
#include "common.hpp"

#include <limits>
#include <sstream>

namespace macattn_torch {
namespace {

std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

}  // namespace

macattn::DType to_dtype(const char* op, const char* name, const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return macattn::DType::f32;
    case at::kHalf:
      return macattn::DType::f16;
    case at::kBFloat16:
      return macattn::DType::bf16;
    default:
      TORCH_CHECK_TYPE(false, "macattn.", op, ": ", name, " has dtype ", t.scalar_type(),
                       "; supported: float32, float16, bfloat16");
  }
}

at::ScalarType to_scalar_type(macattn::DType dtype) {
  switch (dtype) {
    case macattn::DType::f32:
      return at::kFloat;
    case macattn::DType::f16:
      return at::kHalf;
    case macattn::DType::bf16:
      return at::kBFloat16;
  }
  TORCH_CHECK(false, "macattn: invalid dtype ", static_cast<int>(dtype));
}

void check_tensor(const char* op, const char* name, const at::Tensor& t, int64_t dim, const at::Device& device) {
  TORCH_CHECK_VALUE(t.defined(), "macattn.", op, ": ", name, " is undefined");
  TORCH_CHECK_VALUE(t.dim() == dim, "macattn.", op, ": ", name, " must be ", dim, "-D, got shape ", shape_str(t));
  TORCH_CHECK_VALUE(t.device() == device, "macattn.", op, ": ", name, " is on ", t.device(), " but q is on ", device);
  TORCH_CHECK_VALUE(t.is_contiguous(), "macattn.", op, ": ", name, " must be contiguous (shape ", shape_str(t),
                    ", strides ", t.strides(), ")");
}

void check_scalar_type(const char* op, const char* name, const at::Tensor& t, at::ScalarType want) {
  TORCH_CHECK_TYPE(t.scalar_type() == want, "macattn.", op, ": ", name, " must be ", want, ", got ", t.scalar_type());
}

PagedArgs parse_paged(const char* op, const at::Device& device, int64_t batch, const at::Tensor& k_pages,
                      const at::Tensor& v_pages, const at::Tensor& kv_indptr, const at::Tensor& kv_indices,
                      const at::Tensor& kv_last_page_len, const std::string& kv_layout) {
  PagedArgs a;
  const at::Device& dev = device;
  TORCH_CHECK_VALUE(kv_layout == "NHD" || kv_layout == "HND", "macattn.", op, ": kv_layout = '", kv_layout,
                    "', must be 'NHD' or 'HND'");
  const bool nhd = kv_layout == "NHD";
  for (auto [name, t] : {std::pair{"k_pages", &k_pages}, std::pair{"v_pages", &v_pages}}) {
    TORCH_CHECK_VALUE(t->defined() && t->dim() == 4, "macattn.", op, ": ", name, " must be 4-D ",
                      nhd ? "[num_pages, page_size, Hkv, D] (NHD)" : "[num_pages, Hkv, page_size, D] (HND)",
                      ", got shape ", t->defined() ? shape_str(*t) : "undefined");
    TORCH_CHECK_VALUE(t->device() == dev, "macattn.", op, ": ", name, " is on ", t->device(), " but q is on ", dev);
  }
  TORCH_CHECK_VALUE(k_pages.sizes() == v_pages.sizes(), "macattn.", op, ": k_pages ", shape_str(k_pages),
                    " and v_pages ", shape_str(v_pages), " differ in shape");
  TORCH_CHECK_TYPE(k_pages.scalar_type() == v_pages.scalar_type(), "macattn.", op, ": k_pages is ",
                   k_pages.scalar_type(), " but v_pages is ", v_pages.scalar_type());
  a.dtype = to_dtype(op, "k_pages", k_pages);
  const int64_t num_pages = k_pages.size(0);
  a.page_size = static_cast<int32_t>(nhd ? k_pages.size(1) : k_pages.size(2));
  a.num_kv_heads = static_cast<int32_t>(nhd ? k_pages.size(2) : k_pages.size(1));
  a.head_dim = static_cast<int32_t>(k_pages.size(3));
  TORCH_CHECK_VALUE(num_pages >= 1 && a.page_size >= 1 && a.num_kv_heads >= 1 && a.head_dim >= 1, "macattn.", op,
                    ": k_pages has an empty dimension: shape ", shape_str(k_pages));

  // Pages must be contiguous inside; the page stride a whole multiple of the page.
  const int64_t page_elems = k_pages.size(1) * k_pages.size(2) * k_pages.size(3);
  for (auto [name, t] : {std::pair{"k_pages", &k_pages}, std::pair{"v_pages", &v_pages}}) {
    const bool inner = t->stride(3) == 1 && t->stride(2) == t->size(3) && t->stride(1) == t->size(2) * t->size(3);
    TORCH_CHECK_VALUE(inner, "macattn.", op, ": each page of ", name, " must be contiguous (strides ", t->strides(),
                      " for shape ", shape_str(*t), ")");
  }
  int64_t stride0 = num_pages == 1 ? page_elems : k_pages.stride(0);
  TORCH_CHECK_VALUE(num_pages == 1 || v_pages.stride(0) == stride0, "macattn.", op,
                    ": k_pages and v_pages have page strides ", k_pages.stride(0), " and ", v_pages.stride(0),
                    "; they must be equal");
  TORCH_CHECK_VALUE(stride0 >= page_elems && stride0 % page_elems == 0, "macattn.", op, ": the page stride ", stride0,
                    " of k_pages/v_pages must be a whole multiple of the page size ", page_elems, " elements");
  a.page_stride_factor = stride0 / page_elems;
  const int64_t library_pages = (num_pages - 1) * a.page_stride_factor + 1;
  TORCH_CHECK_VALUE(library_pages <= std::numeric_limits<int32_t>::max(), "macattn.", op, ": ", num_pages,
                    " pages of stride factor ", a.page_stride_factor, " overflow int32 page indices");

  check_tensor(op, "kv_indptr", kv_indptr, 1, dev);
  check_tensor(op, "kv_indices", kv_indices, 1, dev);
  check_tensor(op, "kv_last_page_len", kv_last_page_len, 1, dev);
  check_scalar_type(op, "kv_indptr", kv_indptr, at::kInt);
  check_scalar_type(op, "kv_indices", kv_indices, at::kInt);
  check_scalar_type(op, "kv_last_page_len", kv_last_page_len, at::kInt);
  a.batch_size = static_cast<int32_t>(batch);
  TORCH_CHECK_VALUE(kv_indptr.size(0) == batch + 1, "macattn.", op, ": kv_indptr has ", kv_indptr.size(0),
                    " entries; a batch of ", batch, " needs ", batch + 1);
  TORCH_CHECK_VALUE(kv_last_page_len.size(0) == batch, "macattn.", op, ": kv_last_page_len has ",
                    kv_last_page_len.size(0), " entries; the batch is ", batch);
  a.caller_indices = kv_indices.numel();

  a.paged.num_pages = library_pages;
  a.paged.page_size = a.page_size;
  a.paged.layout = nhd ? macattn::KVLayout::NHD : macattn::KVLayout::HND;
  if (dev.is_meta()) return a;  // shapes only
  a.indices = a.page_stride_factor == 1 ? kv_indices : kv_indices * a.page_stride_factor;
  a.paged.k_pages = k_pages.data_ptr();
  a.paged.v_pages = v_pages.data_ptr();
  a.paged.indptr = kv_indptr.data_ptr<int32_t>();
  a.paged.indices = a.indices.data_ptr<int32_t>();
  a.paged.last_page_len = kv_last_page_len.data_ptr<int32_t>();
  return a;
}

macattn::AttentionShape make_shape(const char* op, const at::Tensor& q, const PagedArgs& kv, double softmax_scale) {
  TORCH_CHECK_VALUE(q.size(2) == kv.head_dim, "macattn.", op, ": q has head dim ", q.size(2),
                    " but the K/V pages have ", kv.head_dim);
  TORCH_CHECK_VALUE(q.size(1) % kv.num_kv_heads == 0, "macattn.", op, ": q has ", q.size(1),
                    " heads, not a multiple of the cache's ", kv.num_kv_heads, " KV heads");
  macattn::AttentionShape shape;
  shape.num_q_heads = static_cast<int32_t>(q.size(1));
  shape.num_kv_heads = kv.num_kv_heads;
  shape.head_dim = kv.head_dim;
  shape.softmax_scale = static_cast<float>(softmax_scale);
  call_library(op, [&] {
    shape.validate();
    return 0;
  });
  return shape;
}

int32_t check_rings(const char* op, const at::Tensor& qring, const at::Tensor& oring, const at::Tensor& lring,
                    const at::Tensor& position, const at::Tensor& ready, int64_t batch, int64_t num_q_heads,
                    int64_t head_dim, const at::Device& device) {
  check_tensor(op, "qring", qring, 4, device);
  check_tensor(op, "oring", oring, 4, device);
  check_tensor(op, "lring", lring, 3, device);
  check_tensor(op, "position", position, 1, device);
  check_tensor(op, "ready", ready, 1, device);
  to_dtype(op, "qring", qring);
  TORCH_CHECK_TYPE(oring.scalar_type() == qring.scalar_type(), "macattn.", op, ": oring is ", oring.scalar_type(),
                   " but qring is ", qring.scalar_type());
  check_scalar_type(op, "lring", lring, at::kFloat);
  check_scalar_type(op, "position", position, at::kLong);
  check_scalar_type(op, "ready", ready, at::kByte);
  const int64_t w = qring.size(1);
  const std::vector<int64_t> want{batch, w, num_q_heads, head_dim};
  TORCH_CHECK_VALUE(qring.sizes() == at::IntArrayRef(want), "macattn.", op, ": qring has shape ", shape_str(qring),
                    ", expected [B, W, Hq, D] = ", at::IntArrayRef(want));
  TORCH_CHECK_VALUE(oring.sizes() == qring.sizes(), "macattn.", op, ": oring has shape ", shape_str(oring),
                    ", expected ", shape_str(qring));
  const std::vector<int64_t> want_l{batch, w, num_q_heads};
  TORCH_CHECK_VALUE(lring.sizes() == at::IntArrayRef(want_l), "macattn.", op, ": lring has shape ", shape_str(lring),
                    ", expected [B, W, Hq] = ", at::IntArrayRef(want_l));
  TORCH_CHECK_VALUE(position.size(0) == batch && ready.size(0) == batch, "macattn.", op, ": position ",
                    shape_str(position), " and ready ", shape_str(ready), " must both be [B] = [", batch, "]");
  TORCH_CHECK_VALUE(w >= 1 && w <= std::numeric_limits<int32_t>::max(), "macattn.", op, ": ring window W = ", w);
  return static_cast<int32_t>(w);
}

std::vector<macattn::MacStateView> ring_views(const at::Tensor& qring, const at::Tensor& oring, at::Tensor& lring,
                                              at::Tensor& position, at::Tensor& ready) {
  const int64_t b = qring.size(0), w = qring.size(1), hq = qring.size(2), d = qring.size(3);
  const macattn::DType rd = to_dtype("ring", "qring", qring);
  const int64_t row_bytes = w * hq * d * static_cast<int64_t>(qring.element_size());
  std::vector<macattn::MacStateView> views(static_cast<size_t>(b));
  for (int64_t i = 0; i < b; ++i) {
    auto& v = views[static_cast<size_t>(i)];
    v.qring = static_cast<char*>(qring.data_ptr()) + i * row_bytes;
    v.oring = static_cast<char*>(oring.data_ptr()) + i * row_bytes;
    v.lring = lring.data_ptr<float>() + i * w * hq;
    v.position = position.data_ptr<int64_t>() + i;
    v.ready = ready.data_ptr<uint8_t>() + i;
    v.ring_dtype = rd;
    v.window = static_cast<int32_t>(w);
    v.num_q_heads = static_cast<int32_t>(hq);
    v.head_dim = static_cast<int32_t>(d);
  }
  return views;
}

macattn::MacConfig make_config(const char* op, int64_t window, int64_t rect_offset, double tau, int64_t front_sinks,
                               int64_t min_context) {
  auto int32 = [&](const char* name, int64_t v) {
    TORCH_CHECK_VALUE(v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max(), "macattn.",
                      op, ": ", name, " = ", v, " does not fit int32");
    return static_cast<int32_t>(v);
  };
  macattn::MacConfig c;
  c.window = int32("window", window);
  c.rect_offset = int32("rect_offset", rect_offset);
  c.tau = static_cast<float>(tau);
  c.front_sinks = int32("front_sinks", front_sinks);
  c.min_context = min_context;
  call_library(op, [&] {
    c.validate();
    return 0;
  });
  return c;
}

MacOutputs empty_mac_outputs(const at::Tensor& q, bool return_stats) {
  const int64_t b = q.size(0), hq = q.size(1);
  auto opts = q.options();
  const std::vector<int64_t> stat_shape = return_stats ? std::vector<int64_t>{b, hq} : std::vector<int64_t>{0};
  return {at::empty_like(q, at::MemoryFormat::Contiguous), at::empty({b, hq}, opts.dtype(at::kFloat)),
          at::empty(stat_shape, opts.dtype(at::kByte)), at::empty(stat_shape, opts.dtype(at::kLong)),
          at::empty(stat_shape, opts.dtype(at::kInt))};
}

macattn::DType check_queries(const char* op, const at::Tensor& q, const at::Tensor* q_pre) {
  check_tensor(op, "q", q, 3, q.device());
  const macattn::DType qd = to_dtype(op, "q", q);
  if (q_pre != nullptr) {
    check_tensor(op, "q_pre", *q_pre, 3, q.device());
    TORCH_CHECK_VALUE(q_pre->sizes() == q.sizes(), "macattn.", op, ": q_pre has shape ", q_pre->sizes(), ", q has ",
                      q.sizes());
    TORCH_CHECK_TYPE(q_pre->scalar_type() == q.scalar_type(), "macattn.", op, ": q_pre is ", q_pre->scalar_type(),
                     " but q is ", q.scalar_type());
  }
  return qd;
}

}  // namespace macattn_torch
