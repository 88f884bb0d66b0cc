// tools/macattn/demo.hpp: `macattn demo`, a synthetic decode stream run through exact_decode
// and mac_decode side by side.
//
//   demo_options.cpp  flags -> DemoOptions (every value checked; exit code 2 on a bad one)
//   demo.cpp          the driver: prompt, ring initialisation, decode loop, measurements
//   demo_report.cpp   the final table and the JSON file
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "macattn/macattn.hpp"
#include "synthetic_stream.hpp"

namespace macattn_tool {

struct DemoOptions {
  macattn::AttentionShape shape;  // Hq, Hkv, D (Llama-3.1-8B by default)
  macattn::MacConfig config;
  macattn::DType kv_dtype = macattn::DType::bf16;
  macattn::DType ring_dtype = macattn::DType::bf16;
  macattn::Backend backend = macattn::Backend::cpu;
  std::int32_t threads = 0;  // cpu backend threads; 0 = OpenMP's default
  std::int32_t batch = 1;
  std::int64_t context = 16384;  // prompt length P
  std::int64_t steps = 256;      // decode steps after the prompt
  StreamConfig stream;           // keys, drift, jumps, RoPE, seed (its shape fields are set from `shape`)
  std::string json_path;         // empty: no JSON file
  bool progress = true;
};

/// Parses the flags after `demo`. Returns false if --help was given (help already printed).
/// Throws UsageError on a bad flag or value.
bool parse_demo_options(const std::vector<std::string>& args, DemoOptions& options);
std::string demo_help();

/// Median, mean and max of a series (0 for an empty one), and its length.
struct Summary {
  double median = 0.0, mean = 0.0, max = 0.0;
  std::size_t count = 0;
  static Summary of(std::vector<double> values);
};

struct DemoResults {
  std::string cpu_isa;                   // kernels of the cpu backend; empty for reference
  double setup_seconds = 0.0;            // generating the prompt's K/V and queries
  double prefill_init_seconds = 0.0;     // mac_prefill_init over the last W prompt positions
  std::int64_t prefill_rows = 0;         // ring rows written by prefill init, per sequence
  double decode_seconds = 0.0;           // whole decode loop (both paths and the stream)
  Summary exact_ms, mac_ms;              // per step wall time of each call
  Summary mac_ms_all_hit;                // MAC steps where every KV group hit (cost constant in context)
  Summary mac_ms_some_miss;              // MAC steps where some group missed (that group reads all K/V)
  Summary rel_l2_step;                   // ||o_mac - o_exact|| / ||o_exact|| over [B, Hq, D], per step
  Summary rel_l2_hit_head;               // the same per head, over hit heads only
  macattn::StepStats totals;             // mac_decode stats summed over steps
  double mean_band_len = 0.0;            // over hit heads
  double mean_match_lag = 0.0;           // t - m over hit heads
  double match_previous_fraction = 0.0;  // hit heads whose match was t - 1
  std::int64_t query_jumps = 0;
};

/// Runs the demo; prints progress to stderr when options.progress. Throws macattn::Error on a
/// library failure (a bug: the options were validated).
DemoResults run_demo(const DemoOptions& options);

/// The final table (stdout) and, if options.json_path is set, the JSON file.
void print_report(const DemoOptions& options, const DemoResults& results);
void write_json(const DemoOptions& options, const DemoResults& results);

}  // namespace macattn_tool
