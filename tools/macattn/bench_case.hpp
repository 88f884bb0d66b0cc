// tools/macattn/bench_case.hpp: the inputs of one benchmark configuration.
//
// Hit rates are forced honestly: nothing overrides a decision. Ring rows hold random pre-RoPE
// queries, far apart (squared distance about 2*D against a threshold of 2*D*(1-tau)^2); a head
// meant to hit gets a query within 1e-2 per dim of its ring row at t - match_age, a head meant
// to miss a fresh random query. The real scan then finds exactly the intended matches, which
// the benchmark verifies from the returned stats.
#pragma once

#include <cstdint>
#include <random>
#include <new>
#include <vector>

#include "bench.hpp"
#include "macattn/macattn.hpp"

namespace macattn_tool {

/// Host words of a K or V buffer: on huge pages (macattn::huge_page_alloc) or plain 4 KiB
/// pages, per `--huge-pages`.
template <class T>
struct KVAllocator {
  using value_type = T;
  bool huge = true;
  KVAllocator() noexcept = default;
  explicit KVAllocator(bool huge_pages) noexcept : huge(huge_pages) {}
  template <class U>
  KVAllocator(const KVAllocator<U>& other) noexcept : huge(other.huge) {}
  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(huge ? macattn::huge_page_alloc(n * sizeof(T)) : ::operator new(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (huge) macattn::huge_page_free(p, n * sizeof(T));
    else ::operator delete(p);
  }
  template <class U>
  bool operator==(const KVAllocator<U>& other) const noexcept { return huge == other.huge; }
};
using KVWords = std::vector<std::uint16_t, KVAllocator<std::uint16_t>>;

struct KVBuffers {
  macattn::AttentionShape shape;
  macattn::DType dtype;
  std::int32_t batch;
  std::int64_t context;  // tokens per sequence; decode position t = context - 1
  std::vector<KVWords> k, v;  // per sequence, [context, Hkv, D] as raw 16/32-bit words
  std::vector<macattn::ContiguousSequence> seqs;
  std::size_t bytes() const;  // K + V bytes of all sequences
  macattn::KVCacheView view() const;
};

/// Random K/V (uniform, variance 1), generated in parallel with a fixed seed; on huge pages
/// unless huge_pages is false.
KVBuffers make_kv(const macattn::AttentionShape& shape, macattn::DType dtype, std::int32_t batch, std::int64_t context,
                  std::uint64_t seed, bool huge_pages = true);

struct MacInputs {
  std::vector<float> q_post, q_pre;    // [B, Hq, D]
  std::vector<macattn::MacState> rings;  // pristine states, ready at position t
  std::vector<std::uint8_t> intended_hit;  // [B, Hq]
  std::int64_t intended_hits = 0;
};

/// Queries and rings for a target hit rate. packed: round((1-rate)*groups) whole KV groups
/// (chosen at random) miss; independent: each head misses with probability 1-rate.
MacInputs make_mac_inputs(const KVBuffers& kv, const macattn::MacConfig& config, macattn::DType ring_dtype,
                          double hit_rate, MissPattern pattern, std::int32_t match_age, std::uint64_t seed);

}  // namespace macattn_tool
