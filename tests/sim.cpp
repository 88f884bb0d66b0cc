// tests/sim.cpp
#include "sim.hpp"

#include <cstring>

#include <cmath>

namespace fx {

Sim::Sim(const SimSpec& s) : spec(s), p(oracle::make_params(s.shape, s.cfg)) {
  std::mt19937_64 rng(s.seed);
  const int B = static_cast<int>(s.start_len.size());
  std::vector<std::int64_t> full;
  for (std::int64_t l : s.start_len) full.push_back(l + s.steps + s.spare);
  kv = random_kv(p.hkv, p.d, s.kv_dtype, full, rng);
  for (int b = 0; b < B; ++b) {
    q.push_back(drifting_queries(s.q_dtype, full[b], p.hq, p.d, rng, s.drift, s.jump_prob, s.jump));
    states.emplace_back(s.shape, s.cfg, s.ring_dtype);
    rings.emplace_back(p.w, p.hq, p.d, s.ring_dtype);
  }
  len_ = s.start_len;
  if (s.prefill) {
    std::vector<std::int64_t> P, first(static_cast<std::size_t>(B), 0);
    std::vector<std::int32_t> indptr{0};
    for (int b = 0; b < B; ++b) {
      P.push_back(len_[b] - 1);
      indptr.push_back(indptr.back() + static_cast<std::int32_t>(P.back()));
    }
    const Buf qp = gather_rows(q, first, P, true), qr = gather_rows(q, first, P, false);
    auto v = views(states);
    macattn::mac_prefill_init(s.shape, s.cfg, kv.view(P), qp.ctensor(), qr.ctensor(), indptr, v, s.backend);
    for (int b = 0; b < B; ++b) oracle::prefill(p, kv.seqs[b], P[b], P[b], q[b].post_row(0), q[b].pre_row(0), rings[b]);
  }
}

void Sim::set_pre(int b, std::int64_t pos, int h, const std::vector<float>& row) {
  for (int i = 0; i < p.d; ++i)
    q[static_cast<std::size_t>(b)].pre.set(static_cast<std::size_t>((pos * p.hq + h) * p.d + i), row[static_cast<std::size_t>(i)]);
}

::testing::AssertionResult Sim::step() {
  const int B = static_cast<int>(len_.size());
  std::vector<std::int64_t> pos;
  for (int b = 0; b < B; ++b) {
    if (len_[b] > kv.seqs[b].len) return ::testing::AssertionFailure() << "Sim: more steps than the spec allows";
    pos.push_back(len_[b] - 1);
  }
  const Buf qp = gather(q, pos, true), qr = gather(q, pos, false);
  out = Buf(spec.q_dtype, qp.size());
  lse.assign(static_cast<std::size_t>(B) * p.hq, 12345.0f);
  hs.assign(static_cast<std::size_t>(B) * p.hq, macattn::HeadStats{});
  ss = macattn::StepStats{};
  if (spec.sync)
    for (int b = 0; b < B; ++b) rings[b] = ring_from_state(states[b]);
  auto v = views(states);
  macattn::mac_decode(spec.shape, spec.cfg, kv.view(len_), qp.ctensor(), qr.ctensor(), v, out.tensor(), lse.data(),
                      hs.data(), &ss, spec.backend);
  ref.clear();
  std::vector<oracle::State> ref_out;
  macattn::StepStats want;
  for (int b = 0; b < B; ++b) {
    ref.push_back(oracle::mac_step(p, kv.seqs[b], pos[b], q[b].post_row(pos[b]), q[b].pre_row(pos[b]), rings[b]));
    const auto& r = ref.back();
    for (const auto& h : r.heads) {
      ref_out.push_back(h.out);
      (h.hit ? heads_hit : heads_missed) += 1;
      want.heads += 1;
      want.heads_hit += h.hit ? 1 : 0;
    }
    want.groups += r.groups;
    want.groups_all_hit += r.groups_all_hit;
    want.kv_tokens_read += r.kv_tokens_read;
    want.kv_tokens_exact += r.kv_tokens_exact;
    want.ring_wipes += r.wiped ? 1 : 0;
    wipes += r.wiped ? 1 : 0;
  }
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < p.hq; ++h) {
      const auto& a = hs[static_cast<std::size_t>(b * p.hq + h)];
      const auto& e = ref[b].heads[static_cast<std::size_t>(h)];
      const bool dist_ok = e.matched < 0 ? std::isinf(a.match_distance) && a.match_distance > 0
                                         : std::fabs(a.match_distance - e.distance) <= 1e-5 * (1.0 + e.distance);
      if (a.hit != (e.hit ? 1 : 0) || a.matched_position != e.matched || !dist_ok || a.band_len != e.band ||
          a.kv_tokens_read != e.kv_read)
        return ::testing::AssertionFailure()
               << "t=" << pos[b] << " seq " << b << " head " << h << ": library hit=" << int(a.hit)
               << " m=" << a.matched_position << " d=" << a.match_distance << " band=" << a.band_len
               << " read=" << a.kv_tokens_read << "; oracle hit=" << e.hit << " m=" << e.matched
               << " d=" << e.distance << " band=" << e.band << " read=" << e.kv_read;
    }
  if (ss.heads != want.heads || ss.heads_hit != want.heads_hit || ss.groups != want.groups ||
      ss.groups_all_hit != want.groups_all_hit || ss.kv_tokens_read != want.kv_tokens_read ||
      ss.kv_tokens_exact != want.kv_tokens_exact || ss.ring_wipes != want.ring_wipes)
    return ::testing::AssertionFailure() << "t0=" << pos[0] << " step stats: library " << ss.to_string()
                                         << "; oracle heads=" << want.heads << " hit=" << want.heads_hit
                                         << " groups=" << want.groups << " all_hit=" << want.groups_all_hit
                                         << " read=" << want.kv_tokens_read << " exact=" << want.kv_tokens_exact
                                         << " wipes=" << want.ring_wipes;
  if (auto r = outputs_match(out, lse, ref_out, spec.tol ? *spec.tol : tol_for(spec.q_dtype)); !r)
    return r << " (t0=" << pos[0] << ")";
  for (int b = 0; b < B; ++b)
    if (auto r = ring_matches(states[b], rings[b], spec.tol ? &*spec.tol : nullptr); !r) return r << " (seq " << b << ", t=" << pos[b] << ")";
  for (auto& l : len_) ++l;
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_decisions(const Sim& a, const Sim& b) {
  if (a.hs.size() != b.hs.size())
    return ::testing::AssertionFailure() << a.hs.size() << " heads against " << b.hs.size();
  for (std::size_t k = 0; k < a.hs.size(); ++k) {
    const macattn::HeadStats &x = a.hs[k], &y = b.hs[k];
    if (x.hit != y.hit || x.matched_position != y.matched_position ||
        std::memcmp(&x.match_distance, &y.match_distance, sizeof(float)) != 0 || x.band_len != y.band_len ||
        x.kv_tokens_read != y.kv_tokens_read)
      return ::testing::AssertionFailure() << "head " << k << ": hit " << int(x.hit) << " / " << int(y.hit) << ", matched "
                                           << x.matched_position << " / " << y.matched_position << ", distance "
                                           << x.match_distance << " / " << y.match_distance << ", band " << x.band_len
                                           << " / " << y.band_len << ", read " << x.kv_tokens_read << " / "
                                           << y.kv_tokens_read;
  }
  if (a.ss.to_string() != b.ss.to_string())
    return ::testing::AssertionFailure() << "step stats " << a.ss.to_string() << " / " << b.ss.to_string();
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult lockstep(Sim& a, Sim& b, int steps, std::int64_t* hits) {
  *hits = 0;
  for (int i = 0; i < steps; ++i) {
    if (auto r = a.step(); !r) return r << " (first simulation, step " << i << ")";
    if (auto r = b.step(); !r) return r << " (second simulation, step " << i << ")";
    if (auto r = same_decisions(a, b); !r) return r << " (step " << i << ")";
    *hits += a.ss.heads_hit;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace fx
