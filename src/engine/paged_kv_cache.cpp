#include "engine/paged_kv_cache.hpp"

#include <sys/mman.h>

#include <string>

#include "macattn/error.hpp"

namespace macattn::engine {

PagedKVCache::PagedKVCache(std::int32_t num_layers, std::int32_t num_kv_heads, std::int32_t head_dim,
                           std::int64_t capacity, std::int32_t page_size, DType dtype)
    : num_layers_(num_layers),
      num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      page_size_(page_size),
      capacity_(capacity),
      num_pages_(0),
      dtype_(dtype) {
  if (num_layers < 1 || num_kv_heads < 1 || head_dim < 1)
    throw Error("PagedKVCache: layers = " + std::to_string(num_layers) + ", kv heads = " +
                std::to_string(num_kv_heads) + ", head_dim = " + std::to_string(head_dim) + " must be >= 1");
  if (page_size < 1) throw Error("PagedKVCache: page_size = " + std::to_string(page_size) + " must be >= 1");
  if (capacity < 1 || capacity > (std::int64_t{1} << 31) - 1)
    throw Error("PagedKVCache: capacity = " + std::to_string(capacity) + " must be in [1, 2^31)");
  if (!dtype_valid(dtype)) throw Error("PagedKVCache: dtype is not f32, f16 or bf16");
  num_pages_ = (capacity + page_size - 1) / page_size;
  const std::size_t page_bytes = static_cast<std::size_t>(page_size) * num_kv_heads * head_dim * dtype_size(dtype);
  layer_bytes_ = page_bytes * static_cast<std::size_t>(num_pages_);
  mapped_bytes_ = layer_bytes_ * 2 * static_cast<std::size_t>(num_layers);
  void* p = ::mmap(nullptr, mapped_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    throw Error("PagedKVCache: cannot reserve " + std::to_string(mapped_bytes_) + " bytes for capacity " +
                std::to_string(capacity));
  base_ = static_cast<std::uint8_t*>(p);
#if defined(MADV_HUGEPAGE)
  // Decode streams every layer's K/V once per token: on 2 MiB pages the CPU kernels read it
  // about 20% faster (macattn/host_memory.hpp). Advice only; committed as positions are written.
  (void)::madvise(p, mapped_bytes_, MADV_HUGEPAGE);
#endif
  indices_.resize(static_cast<std::size_t>(num_pages_));
  for (std::int64_t i = 0; i < num_pages_; ++i) indices_[i] = static_cast<std::int32_t>(i);
}

PagedKVCache::PagedKVCache(PagedKVCache&& o) noexcept
    : num_layers_(o.num_layers_),
      num_kv_heads_(o.num_kv_heads_),
      head_dim_(o.head_dim_),
      page_size_(o.page_size_),
      capacity_(o.capacity_),
      num_pages_(o.num_pages_),
      dtype_(o.dtype_),
      layer_bytes_(o.layer_bytes_),
      base_(o.base_),
      mapped_bytes_(o.mapped_bytes_),
      indices_(std::move(o.indices_)) {
  o.base_ = nullptr;
  o.mapped_bytes_ = 0;
}

PagedKVCache& PagedKVCache::operator=(PagedKVCache&& o) noexcept {
  if (this != &o) {
    release();
    num_layers_ = o.num_layers_;
    num_kv_heads_ = o.num_kv_heads_;
    head_dim_ = o.head_dim_;
    page_size_ = o.page_size_;
    capacity_ = o.capacity_;
    num_pages_ = o.num_pages_;
    dtype_ = o.dtype_;
    layer_bytes_ = o.layer_bytes_;
    base_ = o.base_;
    mapped_bytes_ = o.mapped_bytes_;
    indices_ = std::move(o.indices_);
    o.base_ = nullptr;
    o.mapped_bytes_ = 0;
  }
  return *this;
}

PagedKVCache::~PagedKVCache() {
  release();
}

void PagedKVCache::release() {
  if (base_ != nullptr) ::munmap(base_, mapped_bytes_);
  base_ = nullptr;
}

void PagedKVCache::write(std::int32_t layer, std::int64_t pos, std::int64_t n, const float* k, const float* v) {
  if (layer < 0 || layer >= num_layers_)
    throw Error("PagedKVCache::write: layer = " + std::to_string(layer) + " out of range");
  if (pos < 0 || n < 0 || pos + n > capacity_)
    throw Error("PagedKVCache::write: positions [" + std::to_string(pos) + ", " + std::to_string(pos + n) +
                ") exceed the capacity " + std::to_string(capacity_));
  // NHD with identity pages: position p's rows are at p * Hkv * D elements of the layer.
  const std::size_t row = static_cast<std::size_t>(num_kv_heads_) * head_dim_;
  std::uint8_t* kb = base_ + layer_bytes_ * 2 * static_cast<std::size_t>(layer);
  std::uint8_t* vb = kb + layer_bytes_;
  const std::size_t es = dtype_size(dtype_);
  for (std::int64_t i = 0; i < n; ++i) {
    void* kd = kb + static_cast<std::size_t>(pos + i) * row * es;
    void* vd = vb + static_cast<std::size_t>(pos + i) * row * es;
    for (std::size_t e = 0; e < row; ++e) {
      store_from_float(kd, dtype_, e, k[i * row + e]);
      store_from_float(vd, dtype_, e, v[i * row + e]);
    }
  }
}

KVCacheView PagedKVCache::view(std::int32_t layer, std::int64_t length) {
  if (layer < 0 || layer >= num_layers_)
    throw Error("PagedKVCache::view: layer = " + std::to_string(layer) + " out of range");
  if (length < 0 || length > capacity_)
    throw Error("PagedKVCache::view: length = " + std::to_string(length) + " outside [0, " + std::to_string(capacity_) +
                "]");
  const std::int64_t pages = (length + page_size_ - 1) / page_size_;
  indptr_[0] = 0;
  indptr_[1] = static_cast<std::int32_t>(pages);
  last_page_len_[0] = pages == 0 ? 0 : static_cast<std::int32_t>(length - (pages - 1) * page_size_);
  PagedKV p;
  std::uint8_t* kb = base_ + layer_bytes_ * 2 * static_cast<std::size_t>(layer);
  p.k_pages = kb;
  p.v_pages = kb + layer_bytes_;
  p.num_pages = num_pages_;
  p.page_size = page_size_;
  p.layout = KVLayout::NHD;
  p.indptr = indptr_;
  p.indices = indices_.data();
  p.last_page_len = last_page_len_;
  return KVCacheView::paged(p, 1, num_kv_heads_, head_dim_, dtype_);
}

std::size_t PagedKVCache::bytes_for(std::int64_t length) const {
  return static_cast<std::size_t>(length) * num_kv_heads_ * head_dim_ * dtype_size(dtype_) * 2 * num_layers_;
}

}  // namespace macattn::engine
