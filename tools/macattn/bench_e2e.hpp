// tools/macattn/bench_e2e.hpp: `macattn bench-e2e`, decode tokens/s of a whole model at given
// context lengths, exact and MAC attention side by side.
//
//   bench_e2e_options.cpp  flags -> BenchE2EOptions
//   bench_e2e.cpp          the driver: per context, per mode, one prefill then timed decode steps
//   bench_e2e_report.cpp   table and JSON
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/session.hpp"
#include "engine_options.hpp"

namespace macattn_tool {

struct BenchE2EOptions {
  EngineOptions engine;
  std::vector<std::int64_t> contexts = {8192, 32768, 65536};
  std::int64_t steps = 32;  // timed decode steps per context and mode
  std::int64_t warmup = 2;  // decode steps before timing (not timed, counted in the stats)
  std::string prompt_file;  // empty: the bundled prompt (prompts/passkey_12k.txt) repeated
  bool synthetic = false;   // random token ids instead of text
  std::uint64_t seed = 0;   // for synthetic ids
  bool run_exact = true, run_mac = true;
  std::string json_path;
  // --device cuda only (bench_e2e_cuda.cpp):
  std::vector<std::int32_t> batches = {1};   // sequences decoded together
  std::string shape;                         // "llama3-8b": random weights of that shape (synthetic)
  std::vector<double> hit_rates = {0.0, 1.0};  // synthetic MAC: fraction of KV groups forced to hit
  bool far_miss_rows = false;                  // synthetic MAC: non-matching ring rows q_pre + 100 (else +/- sqrt(2))
  std::int32_t reps = 20;                    // synthetic: graph replays per timing trial
};

bool parse_bench_e2e_options(const std::vector<std::string>& args, BenchE2EOptions& options);
std::string bench_e2e_help();

/// One (context, attention mode) measurement.
struct BenchE2ERow {
  std::int64_t context = 0;
  macattn::engine::AttentionMode mode = macattn::engine::AttentionMode::exact;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;  // the timed steps
  double decode_tokens_per_second = 0.0;
  double median_step_ms = 0.0;
  std::vector<macattn::engine::LayerStats> layers;  // over warm-up and timed steps
  macattn::StepStats total;
  std::int64_t kv_bytes_read = 0, kv_bytes_exact = 0;
};

struct BenchE2ERun {
  std::string model_summary, model_dir, prompt_source;
  int threads = 0;  // as the Session set them
  std::vector<BenchE2ERow> rows;
};

BenchE2ERun run_bench_e2e(const BenchE2EOptions& options);
/// `--device cuda`: the GPU benchmark (bench_e2e_cuda.cpp): runs, prints its table, writes JSON.
void run_bench_e2e_cuda(const BenchE2EOptions& options);
void print_bench_e2e_table(const BenchE2EOptions& options, const BenchE2ERun& run);
void write_bench_e2e_json(const BenchE2EOptions& options, const BenchE2ERun& run);

}  // namespace macattn_tool
