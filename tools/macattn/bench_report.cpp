// tools/macattn/bench_report.cpp: what `macattn bench` prints and writes.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

#include "args.hpp"
#include "bench.hpp"
#include "git_commit.hpp"

namespace macattn_tool {


void print_bench_table(const BenchOptions& o, const BenchRun& run) {
  std::printf("\nmacattn bench: %s; %s kernels, %s products, %d threads; build %s, commit %s\n",
              machine_name().c_str(), run.cpu_isa.c_str(), macattn::cpu_products_name(o.products), run.threads,
              MACATTN_BUILD_TYPE, MACATTN_GIT_COMMIT);
  std::printf("streaming-read bandwidth (same run): %.1f GB/s on 2 MiB pages (%.1f on 4 KiB); K/V on %s pages\n",
              run.stream_gbps, run.stream_small_pages_gbps, o.huge_pages ? "2 MiB (advised)" : "4 KiB");
  std::printf("MAC W=%d S=%d tau=%.2f ring %s; match age %d\n", o.config.window, o.config.rect_offset, static_cast<double>(o.config.tau),
              macattn::dtype_name(o.ring_dtype), o.match_age);
  std::printf("%-9s %-4s %3s %7s %5s %-11s %6s %6s | %10s %7s %6s %5s | %10s %8s\n", "shape", "kv", "B", "N", "hit",
              "misses", "heads", "groups", "exact us", "GB/s", "stream", "%bw", "mac us", "speedup");
  for (const BenchRow& r : run.rows) {
    std::printf("%-9s %-4s %3d %7lld %5.2f %-11s %6.3f %6.3f | %10.1f %7.1f %6.1f %4.0f%% | %10.1f %7.2fx\n",
                r.shape.c_str(), macattn::dtype_name(r.dtype), r.batch, static_cast<long long>(r.context),
                r.target_hit_rate, miss_pattern_name(r.pattern), r.measured_hit_rate, r.all_hit_group_fraction,
                r.exact_us, r.exact_gbps, r.stream_gbps, 100.0 * r.exact_bw_fraction, r.mac_us, r.speedup);
  }
  std::printf("(heads, groups: measured hit fraction of query heads and of all-hit KV groups; GB/s: K/V bytes of\n"
              " exact attention over its time; stream: median GB/s of the streaming reads (cache evictions, 2 MiB\n"
              " pages) just before each exact run; %%bw: GB/s / stream; speedup: exact / mac time)\n");
}

void write_bench_json(const BenchOptions& o, const BenchRun& run) {
  if (o.json_path.empty()) return;
  nlohmann::json j;
  j["machine"] = machine_name();
  j["cpu_isa"] = run.cpu_isa;
  j["cpu_products"] = macattn::cpu_products_name(o.products);
  j["threads"] = run.threads;
  j["build_type"] = MACATTN_BUILD_TYPE;
  j["commit"] = MACATTN_GIT_COMMIT;
  j["backend"] = macattn::backend_name(o.backend);
  j["stream_read_gbps"] = run.stream_gbps;
  j["stream_read_gbps_4k_pages"] = run.stream_small_pages_gbps;
  j["config"] = {{"window", o.config.window},     {"rect_offset", o.config.rect_offset},
                 {"tau", o.config.tau},           {"front_sinks", o.config.front_sinks},
                 {"min_context", o.config.min_context}, {"ring_dtype", macattn::dtype_name(o.ring_dtype)},
                 {"match_age", o.match_age},      {"flush_caches", o.flush},
                 {"kv_huge_pages", o.huge_pages},
                 {"min_reps", o.min_reps},        {"min_seconds", o.min_seconds},
                 {"checked_against_reference", o.check}, {"seed", o.seed}};
  for (const BenchRow& r : run.rows) {
    j["rows"].push_back({{"shape", r.shape},
                         {"num_q_heads", r.attn.num_q_heads},
                         {"num_kv_heads", r.attn.num_kv_heads},
                         {"head_dim", r.attn.head_dim},
                         {"kv_dtype", macattn::dtype_name(r.dtype)},
                         {"batch", r.batch},
                         {"context", r.context},
                         {"target_hit_rate", r.target_hit_rate},
                         {"miss_pattern", miss_pattern_name(r.pattern)},
                         {"measured_hit_rate", r.measured_hit_rate},
                         {"all_hit_group_fraction", r.all_hit_group_fraction},
                         {"exact_us", r.exact_us},
                         {"exact_gbps", r.exact_gbps},
                         {"exact_bw_fraction", r.exact_bw_fraction},
                         {"stream_read_gbps_paired", r.stream_gbps},
                         {"mac_us", r.mac_us},
                         {"mac_gbps", r.mac_gbps},
                         {"mac_bytes", r.mac_bytes},
                         {"speedup", r.speedup},
                         {"exact_rel_l2_vs_reference", r.exact_rel_l2},
                         {"mac_rel_l2_vs_reference", r.mac_rel_l2},
                         {"exact_reps", r.exact_reps},
                         {"mac_reps", r.mac_reps}});
  }
  std::ofstream f(o.json_path);
  if (!f) throw std::runtime_error("cannot open --json file '" + o.json_path + "' for writing");
  f << j.dump(2) << "\n";
  if (!f) throw std::runtime_error("error writing --json file '" + o.json_path + "'");
}

void write_bench_csv(const BenchOptions& o, const BenchRun& run) {
  if (o.csv_path.empty()) return;
  std::ofstream f(o.csv_path);
  if (!f) throw std::runtime_error("cannot open --csv file '" + o.csv_path + "' for writing");
  f << "shape,kv_dtype,batch,context,target_hit_rate,miss_pattern,measured_hit_rate,all_hit_group_fraction,"
       "exact_us,exact_gbps,exact_bw_fraction,mac_us,speedup,stream_read_gbps,threads,commit\n";
  for (const BenchRow& r : run.rows)
    f << r.shape << ',' << macattn::dtype_name(r.dtype) << ',' << r.batch << ',' << r.context << ','
      << r.target_hit_rate << ',' << miss_pattern_name(r.pattern) << ',' << r.measured_hit_rate << ','
      << r.all_hit_group_fraction << ',' << r.exact_us << ',' << r.exact_gbps << ',' << r.exact_bw_fraction << ','
      << r.mac_us << ',' << r.speedup << ',' << r.stream_gbps << ',' << run.threads << ',' << MACATTN_GIT_COMMIT
      << '\n';
  if (!f) throw std::runtime_error("error writing --csv file '" + o.csv_path + "'");
}

}  // namespace macattn_tool
