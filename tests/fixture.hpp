// tests/fixture.hpp: random inputs in any dtype, contiguous and paged KV views, conversion
// between the library's ring and the oracle's, and tolerance-aware comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "macattn/macattn.hpp"
#include "oracle.hpp"

namespace fx {

using macattn::DType;

/// A tensor of n elements of dtype: the encoded bytes the library reads or writes, and the
/// fp32 values those bytes hold (what the oracle reads).
struct Buf {
  DType dtype = DType::f32;
  std::vector<float> val;
  std::vector<unsigned char> raw;

  Buf() = default;
  Buf(DType dt, std::size_t n);  // zeros
  std::size_t size() const { return val.size(); }
  void set(std::size_t i, float v);  // rounds v to dtype, stores value and bytes
  float get(std::size_t i) const { return macattn::load_as_float(raw.data(), dtype, i); }  // from bytes
  void* data() { return raw.data(); }
  const void* data() const { return raw.data(); }
  macattn::Tensor tensor() { return {raw.data(), dtype}; }
  macattn::ConstTensor ctensor() const { return {raw.data(), dtype}; }
};
Buf random_buf(DType dtype, std::size_t n, std::mt19937_64& rng, double stddev = 1.0);
Buf fill_buf(DType dtype, std::size_t n, float value);

/// A batch of sequences' K/V ([len, Hkv, D] each) with random N(0,1) values.
struct KVBatch {
  int hkv = 0, d = 0;
  DType dtype = DType::f32;
  std::vector<oracle::Seq> seqs;  // values (oracle side)
  std::vector<Buf> k, v;          // encoded (library side)
  std::vector<macattn::ContiguousSequence> cs;

  int batch() const { return static_cast<int>(seqs.size()); }
  std::vector<std::int64_t> full_lens() const;
  /// Contiguous view of the first lens[b] tokens of each sequence. Rebinds `cs`, so only the
  /// latest view of this batch is valid.
  macattn::KVCacheView view(const std::vector<std::int64_t>& lens);
  macattn::KVCacheView view() { return view(full_lens()); }
};
KVBatch random_kv(int hkv, int d, DType dtype, const std::vector<std::int64_t>& lens, std::mt19937_64& rng);

/// A paged copy of the first lens[b] tokens of each sequence of a KVBatch, pages in random
/// order, with spare pages and unused page tails filled with NaN.
struct PagedBuf {
  int hkv = 0, d = 0, batch = 0;
  DType dtype = DType::f32;
  std::vector<unsigned char> k, v;
  std::vector<std::int32_t> indptr, indices, last_page_len;
  macattn::PagedKV pk;
  macattn::KVCacheView view() const;
};
PagedBuf make_paged(const KVBatch& kv, const std::vector<std::int64_t>& lens, int page_size,
                    macattn::KVLayout layout, std::mt19937_64& rng);

/// Per-sequence query streams: post and pre are [len, Hq, D].
struct QStream {
  Buf post, pre;
  int hq = 0, d = 0;
  const float* post_row(std::int64_t pos) const { return post.val.data() + pos * hq * d; }
  const float* pre_row(std::int64_t pos) const { return pre.val.data() + pos * hq * d; }
};
/// q_pre drifts (q(p) = q(p-1) + drift*N(0,1)) and jumps to a fresh N(0, jump^2) row with
/// probability jump_prob, per head; q_post is independent N(0,1).
QStream drifting_queries(DType dtype, std::int64_t len, int hq, int d, std::mt19937_64& rng, double drift,
                         double jump_prob, double jump);
/// Gathers row pos[b] of streams[b] for every b into [B, Hq, D] (post if `post`, else pre).
Buf gather(const std::vector<QStream>& streams, const std::vector<std::int64_t>& pos, bool post);
/// Gathers rows [first[b], first[b]+count[b]) of every stream into [sum count, Hq, D].
Buf gather_rows(const std::vector<QStream>& streams, const std::vector<std::int64_t>& first,
                const std::vector<std::int64_t>& count, bool post);

/// The library ring as an oracle ring (exact values, position and ready flag).
oracle::Ring ring_from_state(const macattn::MacState& st);
/// Writes an oracle ring into a library ring through its view.
void write_ring(macattn::MacState& st, const oracle::Ring& ring);

/// Tolerances for a comparison of library results with fp64 oracle results.
struct Tol {
  double rtol = 1e-5;  ///< relative, per element
  double atol = 2e-5;  ///< absolute, per element
  double lse = 2e-5;   ///< LSE: |a-b| <= lse * (1 + |b|)
};
/// Tolerance for values that end in `dtype` (fp32 accumulation plus one rounding to dtype).
Tol tol_for(DType dtype);

/// out: [rows, Hq, D] in its dtype, lse [rows, Hq] (or empty to skip); ref: rows*Hq states.
::testing::AssertionResult outputs_match(const Buf& out, const std::vector<float>& lse,
                                         const std::vector<oracle::State>& ref, const Tol& tol);
/// Every slot of the library ring vs the oracle ring: q bitwise equal, o and lse within the
/// ring dtype's tolerance, -inf exactly where the oracle has it; position and ready equal.
/// tol: the entries' output and LSE tolerance (default: tol_for(ring dtype), LSE 2e-5).
::testing::AssertionResult ring_matches(const macattn::MacState& st, const oracle::Ring& ring, const Tol* tol = nullptr);
/// One slot only (all heads).
::testing::AssertionResult ring_slot_matches(const macattn::MacState& st, const oracle::Ring& ring,
                                             std::int64_t slot);
/// Relative L2 error ||a - b|| / ||b|| over all elements.
double rel_l2(const Buf& out, const std::vector<oracle::State>& ref);

/// A fixed seed from a test-case name (FNV-1a: the same on every platform).
inline std::uint64_t seed_of(const char* name) {
  std::uint64_t h = 1469598103934665603ull;
  for (; *name; ++name) h = (h ^ static_cast<unsigned char>(*name)) * 1099511628211ull;
  return h;
}

/// Views of a vector of states.
std::vector<macattn::MacStateView> views(std::vector<macattn::MacState>& states);

}  // namespace fx
