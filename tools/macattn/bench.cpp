// tools/macattn/bench.cpp: the sweep. For every (shape, dtype, batch, context): K/V once,
// exact decode checked against the reference backend; then for every (hit rate, miss
// pattern): rings and queries forced to the hit rate, MAC decode checked (same decisions as
// the reference, output within rounding), and exact and MAC timed in alternation. Each timed
// MAC run starts from the same ring contents; every timed run, by default, from cold caches.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "bench.hpp"
#include "bench_case.hpp"

namespace macattn_tool {

namespace {

using Clock = std::chrono::steady_clock;

double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double diff = static_cast<double>(a[i]) - ref[i];
    num += diff * diff;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct PairTiming {
  double exact_us = 0, mac_us = 0;  // medians
  double stream_gbps = 0;           // median GB/s of the eviction reads before the exact runs (0: no flush)
  std::int32_t reps = 0;            // runs of each
};

/// Exact and MAC timed alternately (exact, then MAC, each from cold caches), so that both
/// see the same machine: the dev VM's bandwidth drifts by up to 2x within minutes, and timing
/// all exact runs before all MAC runs turned that drift into speedups of 0.75-0.97x for the
/// same hit-0 configuration. prepare() (untimed) runs before each MAC run.
template <typename Prepare, typename Exact, typename Mac>
PairTiming time_pairs(const BenchOptions& o, Prepare prepare, Exact exact, Mac mac) {
  std::vector<double> exact_us, mac_us, gbps;
  const auto start = Clock::now();
  while (exact_us.size() < static_cast<std::size_t>(o.min_reps) ||
         (std::chrono::duration<double>(Clock::now() - start).count() < o.min_seconds && exact_us.size() < 200)) {
    if (o.flush) gbps.push_back(evict_caches());
    auto t0 = Clock::now();
    exact();
    exact_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    prepare();
    if (o.flush) evict_caches();
    t0 = Clock::now();
    mac();
    mac_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  PairTiming t;
  t.exact_us = median(exact_us);
  t.mac_us = median(mac_us);
  t.stream_gbps = gbps.empty() ? 0.0 : median(gbps);
  t.reps = static_cast<std::int32_t>(exact_us.size());
  return t;
}

std::vector<macattn::MacStateView> views(std::vector<macattn::MacState>& rings) {
  std::vector<macattn::MacStateView> v;
  for (auto& r : rings) v.push_back(r.view());
  return v;
}

}  // namespace

BenchRun run_bench(const BenchOptions& o) {
  BenchRun run;
  macattn::set_num_threads(o.threads);
  macattn::set_cpu_products(o.products);
  // Relative L2 against the reference backend: rounding of fp32 sums, or bf16 products.
  const double check_tol = o.products == macattn::CpuProducts::bf16 ? 1e-2 : 1e-3;
  run.threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  run.cpu_isa = o.backend == macattn::Backend::cpu ? macattn::cpu_isa() : "scalar";
  if (o.progress) std::fprintf(stderr, "measuring streaming-read bandwidth (%d threads)...\n", run.threads);
  const StreamBandwidth stream = measure_stream_read(run.threads);
  run.stream_gbps = stream.gbps;
  run.stream_small_pages_gbps = stream.small_pages_gbps;
  if (o.progress) std::fprintf(stderr, "  %.1f GB/s (%.1f on 4 KiB pages)\n", run.stream_gbps, run.stream_small_pages_gbps);

  std::uint64_t seed = o.seed;
  for (const BenchShape& bs : o.shapes)
    for (const macattn::DType dtype : o.dtypes)
      for (const std::int32_t batch : o.batches)
        for (const std::int64_t context : o.contexts) {
          const macattn::AttentionShape& shape = bs.shape;
          if (o.progress)
            std::fprintf(stderr, "%s %s B=%d N=%lld: generating K/V...\n", bs.name.c_str(), macattn::dtype_name(dtype),
                         batch, static_cast<long long>(context));
          const KVBuffers kv = make_kv(shape, dtype, batch, context, ++seed, o.huge_pages);
          const macattn::KVCacheView view = kv.view();
          const std::size_t n_out = static_cast<std::size_t>(batch) * static_cast<std::size_t>(shape.num_q_heads) *
                                    static_cast<std::size_t>(shape.head_dim);
          std::vector<float> out(n_out), ref(n_out);

          // Exact: the same queries as the first MAC case, so the check covers real inputs.
          MacInputs probe = make_mac_inputs(kv, o.config, o.ring_dtype, 0.0, MissPattern::packed, o.match_age, seed);
          auto exact = [&](macattn::Backend be, std::vector<float>& dst) {
            macattn::exact_decode(shape, view, {probe.q_post.data(), macattn::DType::f32},
                                  {dst.data(), macattn::DType::f32}, nullptr, be);
          };
          double exact_err = -1.0;
          if (o.check) {
            exact(macattn::Backend::reference, ref);
            exact(o.backend, out);
            exact_err = rel_l2(out, ref);
            if (!(exact_err <= check_tol))
              throw std::runtime_error("exact decode differs from the reference: rel L2 " + std::to_string(exact_err));
          }

          for (const double rate : o.hit_rates)
            for (const MissPattern pattern : o.patterns) {
              if (pattern == MissPattern::independent && (rate == 0.0 || rate == 1.0) && o.patterns.size() > 1)
                continue;  // identical to packed at 0 and 1
              MacInputs in = make_mac_inputs(kv, o.config, o.ring_dtype, rate, pattern, o.match_age, ++seed);
              std::vector<macattn::MacState> work = in.rings;
              std::vector<macattn::MacStateView> work_views = views(work);
              std::vector<macattn::HeadStats> heads(n_out / static_cast<std::size_t>(shape.head_dim));
              macattn::StepStats stats;
              auto mac = [&](macattn::Backend be, std::vector<float>& dst, macattn::HeadStats* hs) {
                macattn::mac_decode(shape, o.config, view, {in.q_post.data(), macattn::DType::f32},
                                    {in.q_pre.data(), macattn::DType::f32}, work_views, {dst.data(), macattn::DType::f32},
                                    nullptr, hs, &stats, be);
              };
              auto restore = [&] {
                for (std::size_t b = 0; b < work.size(); ++b) work[b] = in.rings[b];
                work_views = views(work);
              };
              double mac_err = -1.0;
              std::vector<macattn::HeadStats> ref_heads(heads.size());
              if (o.check) {
                mac(macattn::Backend::reference, ref, ref_heads.data());
                restore();
              }
              mac(o.backend, out, heads.data());
              if (stats.heads_hit != in.intended_hits)
                throw std::runtime_error("forcing the hit rate failed: " + std::to_string(stats.heads_hit) + " hits, intended " +
                                         std::to_string(in.intended_hits));
              const macattn::StepStats forced = stats;
              if (o.check) {
                mac_err = rel_l2(out, ref);
                for (std::size_t i = 0; i < heads.size(); ++i)
                  if (heads[i].hit != ref_heads[i].hit || heads[i].matched_position != ref_heads[i].matched_position)
                    throw std::runtime_error("MAC decision of head " + std::to_string(i) + " differs from the reference");
                if (!(mac_err <= check_tol))
                  throw std::runtime_error("MAC decode differs from the reference: rel L2 " + std::to_string(mac_err));
              }
              const PairTiming timed = time_pairs(o, restore, [&] { exact(o.backend, out); },
                                                  [&] { mac(o.backend, out, nullptr); });
              const double exact_us = timed.exact_us, mac_us = timed.mac_us;
              const double stream_gbps = timed.stream_gbps > 0 ? timed.stream_gbps : run.stream_gbps;

              BenchRow row;
              row.shape = bs.name;
              row.attn = shape;
              row.dtype = dtype;
              row.batch = batch;
              row.context = context;
              row.target_hit_rate = rate;
              row.pattern = pattern;
              row.measured_hit_rate = forced.hit_rate();
              row.all_hit_group_fraction = static_cast<double>(forced.groups_all_hit) / static_cast<double>(forced.groups);
              row.exact_us = exact_us;
              row.mac_us = mac_us;
              const double kv_bytes = static_cast<double>(kv.bytes());
              const double token_bytes = 2.0 * shape.head_dim * static_cast<double>(macattn::dtype_size(dtype));
              const double scan_bytes = static_cast<double>(batch) * shape.num_q_heads *
                                        std::min<double>(o.config.window, static_cast<double>(context - 1)) * shape.head_dim *
                                        static_cast<double>(macattn::dtype_size(o.ring_dtype));
              row.mac_bytes = static_cast<std::int64_t>(static_cast<double>(forced.kv_tokens_read) * token_bytes + scan_bytes);
              row.exact_gbps = kv_bytes / exact_us / 1e3;
              row.mac_gbps = static_cast<double>(row.mac_bytes) / mac_us / 1e3;
              row.stream_gbps = stream_gbps;
              row.exact_bw_fraction = row.exact_gbps / stream_gbps;
              row.speedup = exact_us / mac_us;
              row.exact_rel_l2 = exact_err;
              row.mac_rel_l2 = mac_err;
              row.exact_reps = timed.reps;
              row.mac_reps = timed.reps;
              run.rows.push_back(row);
              if (o.progress)
                std::fprintf(stderr, "  hit %.2f %-11s exact %9.1f us  mac %9.1f us  x%.2f\n", rate,
                             miss_pattern_name(pattern), exact_us, mac_us, row.speedup);
            }
        }
  return run;
}

int run_bench_command(const std::vector<std::string>& args) {
  BenchOptions o;
  if (!parse_bench_options(args, o)) return 0;
  if (o.cuda) return run_cuda_bench(o);
  BenchRun run = run_bench(o);
  print_bench_table(o, run);
  write_bench_json(o, run);
  write_bench_csv(o, run);
  return 0;
}

}  // namespace macattn_tool
