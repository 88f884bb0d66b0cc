// tools/macattn/demo.cpp: the driver of `macattn demo`.
//
// One layer, B sequences, each with its own synthetic stream and contiguous K/V buffer:
//   1. prompt: K/V of positions [0, P), and the queries of the last W' = min(W, P) positions;
//   2. mac_prefill_init writes the ring rows of those W' positions;
//   3. each decode step t = P, P+1, ...: append the token's K/V, make its queries, run
//      exact_decode and mac_decode on the same inputs, and compare.
// Queries and outputs are fp32 so that the error measured is MAC's, not the output rounding.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "demo.hpp"

namespace macattn_tool {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Relative L2 distance ||a - b|| / ||b|| of n values (0 if both are 0).
double rel_l2(const float* a, const float* b, std::size_t n) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  if (den == 0.0) return num == 0.0 ? 0.0 : INFINITY;
  return std::sqrt(num / den);
}

/// Prints at most one line per interval to stderr.
class Progress {
 public:
  explicit Progress(bool on) : on_(on), last_(Clock::now()) {}
  template <typename... Args>
  void line(bool force, const char* fmt, Args... args) {
    if (!on_ || (!force && seconds_since(last_) < 2.0)) return;
    std::fprintf(stderr, fmt, args...);
    std::fputc('\n', stderr);
    last_ = Clock::now();
  }

 private:
  bool on_;
  Clock::time_point last_;
};

/// The K/V buffer of one sequence, [capacity, Hkv, D] of the cache dtype.
struct SequenceKV {
  std::vector<unsigned char> k, v;
  std::int64_t length = 0;
};

}  // namespace

Summary Summary::of(std::vector<double> values) {
  Summary s;
  s.count = values.size();
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  s.median = n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
  double sum = 0.0;
  for (double v : values) sum += v;
  s.mean = sum / static_cast<double>(n);
  s.max = values.back();
  return s;
}

DemoResults run_demo(const DemoOptions& o) {
  const std::int32_t B = o.batch, Hq = o.shape.num_q_heads, Hkv = o.shape.num_kv_heads, D = o.shape.head_dim;
  const std::size_t row_elems = static_cast<std::size_t>(Hkv) * D;  // one token's K (or V)
  const std::size_t q_elems = static_cast<std::size_t>(Hq) * D;     // one token's queries
  const std::size_t esize = macattn::dtype_size(o.kv_dtype);
  const std::int64_t capacity = o.context + o.steps;
  Progress progress(o.progress);
  DemoResults r;
  if (o.backend == macattn::Backend::cpu) {
    macattn::set_num_threads(o.threads);
    r.cpu_isa = macattn::cpu_isa();
  }

  // 1. The prompt.
  const auto setup_start = Clock::now();
  progress.line(true, "demo: generating a %lld-token prompt for %d sequence(s)", static_cast<long long>(o.context), B);
  std::vector<SyntheticStream> streams;
  std::vector<SequenceKV> kv(static_cast<std::size_t>(B));
  std::vector<float> k_tok(row_elems), v_tok(row_elems);
  auto append_token = [&](std::int32_t b, std::int64_t pos) {
    SequenceKV& s = kv[static_cast<std::size_t>(b)];
    streams[static_cast<std::size_t>(b)].next_kv(pos, k_tok.data(), v_tok.data());
    const std::size_t base = static_cast<std::size_t>(pos) * row_elems;
    for (std::size_t i = 0; i < row_elems; ++i) {
      macattn::store_from_float(s.k.data(), o.kv_dtype, base + i, k_tok[i]);
      macattn::store_from_float(s.v.data(), o.kv_dtype, base + i, v_tok[i]);
    }
    s.length = pos + 1;
  };
  for (std::int32_t b = 0; b < B; ++b) {
    streams.emplace_back(o.stream, b);
    kv[static_cast<std::size_t>(b)].k.resize(static_cast<std::size_t>(capacity) * row_elems * esize);
    kv[static_cast<std::size_t>(b)].v.resize(static_cast<std::size_t>(capacity) * row_elems * esize);
    for (std::int64_t p = 0; p < o.context; ++p) append_token(b, p);
  }
  std::vector<macattn::ContiguousSequence> seqs(static_cast<std::size_t>(B));
  auto cache_view = [&] {
    for (std::int32_t b = 0; b < B; ++b) {
      seqs[b] = {kv[b].k.data(), kv[b].v.data(), kv[b].length};
    }
    return macattn::KVCacheView::contiguous(seqs, Hkv, D, o.kv_dtype);
  };

  // Queries of the last W' prompt positions: the query stream starts there and runs on into decode.
  r.prefill_rows = std::min<std::int64_t>(o.config.window, o.context);
  const std::size_t rows = static_cast<std::size_t>(r.prefill_rows);
  std::vector<float> pre_rows(static_cast<std::size_t>(B) * rows * q_elems);
  std::vector<float> post_rows(pre_rows.size());
  std::vector<std::int32_t> row_indptr(static_cast<std::size_t>(B) + 1, 0);
  for (std::int32_t b = 0; b < B; ++b) {
    for (std::size_t i = 0; i < rows; ++i) {
      const std::size_t off = (static_cast<std::size_t>(b) * rows + i) * q_elems;
      const std::int64_t pos = o.context - r.prefill_rows + static_cast<std::int64_t>(i);
      streams[b].next_query(pos, pre_rows.data() + off, post_rows.data() + off);
    }
    row_indptr[b + 1] = static_cast<std::int32_t>((b + 1) * rows);
  }
  r.setup_seconds = seconds_since(setup_start);

  // 2. Ring initialisation.
  std::vector<macattn::MacState> states;
  std::vector<macattn::MacStateView> views;
  for (std::int32_t b = 0; b < B; ++b) states.emplace_back(o.shape, o.config, o.ring_dtype);
  for (macattn::MacState& s : states) views.push_back(s.view());
  progress.line(true, "demo: mac_prefill_init over the last %lld prompt positions (each a full prefix pass)",
                static_cast<long long>(r.prefill_rows));
  const auto prefill_start = Clock::now();
  macattn::mac_prefill_init(o.shape, o.config, cache_view(), {post_rows.data(), macattn::DType::f32},
                            {pre_rows.data(), macattn::DType::f32}, row_indptr, views, o.backend);
  r.prefill_init_seconds = seconds_since(prefill_start);

  // 3. Decode.
  const std::size_t out_elems = static_cast<std::size_t>(B) * q_elems;
  std::vector<float> q_pre(out_elems), q_post(out_elems), out_exact(out_elems), out_mac(out_elems);
  std::vector<macattn::HeadStats> head_stats(static_cast<std::size_t>(B) * Hq);
  std::vector<double> exact_ms, mac_ms, mac_ms_all_hit, mac_ms_some_miss, err_step, err_hit_head;
  double band_sum = 0.0, lag_sum = 0.0;
  std::int64_t hit_heads = 0, lag_one = 0;
  progress.line(true, "demo: %lld decode steps", static_cast<long long>(o.steps));
  const auto decode_start = Clock::now();
  for (std::int64_t i = 0; i < o.steps; ++i) {
    const std::int64_t t = o.context + i;
    for (std::int32_t b = 0; b < B; ++b) {
      append_token(b, t);
      streams[b].next_query(t, q_pre.data() + b * q_elems, q_post.data() + b * q_elems);
    }
    const macattn::KVCacheView view = cache_view();

    auto start = Clock::now();
    macattn::exact_decode(o.shape, view, {q_post.data(), macattn::DType::f32}, {out_exact.data(), macattn::DType::f32},
                          nullptr, o.backend);
    exact_ms.push_back(1e3 * seconds_since(start));

    macattn::StepStats step;
    start = Clock::now();
    macattn::mac_decode(o.shape, o.config, view, {q_post.data(), macattn::DType::f32},
                        {q_pre.data(), macattn::DType::f32}, views, {out_mac.data(), macattn::DType::f32}, nullptr,
                        head_stats.data(), &step, o.backend);
    mac_ms.push_back(1e3 * seconds_since(start));
    r.totals.add(step);
    (step.groups_all_hit == step.groups ? mac_ms_all_hit : mac_ms_some_miss).push_back(mac_ms.back());

    err_step.push_back(rel_l2(out_mac.data(), out_exact.data(), out_elems));
    for (std::size_t h = 0; h < head_stats.size(); ++h) {
      const macattn::HeadStats& hs = head_stats[h];
      if (!hs.hit) continue;
      ++hit_heads;
      band_sum += hs.band_len;
      lag_sum += static_cast<double>(t - hs.matched_position);
      lag_one += hs.matched_position == t - 1;
      err_hit_head.push_back(rel_l2(out_mac.data() + h * D, out_exact.data() + h * D, static_cast<std::size_t>(D)));
    }
    progress.line(i + 1 == o.steps, "demo: step %lld/%lld, head hit rate %.1f%%, exact %.2f ms, mac %.2f ms",
                  static_cast<long long>(i + 1), static_cast<long long>(o.steps), 100.0 * r.totals.hit_rate(),
                  exact_ms.back(), mac_ms.back());
  }
  r.decode_seconds = seconds_since(decode_start);

  r.exact_ms = Summary::of(exact_ms);
  r.mac_ms = Summary::of(mac_ms);
  r.mac_ms_all_hit = Summary::of(mac_ms_all_hit);
  r.mac_ms_some_miss = Summary::of(mac_ms_some_miss);
  r.rel_l2_step = Summary::of(err_step);
  r.rel_l2_hit_head = Summary::of(err_hit_head);
  if (hit_heads > 0) {
    r.mean_band_len = band_sum / static_cast<double>(hit_heads);
    r.mean_match_lag = lag_sum / static_cast<double>(hit_heads);
    r.match_previous_fraction = static_cast<double>(lag_one) / static_cast<double>(hit_heads);
  }
  for (const SyntheticStream& s : streams) r.query_jumps += s.query_jumps();
  return r;
}

}  // namespace macattn_tool
