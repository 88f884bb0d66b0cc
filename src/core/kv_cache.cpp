#include "macattn/kv_cache.hpp"

#include <sstream>

#include "core/check.hpp"

namespace macattn {

using detail::require;

const char* kv_layout_name(KVLayout layout) {
  switch (layout) {
    case KVLayout::NHD: return "NHD";
    case KVLayout::HND: return "HND";
  }
  return "invalid";
}

namespace {

void check_common(const char* fn, std::int32_t num_kv_heads, std::int32_t head_dim, DType dtype) {
  require(num_kv_heads >= 1, fn, ": num_kv_heads = ", num_kv_heads, ", must be >= 1");
  require(head_dim >= 1 && head_dim <= 1024, fn, ": head_dim = ", head_dim, ", must be in [1, 1024]");
  require(dtype_valid(dtype), fn, ": dtype value ", static_cast<int>(dtype), " is not f32, f16 or bf16");
}

}  // namespace

KVCacheView KVCacheView::contiguous(std::span<const ContiguousSequence> sequences, std::int32_t num_kv_heads,
                                    std::int32_t head_dim, DType dtype) {
  constexpr const char* fn = "KVCacheView::contiguous";
  check_common(fn, num_kv_heads, head_dim, dtype);
  require(sequences.size() <= 0x7fffffff, fn, ": batch of ", sequences.size(), " sequences is too large");
  for (std::size_t b = 0; b < sequences.size(); ++b) {
    const ContiguousSequence& s = sequences[b];
    require(s.length >= 0, fn, ": sequence ", b, " has length ", s.length, " < 0");
    require(s.length == 0 || (s.k != nullptr && s.v != nullptr), fn, ": sequence ", b, " has length ", s.length,
            " but a null ", s.k == nullptr ? "k" : "v", " pointer");
  }
  KVCacheView view;
  view.storage_ = Storage::contiguous;
  view.dtype_ = dtype;
  view.batch_size_ = static_cast<std::int32_t>(sequences.size());
  view.num_kv_heads_ = num_kv_heads;
  view.head_dim_ = head_dim;
  view.sequences_ = sequences;
  return view;
}

KVCacheView KVCacheView::paged(const PagedKV& p, std::int32_t batch_size, std::int32_t num_kv_heads,
                               std::int32_t head_dim, DType dtype) {
  constexpr const char* fn = "KVCacheView::paged";
  check_common(fn, num_kv_heads, head_dim, dtype);
  require(batch_size >= 0, fn, ": batch_size = ", batch_size, " < 0");
  require(p.page_size >= 1, fn, ": page_size = ", p.page_size, ", must be >= 1");
  require(p.num_pages >= 0, fn, ": num_pages = ", p.num_pages, " < 0");
  require(p.layout == KVLayout::NHD || p.layout == KVLayout::HND, fn, ": layout value ",
          static_cast<int>(p.layout), " is not NHD or HND");
  require(p.num_pages == 0 || p.k_pages != nullptr, fn, ": num_pages = ", p.num_pages, " but k_pages is null");
  require(p.num_pages == 0 || p.v_pages != nullptr, fn, ": num_pages = ", p.num_pages, " but v_pages is null");
  require(p.indptr != nullptr, fn, ": indptr is null");
  require(batch_size == 0 || p.last_page_len != nullptr, fn, ": last_page_len is null");
  require(p.indptr[0] == 0, fn, ": indptr[0] = ", p.indptr[0], ", must be 0");
  for (std::int32_t b = 0; b < batch_size; ++b) {
    const std::int32_t n = p.indptr[b + 1] - p.indptr[b];
    require(p.indptr[b + 1] >= p.indptr[b], fn, ": indptr decreases at ", b + 1, " (", p.indptr[b], " -> ",
            p.indptr[b + 1], ")");
    const std::int32_t last = p.last_page_len[b];
    if (n == 0) {
      require(last == 0, fn, ": sequence ", b, " has no pages but last_page_len = ", last);
    } else {
      require(last >= 1 && last <= p.page_size, fn, ": last_page_len[", b, "] = ", last, ", must be in [1, ",
              p.page_size, "]");
    }
  }
  const std::int32_t total = p.indptr[batch_size];
  require(total == 0 || p.indices != nullptr, fn, ": indices is null but indptr[", batch_size, "] = ", total);
  for (std::int32_t i = 0; i < total; ++i) {
    require(p.indices[i] >= 0 && p.indices[i] < p.num_pages, fn, ": indices[", i, "] = ", p.indices[i],
            " is outside [0, num_pages = ", p.num_pages, ")");
  }
  KVCacheView view;
  view.storage_ = Storage::paged;
  view.dtype_ = dtype;
  view.batch_size_ = batch_size;
  view.num_kv_heads_ = num_kv_heads;
  view.head_dim_ = head_dim;
  view.paged_ = p;
  return view;
}

std::int64_t KVCacheView::seq_len(std::int32_t b) const {
  if (storage_ == Storage::contiguous) return sequences_[static_cast<std::size_t>(b)].length;
  const std::int32_t n = paged_.indptr[b + 1] - paged_.indptr[b];
  if (n == 0) return 0;
  return static_cast<std::int64_t>(n - 1) * paged_.page_size + paged_.last_page_len[b];
}

const void* KVCacheView::row(const void* base, std::int32_t b, std::int64_t pos, std::int32_t kv_head) const {
  const std::size_t row_bytes = static_cast<std::size_t>(head_dim_) * dtype_size(dtype_);
  std::size_t row_index;
  if (storage_ == Storage::contiguous) {
    row_index = static_cast<std::size_t>(pos) * static_cast<std::size_t>(num_kv_heads_) + static_cast<std::size_t>(kv_head);
  } else {
    const std::int64_t ps = paged_.page_size;
    const auto page = static_cast<std::size_t>(paged_.indices[paged_.indptr[b] + pos / ps]);
    const auto off = static_cast<std::size_t>(pos % ps);
    const auto hkv = static_cast<std::size_t>(num_kv_heads_);
    const auto psz = static_cast<std::size_t>(ps);
    row_index = paged_.layout == KVLayout::NHD ? (page * psz + off) * hkv + static_cast<std::size_t>(kv_head)
                                               : (page * hkv + static_cast<std::size_t>(kv_head)) * psz + off;
  }
  return static_cast<const unsigned char*>(base) + row_index * row_bytes;
}

std::string KVCacheView::to_string() const {
  std::ostringstream s;
  s << (storage_ == Storage::paged ? "paged" : "contiguous") << " B=" << batch_size_ << " Hkv=" << num_kv_heads_
    << " D=" << head_dim_ << " dtype=" << dtype_name(dtype_);
  if (storage_ == Storage::paged)
    s << " page_size=" << paged_.page_size << " layout=" << kv_layout_name(paged_.layout)
      << " num_pages=" << paged_.num_pages;
  return s.str();
}

}  // namespace macattn
