// tests/fixture.cpp
#include "fixture.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <sstream>

namespace fx {

namespace {
std::size_t esize(DType dt) { return dt == DType::f32 ? 4 : 2; }
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
}  // namespace

Buf::Buf(DType dt, std::size_t n) : dtype(dt), val(n, 0.0f), raw(n * esize(dt), 0) {}

void Buf::set(std::size_t i, float v) {
  macattn::store_from_float(raw.data(), dtype, i, v);
  val[i] = macattn::load_as_float(raw.data(), dtype, i);
}

Buf random_buf(DType dtype, std::size_t n, std::mt19937_64& rng, double stddev) {
  std::normal_distribution<double> nd(0.0, stddev);
  Buf b(dtype, n);
  for (std::size_t i = 0; i < n; ++i) b.set(i, static_cast<float>(nd(rng)));
  return b;
}

Buf fill_buf(DType dtype, std::size_t n, float value) {
  Buf b(dtype, n);
  for (std::size_t i = 0; i < n; ++i) b.set(i, value);
  return b;
}

std::vector<std::int64_t> KVBatch::full_lens() const {
  std::vector<std::int64_t> r;
  for (const auto& s : seqs) r.push_back(s.len);
  return r;
}

macattn::KVCacheView KVBatch::view(const std::vector<std::int64_t>& lens) {
  cs.resize(seqs.size());
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    cs[b].k = k[b].data();
    cs[b].v = v[b].data();
    cs[b].length = lens[b];
  }
  return macattn::KVCacheView::contiguous(cs, hkv, d, dtype);
}

KVBatch random_kv(int hkv, int d, DType dtype, const std::vector<std::int64_t>& lens, std::mt19937_64& rng) {
  KVBatch kv;
  kv.hkv = hkv;
  kv.d = d;
  kv.dtype = dtype;
  for (std::int64_t len : lens) {
    const std::size_t n = static_cast<std::size_t>(len) * hkv * d;
    // At least one element so data() is never null, even for an empty sequence.
    kv.k.push_back(random_buf(dtype, std::max<std::size_t>(n, 1), rng));
    kv.v.push_back(random_buf(dtype, std::max<std::size_t>(n, 1), rng));
    oracle::Seq s;
    s.k = kv.k.back().val;
    s.v = kv.v.back().val;
    s.len = len;
    kv.seqs.push_back(std::move(s));
  }
  return kv;
}

PagedBuf make_paged(const KVBatch& kv, const std::vector<std::int64_t>& lens, int page_size,
                    macattn::KVLayout layout, std::mt19937_64& rng) {
  PagedBuf pb;
  pb.hkv = kv.hkv;
  pb.d = kv.d;
  pb.batch = kv.batch();
  pb.dtype = kv.dtype;
  std::vector<std::int32_t> npages;
  std::int32_t total = 0;
  for (std::int64_t len : lens) {
    npages.push_back(static_cast<std::int32_t>((len + page_size - 1) / page_size));
    total += npages.back();
  }
  const std::int32_t num_pages = total + 3;  // spare pages nobody owns
  std::vector<std::int32_t> perm(static_cast<std::size_t>(num_pages));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  const std::size_t es = esize(kv.dtype);
  const std::size_t page_elems = static_cast<std::size_t>(page_size) * kv.hkv * kv.d;
  pb.k.resize(page_elems * num_pages * es);
  pb.v.resize(pb.k.size());
  for (std::size_t i = 0; i < page_elems * num_pages; ++i) {
    macattn::store_from_float(pb.k.data(), kv.dtype, i, kNaN);
    macattn::store_from_float(pb.v.data(), kv.dtype, i, kNaN);
  }
  pb.indptr.push_back(0);
  std::size_t next = 0;
  for (int b = 0; b < kv.batch(); ++b) {
    for (std::int32_t i = 0; i < npages[b]; ++i) pb.indices.push_back(perm[next++]);
    pb.indptr.push_back(static_cast<std::int32_t>(pb.indices.size()));
    const std::int64_t len = lens[b];
    pb.last_page_len.push_back(len == 0 ? 0 : static_cast<std::int32_t>(len - (npages[b] - 1) * page_size));
    for (std::int64_t j = 0; j < len; ++j) {
      const std::int64_t page = pb.indices[pb.indptr[b] + j / page_size];
      const std::int64_t off = j % page_size;
      for (int g = 0; g < kv.hkv; ++g) {
        const std::size_t dst = layout == macattn::KVLayout::NHD
                                    ? static_cast<std::size_t>(((page * page_size + off) * kv.hkv + g) * kv.d)
                                    : static_cast<std::size_t>(((page * kv.hkv + g) * page_size + off) * kv.d);
        const std::size_t src = static_cast<std::size_t>((j * kv.hkv + g) * kv.d);
        std::memcpy(pb.k.data() + dst * es, kv.k[b].raw.data() + src * es, kv.d * es);
        std::memcpy(pb.v.data() + dst * es, kv.v[b].raw.data() + src * es, kv.d * es);
      }
    }
  }
  if (pb.indices.empty()) pb.indices.push_back(0);  // keep a non-null pointer; indptr[B] = 0 ignores it
  pb.pk.k_pages = pb.k.data();
  pb.pk.v_pages = pb.v.data();
  pb.pk.num_pages = num_pages;
  pb.pk.page_size = page_size;
  pb.pk.layout = layout;
  pb.pk.indptr = pb.indptr.data();
  pb.pk.indices = pb.indices.data();
  pb.pk.last_page_len = pb.last_page_len.data();
  return pb;
}

macattn::KVCacheView PagedBuf::view() const {
  return macattn::KVCacheView::paged(pk, batch, hkv, d, dtype);
}

QStream drifting_queries(DType dtype, std::int64_t len, int hq, int d, std::mt19937_64& rng, double drift,
                         double jump_prob, double jump) {
  QStream q;
  q.hq = hq;
  q.d = d;
  const std::size_t n = static_cast<std::size_t>(len) * hq * d;
  q.post = random_buf(dtype, n, rng);
  q.pre = Buf(dtype, n);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  std::vector<double> cur(static_cast<std::size_t>(hq) * d);
  for (std::int64_t p = 0; p < len; ++p) {
    for (int h = 0; h < hq; ++h) {
      const bool fresh = p == 0 || ud(rng) < jump_prob;
      for (int i = 0; i < d; ++i) {
        double& c = cur[static_cast<std::size_t>(h * d + i)];
        c = fresh ? jump * nd(rng) : c + drift * nd(rng);
        q.pre.set(static_cast<std::size_t>((p * hq + h) * d + i), static_cast<float>(c));
      }
    }
  }
  return q;
}

namespace {
void copy_row(Buf& dst, std::size_t drow, const Buf& src, std::size_t srow, std::size_t row_elems) {
  const std::size_t es = esize(dst.dtype);
  std::memcpy(dst.raw.data() + drow * row_elems * es, src.raw.data() + srow * row_elems * es, row_elems * es);
  std::copy_n(src.val.begin() + static_cast<std::ptrdiff_t>(srow * row_elems), row_elems,
              dst.val.begin() + static_cast<std::ptrdiff_t>(drow * row_elems));
}
}  // namespace

Buf gather(const std::vector<QStream>& streams, const std::vector<std::int64_t>& pos, bool post) {
  const std::size_t row = static_cast<std::size_t>(streams[0].hq) * streams[0].d;
  Buf r(streams[0].post.dtype, row * streams.size());
  for (std::size_t b = 0; b < streams.size(); ++b)
    copy_row(r, b, post ? streams[b].post : streams[b].pre, static_cast<std::size_t>(pos[b]), row);
  return r;
}

Buf gather_rows(const std::vector<QStream>& streams, const std::vector<std::int64_t>& first,
                const std::vector<std::int64_t>& count, bool post) {
  const std::size_t row = static_cast<std::size_t>(streams[0].hq) * streams[0].d;
  const std::int64_t total = std::accumulate(count.begin(), count.end(), std::int64_t{0});
  Buf r(streams[0].post.dtype, row * static_cast<std::size_t>(std::max<std::int64_t>(total, 1)));
  std::size_t out_row = 0;
  for (std::size_t b = 0; b < streams.size(); ++b)
    for (std::int64_t i = 0; i < count[b]; ++i)
      copy_row(r, out_row++, post ? streams[b].post : streams[b].pre, static_cast<std::size_t>(first[b] + i), row);
  return r;
}

oracle::Ring ring_from_state(const macattn::MacState& st) {
  oracle::Ring r(st.window(), st.num_q_heads(), st.head_dim(), st.ring_dtype());
  for (int s = 0; s < r.w; ++s)
    for (int h = 0; h < r.hq; ++h) {
      for (int i = 0; i < r.d; ++i) {
        r.qrow(s, h)[i] = st.q_at(s, h, i);
        r.orow(s, h)[i] = st.o_at(s, h, i);
      }
      r.lse(s, h) = st.lse_at(s, h);
    }
  r.position = st.position();
  r.ready = st.ready();
  return r;
}

void write_ring(macattn::MacState& st, const oracle::Ring& ring) {
  macattn::MacStateView v = st.view();
  const std::size_t n = static_cast<std::size_t>(ring.w) * ring.hq * ring.d;
  for (std::size_t i = 0; i < n; ++i) {
    macattn::store_from_float(v.qring, v.ring_dtype, i, ring.q[i]);
    macattn::store_from_float(v.oring, v.ring_dtype, i, ring.o[i]);
  }
  std::copy(ring.l.begin(), ring.l.end(), v.lring);
  *v.position = ring.position;
  *v.ready = ring.ready ? 1 : 0;
}

Tol tol_for(DType dtype) {
  Tol t;
  if (dtype == DType::f16) t.rtol = std::ldexp(1.0, -10);
  if (dtype == DType::bf16) t.rtol = std::ldexp(1.0, -7);
  return t;
}

namespace {
bool near(double a, double b, double rtol, double atol) {
  if (std::isinf(b) || std::isinf(a)) return a == b;
  return std::fabs(a - b) <= atol + rtol * std::fabs(b);
}
}  // namespace

::testing::AssertionResult outputs_match(const Buf& out, const std::vector<float>& lse,
                                         const std::vector<oracle::State>& ref, const Tol& tol) {
  const std::size_t d = ref.empty() ? 0 : ref[0].o.size();
  if (out.size() < ref.size() * d) return ::testing::AssertionFailure() << "output buffer too small";
  for (std::size_t r = 0; r < ref.size(); ++r) {
    for (std::size_t i = 0; i < d; ++i) {
      const double a = out.get(r * d + i), b = ref[r].o[i];
      if (!near(a, b, tol.rtol, tol.atol))
        return ::testing::AssertionFailure() << "out[row*Hq+h=" << r << "][" << i << "] = " << a << ", oracle "
                                             << b << " (diff " << a - b << ")";
    }
    if (!lse.empty()) {
      const double a = lse[r], b = ref[r].lse;
      if (!near(a, b, 0.0, tol.lse * (1.0 + (std::isinf(b) ? 0.0 : std::fabs(b)))))
        return ::testing::AssertionFailure() << "lse[" << r << "] = " << a << ", oracle " << b;
    }
  }
  return ::testing::AssertionSuccess();
}

namespace {
::testing::AssertionResult slot_check(const macattn::MacState& st, const oracle::Ring& ring, std::int64_t s,
                                      const Tol* tol = nullptr) {
  const Tol t = tol ? *tol : tol_for(ring.dtype);
  const double lse_tol = tol ? tol->lse : 2e-5;
  for (int h = 0; h < ring.hq; ++h) {
    const double la = st.lse_at(static_cast<std::int32_t>(s), h), lb = ring.lse(s, h);
    const bool lse_ok = (std::isinf(lb) || std::isinf(la)) ? la == lb : std::fabs(la - lb) <= lse_tol * (1 + std::fabs(lb));
    if (!lse_ok)
      return ::testing::AssertionFailure() << "lring[slot " << s << "][head " << h << "] = " << la << ", oracle "
                                           << lb;
    for (int i = 0; i < ring.d; ++i) {
      const float qa = st.q_at(static_cast<std::int32_t>(s), h, i), qb = ring.qrow(s, h)[i];
      if (!(qa == qb))
        return ::testing::AssertionFailure() << "qring[slot " << s << "][head " << h << "][" << i << "] = " << qa
                                             << ", oracle " << qb;
      const double oa = st.o_at(static_cast<std::int32_t>(s), h, i), ob = ring.orow(s, h)[i];
      if (!near(oa, ob, t.rtol, t.atol))
        return ::testing::AssertionFailure() << "oring[slot " << s << "][head " << h << "][" << i << "] = " << oa
                                             << ", oracle " << ob;
    }
  }
  return ::testing::AssertionSuccess();
}
}  // namespace

::testing::AssertionResult ring_slot_matches(const macattn::MacState& st, const oracle::Ring& ring,
                                             std::int64_t slot) {
  return slot_check(st, ring, slot);
}

::testing::AssertionResult ring_matches(const macattn::MacState& st, const oracle::Ring& ring, const Tol* tol) {
  if (st.position() != ring.position)
    return ::testing::AssertionFailure() << "position " << st.position() << ", oracle " << ring.position;
  if (st.ready() != ring.ready)
    return ::testing::AssertionFailure() << "ready " << st.ready() << ", oracle " << ring.ready;
  for (int s = 0; s < ring.w; ++s) {
    auto r = slot_check(st, ring, s, tol);
    if (!r) return r;
  }
  return ::testing::AssertionSuccess();
}

double rel_l2(const Buf& out, const std::vector<oracle::State>& ref) {
  double num = 0.0, den = 0.0;
  std::size_t k = 0;
  for (const auto& s : ref)
    for (double x : s.o) {
      const double e = out.get(k++) - x;
      num += e * e;
      den += x * x;
    }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

std::vector<macattn::MacStateView> views(std::vector<macattn::MacState>& states) {
  std::vector<macattn::MacStateView> v;
  for (auto& s : states) v.push_back(s.view());
  return v;
}

}  // namespace fx
