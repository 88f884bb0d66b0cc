// macattn/kv_cache.hpp: read-only views of a batch's K/V cache, contiguous or paged.
//
// A view never owns memory. Token j of sequence b, KV head g, is a row of head_dim elements
// of `dtype` in K and the matching row in V. Positions run 0 .. seq_len(b)-1; the decode
// position of sequence b is t = seq_len(b) - 1 (the current token's K/V is already stored).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "macattn/dtype.hpp"

namespace macattn {

/// One sequence of a contiguous cache: k and v are `[length, num_kv_heads, head_dim]`,
/// row-major, tightly packed.
struct ContiguousSequence {
  const void* k = nullptr;
  const void* v = nullptr;
  std::int64_t length = 0;
};

/// Page layouts, named as FlashInfer names them.
enum class KVLayout : std::uint8_t {
  NHD = 0,  ///< a page is [page_size, num_kv_heads, head_dim]
  HND = 1,  ///< a page is [num_kv_heads, page_size, head_dim]
};
const char* kv_layout_name(KVLayout layout);

/// A paged cache with FlashInfer's page table. k_pages and v_pages each hold num_pages
/// pages in `layout`. Sequence b owns pages indices[indptr[b] .. indptr[b+1]) in order; all
/// are full except the last, which holds last_page_len[b] tokens, so
/// seq_len(b) = (indptr[b+1] - indptr[b] - 1) * page_size + last_page_len[b]
/// (0 when the sequence has no pages). indptr: [batch+1], indptr[0] = 0, non-decreasing;
/// indices: [indptr[batch]], each in [0, num_pages); last_page_len: [batch], in [1, page_size]
/// for a sequence with pages (0 allowed for one without).
struct PagedKV {
  const void* k_pages = nullptr;
  const void* v_pages = nullptr;
  std::int64_t num_pages = 0;
  std::int32_t page_size = 0;
  KVLayout layout = KVLayout::NHD;
  const std::int32_t* indptr = nullptr;
  const std::int32_t* indices = nullptr;
  const std::int32_t* last_page_len = nullptr;
};

/// The view the entry points take. Construct with contiguous() or paged(); both validate
/// everything they can reach (null pointers, negative lengths, page indices out of range,
/// bad layouts) and throw macattn::Error naming the bad value.
class KVCacheView {
 public:
  enum class Storage : std::uint8_t { contiguous, paged };

  /// `sequences` must outlive the view (it is referenced, not copied).
  static KVCacheView contiguous(std::span<const ContiguousSequence> sequences, std::int32_t num_kv_heads,
                                std::int32_t head_dim, DType dtype);
  /// The arrays behind `paged` must outlive the view; `batch_size` sequences.
  static KVCacheView paged(const PagedKV& paged, std::int32_t batch_size, std::int32_t num_kv_heads,
                           std::int32_t head_dim, DType dtype);

  Storage storage() const { return storage_; }
  DType dtype() const { return dtype_; }
  std::int32_t batch_size() const { return batch_size_; }
  std::int32_t num_kv_heads() const { return num_kv_heads_; }
  std::int32_t head_dim() const { return head_dim_; }
  std::int64_t seq_len(std::int32_t b) const;
  const PagedKV& paged_kv() const { return paged_; }
  std::span<const ContiguousSequence> sequences() const { return sequences_; }

  /// Pointer to the first element of the K (resp. V) row of token `pos`, KV head `kv_head`,
  /// of sequence b. No bounds checks (hot path); callers stay inside seq_len(b).
  const void* k_row(std::int32_t b, std::int64_t pos, std::int32_t kv_head) const {
    return row(storage_ == Storage::paged ? paged_.k_pages : sequences_[b].k, b, pos, kv_head);
  }
  const void* v_row(std::int32_t b, std::int64_t pos, std::int32_t kv_head) const {
    return row(storage_ == Storage::paged ? paged_.v_pages : sequences_[b].v, b, pos, kv_head);
  }

  std::string to_string() const;

 private:
  const void* row(const void* base, std::int32_t b, std::int64_t pos, std::int32_t kv_head) const;

  Storage storage_ = Storage::contiguous;
  DType dtype_ = DType::f32;
  std::int32_t batch_size_ = 0;
  std::int32_t num_kv_heads_ = 0;
  std::int32_t head_dim_ = 0;
  std::span<const ContiguousSequence> sequences_;
  PagedKV paged_;
};

}  // namespace macattn
