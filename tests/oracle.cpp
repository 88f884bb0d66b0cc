// tests/oracle.cpp: the fp64 model. Written from MAC_ATTENTION.md, not from src/.
#include "oracle.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace oracle {

float round_to(macattn::DType dtype, float v) {
  switch (dtype) {
    case macattn::DType::f32: return v;
    case macattn::DType::f16: return macattn::f16_to_float(macattn::float_to_f16(v));
    case macattn::DType::bf16: return macattn::bf16_to_float(macattn::float_to_bf16(v));
  }
  throw std::logic_error("oracle::round_to: bad dtype");
}

State empty_state(int head_dim) {
  State s;
  s.o.assign(static_cast<std::size_t>(head_dim), 0.0);
  s.lse = kNegInf;
  return s;
}

State merge(const State& a, const State& b) {
  if (a.lse == kNegInf) return b;
  if (b.lse == kNegInf) return a;
  const double m = std::max(a.lse, b.lse);
  const double wa = std::exp(a.lse - m), wb = std::exp(b.lse - m);
  State r;
  r.lse = m + std::log(wa + wb);
  r.o.resize(a.o.size());
  for (std::size_t i = 0; i < a.o.size(); ++i) r.o[i] = (wa * a.o[i] + wb * b.o[i]) / (wa + wb);
  return r;
}

Params make_params(const macattn::AttentionShape& shape, const macattn::MacConfig& config) {
  Params p;
  p.hq = shape.num_q_heads;
  p.hkv = shape.num_kv_heads;
  p.d = shape.head_dim;
  const float scale =
      shape.softmax_scale == 0.0f ? static_cast<float>(1.0 / std::sqrt(static_cast<double>(shape.head_dim)))
                                  : shape.softmax_scale;
  p.scale = scale;
  p.w = config.window;
  p.s = config.rect_offset;
  p.f = config.front_sinks;
  p.min_context = config.min_context;
  const float one = 1.0f - config.tau;
  p.thr = 2.0f * static_cast<float>(shape.head_dim) * one * one;
  return p;
}

std::int64_t entry_end(std::int64_t p, int s) { return std::max<std::int64_t>(p + 1 - s, 0); }

State attend(const Params& p, const Seq& seq, int g, const float* q, std::int64_t lo, std::int64_t hi) {
  State st = empty_state(p.d);
  if (lo >= hi) return st;
  if (lo < 0 || hi > seq.len) throw std::logic_error("oracle::attend: range outside the sequence");
  std::vector<double> s(static_cast<std::size_t>(hi - lo));
  double mx = kNegInf;
  for (std::int64_t j = lo; j < hi; ++j) {
    const float* k = seq.k.data() + (j * p.hkv + g) * p.d;
    double dot = 0.0;
    for (int i = 0; i < p.d; ++i) dot += static_cast<double>(q[i]) * static_cast<double>(k[i]);
    s[static_cast<std::size_t>(j - lo)] = p.scale * dot;
    mx = std::max(mx, p.scale * dot);
  }
  double sum = 0.0;
  for (std::int64_t j = lo; j < hi; ++j) {
    const double e = std::exp(s[static_cast<std::size_t>(j - lo)] - mx);
    sum += e;
    const float* v = seq.v.data() + (j * p.hkv + g) * p.d;
    for (int i = 0; i < p.d; ++i) st.o[static_cast<std::size_t>(i)] += e * static_cast<double>(v[i]);
  }
  for (double& x : st.o) x /= sum;
  st.lse = mx + std::log(sum);
  return st;
}

std::vector<State> exact(const Params& p, const Seq& seq, std::int64_t len, const float* q) {
  std::vector<State> r;
  const int group = p.hq / p.hkv;
  for (int h = 0; h < p.hq; ++h) r.push_back(attend(p, seq, h / group, q + h * p.d, 0, len));
  return r;
}

Ring::Ring(int window, int num_q_heads, int head_dim, macattn::DType ring_dtype)
    : w(window), hq(num_q_heads), d(head_dim), dtype(ring_dtype) {
  q.assign(static_cast<std::size_t>(w) * hq * d, 0.0f);
  o.assign(q.size(), 0.0f);
  l.assign(static_cast<std::size_t>(w) * hq, -std::numeric_limits<float>::infinity());
}

void Ring::wipe(std::int64_t new_position) {
  std::fill(q.begin(), q.end(), 0.0f);
  std::fill(o.begin(), o.end(), 0.0f);
  std::fill(l.begin(), l.end(), -std::numeric_limits<float>::infinity());
  position = new_position;
  ready = true;
}

void Ring::store(std::int64_t slot, int h, const float* q_pre, const State& st) {
  float* qr = qrow(slot, h);
  float* orr = orow(slot, h);
  for (int i = 0; i < d; ++i) {
    qr[i] = round_to(dtype, q_pre[i]);
    orr[i] = st.lse == kNegInf ? 0.0f : round_to(dtype, static_cast<float>(st.o[static_cast<std::size_t>(i)]));
  }
  lse(slot, h) = st.lse == kNegInf ? -std::numeric_limits<float>::infinity() : static_cast<float>(st.lse);
}

StepResult mac_step(const Params& p, const Seq& seq, std::int64_t t, const float* q_post, const float* q_pre,
                    Ring& ring) {
  if (t < 0 || t + 1 > seq.len) throw std::logic_error("oracle::mac_step: t outside the sequence");
  StepResult res;
  if (!ring.ready || ring.position != t) {
    ring.wipe(t);
    res.wiped = true;
  }
  const std::int64_t new_end = entry_end(t, p.s);
  const int group = p.hq / p.hkv;
  res.heads.resize(static_cast<std::size_t>(p.hq));
  // Match and amend every head against the ring as it was before this step.
  for (int h = 0; h < p.hq; ++h) {
    HeadResult& hr = res.heads[static_cast<std::size_t>(h)];
    const float* qp = q_post + h * p.d;
    const float* qr = q_pre + h * p.d;
    const int g = h / group;
    if (t >= p.min_context) {
      for (std::int64_t m = std::max<std::int64_t>(0, t - p.w); m < t; ++m) {  // oldest first
        const float* row = ring.qrow(m % p.w, h);
        double dist = 0.0;
        for (int i = 0; i < p.d; ++i) {
          const double diff = static_cast<double>(qr[i]) - static_cast<double>(row[i]);
          dist += diff * diff;
        }
        if (hr.matched < 0 || dist < hr.distance) {  // strict: ties keep the older position
          hr.matched = m;
          hr.distance = dist;
        }
      }
    }
    bool hit = false;
    std::int64_t em = 0;
    if (hr.matched >= 0) {
      em = entry_end(hr.matched, p.s);
      const float l = ring.lse(hr.matched % p.w, h);
      hit = hr.distance < static_cast<double>(p.thr) && std::isfinite(l) && (p.f == 0 || em >= p.f) &&
            new_end - em >= 0 && new_end - em <= p.w;
    }
    hr.hit = hit;
    std::int64_t start;
    if (hit) {
      State reused;
      reused.lse = ring.lse(hr.matched % p.w, h);
      const float* orow = ring.orow(hr.matched % p.w, h);
      reused.o.assign(orow, orow + p.d);
      hr.entry = merge(reused, attend(p, seq, g, qp, em, new_end));
      hr.band = static_cast<std::int32_t>(new_end - em);
      start = em;
      hr.kv_read = hr.band + (t + 1 - new_end) + std::min<std::int64_t>(p.f, em);
    } else {
      start = std::min<std::int64_t>(p.f, new_end);
      hr.entry = attend(p, seq, g, qp, start, new_end);
      hr.band = 0;
      hr.kv_read = t + 1;
    }
    State out = hr.entry;
    if (p.f > 0) out = merge(out, attend(p, seq, g, qp, 0, std::min<std::int64_t>(p.f, start)));
    hr.out = merge(out, attend(p, seq, g, qp, new_end, t + 1));
  }
  // Cache update: slot t mod W of every head.
  for (int h = 0; h < p.hq; ++h) ring.store(t % p.w, h, q_pre + h * p.d, res.heads[static_cast<std::size_t>(h)].entry);
  ring.position = t + 1;
  ring.ready = true;
  // Group accounting.
  for (int g = 0; g < p.hkv; ++g) {
    bool all_hit = true;
    std::int64_t min_start = t + 1;
    for (int h = g * group; h < (g + 1) * group; ++h) {
      const HeadResult& hr = res.heads[static_cast<std::size_t>(h)];
      all_hit = all_hit && hr.hit;
      if (hr.hit) min_start = std::min(min_start, entry_end(hr.matched, p.s));
    }
    ++res.groups;
    res.kv_tokens_exact += t + 1;
    if (all_hit) {
      ++res.groups_all_hit;
      res.kv_tokens_read += (t + 1 - min_start) + std::min<std::int64_t>(p.f, min_start);
    } else {
      res.kv_tokens_read += t + 1;
    }
  }
  return res;
}

void prefill(const Params& p, const Seq& seq, std::int64_t P, std::int64_t n, const float* q_post,
             const float* q_pre, Ring& ring) {
  if (n < 0 || n > P || P > seq.len) throw std::logic_error("oracle::prefill: bad rows");
  if (!(ring.ready && ring.position == P - n)) ring.wipe(P - n);
  const int group = p.hq / p.hkv;
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int64_t pos = P - n + r;
    if (pos < P - p.w) continue;
    const std::int64_t e = entry_end(pos, p.s);
    for (int h = 0; h < p.hq; ++h) {
      const float* qp = q_post + (r * p.hq + h) * p.d;
      const State st = attend(p, seq, h / group, qp, std::min<std::int64_t>(p.f, e), e);
      ring.store(pos % p.w, h, q_pre + (r * p.hq + h) * p.d, st);
    }
  }
  ring.position = P;
  ring.ready = true;
}

}  // namespace oracle
