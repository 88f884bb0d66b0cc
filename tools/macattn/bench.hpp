// tools/macattn/bench.hpp: `macattn bench`, the decode benchmark of exact vs MAC attention.
//
//   bench_options.cpp    flags -> BenchOptions
//   bench_case.cpp       one configuration's inputs: K/V, queries and rings forced to a hit rate
//   bench.cpp            the sweep: check against the reference, then time exact and MAC in alternation
//   bench_report.cpp     table, JSON and CSV
//   bandwidth.cpp        the machine's streaming-read bandwidth, measured in the same run
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "macattn/macattn.hpp"

namespace macattn_tool {

struct BenchShape {
  std::string name;  // llama3-8b, gqa8, hd64, mha
  macattn::AttentionShape shape;
};

enum class MissPattern { packed, independent };
const char* miss_pattern_name(MissPattern p);

struct BenchOptions {
  std::vector<BenchShape> shapes;
  std::vector<std::int64_t> contexts{8192, 32768, 65536, 131072};
  std::vector<std::int32_t> batches{1, 4};
  std::vector<macattn::DType> dtypes{macattn::DType::bf16};
  std::vector<double> hit_rates{0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 1.0};
  std::vector<MissPattern> patterns{MissPattern::packed, MissPattern::independent};
  macattn::Backend backend = macattn::Backend::cpu;
  bool cuda = false;  // --backend cuda: the GPU benchmark (bench_cuda.cu)
  macattn::MacConfig config;  // min_context defaults to 0 here: every context is decoded with MAC
  macattn::DType ring_dtype = macattn::DType::bf16;
  std::int32_t threads = 0;
  std::int32_t match_age = 1;      // hits match position t - match_age (1: the previous step)
  double min_seconds = 0.5;        // timing budget per measurement
  std::int32_t min_reps = 5;       // at least this many timed runs per measurement
  bool check = true;               // compare with the reference backend before timing
  bool flush = true;               // evict caches before each timed run
  bool huge_pages = true;          // K/V buffers advised for transparent huge pages
  macattn::CpuProducts products = macattn::CpuProducts::fp32;  // --cpu-products
  std::int32_t graph_steps = 1;    // --backend cuda: also time N layer-steps per graph (1 = off)
  bool far_miss_rows = false;      // --backend cuda: non-matching ring rows q_pre + 3 (else q_pre +/- sqrt(2))
  std::int32_t page_size = 16;     // --backend cuda: tokens per K/V page
  bool hnd = false;                // --backend cuda: HND pages ([page][kv head][token][dim]) instead of NHD
  bool shuffled_pages = false;     // --backend cuda: page table in a random order (a long-running pool)
  macattn::DType query_dtype = macattn::DType::bf16;  // --backend cuda: q_post, q_pre and out (the engine: f32)
  bool head_stats = false;         // --backend cuda: timed MAC steps write per-head stats (as the engine's)
  std::uint64_t seed = 1;
  std::string json_path, csv_path;
  bool progress = true;
};

bool parse_bench_options(const std::vector<std::string>& args, BenchOptions& options);

struct BenchRow {
  std::string shape;
  macattn::AttentionShape attn;
  macattn::DType dtype;
  std::int32_t batch;
  std::int64_t context;
  double target_hit_rate;
  MissPattern pattern;
  double measured_hit_rate;       // heads that hit / heads (from the real scan)
  double all_hit_group_fraction;  // groups whose heads all hit / groups
  double exact_us, mac_us;        // medians, timed in alternation
  double exact_gbps, mac_gbps;    // K/V (+ ring) bytes read / time
  double exact_bw_fraction;       // exact_gbps / stream_gbps
  double stream_gbps;             // median streaming read of the cache evictions just before each exact run
                                  // (with --flush off: the ceiling measured at the start)
  double speedup;                 // exact_us / mac_us
  double exact_rel_l2, mac_rel_l2;  // vs the reference backend on the same inputs (-1: not checked)
  std::int64_t mac_bytes;         // bytes MAC reads (K/V tokens read + ring scan), per layer-step
  std::int32_t exact_reps, mac_reps;
};

struct BenchRun {
  std::string machine, cpu_isa, build_type, commit;
  std::int32_t threads;
  double stream_gbps;  // streaming-read bandwidth, same threads, same run (huge pages)
  double stream_small_pages_gbps;  // the same read on 4 KiB pages
  std::vector<BenchRow> rows;
};

int run_bench_command(const std::vector<std::string>& args);
/// `macattn bench --backend cuda` (bench_cuda.cu; a message and exit 1 in a build without CUDA).
int run_cuda_bench(const BenchOptions& options);
void print_bench_table(const BenchOptions& o, const BenchRun& run);
void write_bench_json(const BenchOptions& o, const BenchRun& run);
void write_bench_csv(const BenchOptions& o, const BenchRun& run);

/// Streaming-read bandwidth in GB/s (1e9 bytes/s) of `threads` threads over a buffer far
/// larger than the last-level cache (median of several passes), read with the widest vector
/// loads the CPU has: on a buffer advised for huge pages (the ceiling every row is compared
/// with) and on plain 4 KiB pages (for the notes).
struct StreamBandwidth {
  double gbps = 0;              // 2 MiB pages where the OS gives them
  double small_pages_gbps = 0;  // 4 KiB pages
};
StreamBandwidth measure_stream_read(int threads);
/// Reads a buffer larger than the last-level cache so that the next timed run starts cold;
/// returns the GB/s of that read (a streaming-read probe taken next to the timed run).
double evict_caches();

}  // namespace macattn_tool
