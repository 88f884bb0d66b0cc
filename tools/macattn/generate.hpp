// tools/macattn/generate.hpp: `macattn generate`, text generation with exact attention, MAC
// attention, or both side by side from the same prompt.
//
//   generate_options.cpp  flags -> GenerateOptions (every value checked; exit code 2 on a bad one)
//   generate.cpp          the driver: model, tokenizer, prompt, one Session per attention mode
//   generate_report.cpp   the statistics after each run, the comparison, the JSON file
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/sampling.hpp"
#include "engine/session.hpp"
#include "engine_options.hpp"

namespace macattn_tool {

enum class AttentionChoice { exact, mac, both };

struct GenerateOptions {
  EngineOptions engine;
  std::string prompt;       // -p (text)
  std::string prompt_file;  // -f (path); exactly one of prompt / prompt_file
  bool prompt_given = false;
  std::int64_t n_predict = 64;  // -n: tokens to generate at most
  macattn::engine::SamplingParams sampling;
  AttentionChoice attention = AttentionChoice::mac;
  bool audit = false;       // MAC runs also compute exact attention every step
  bool ignore_eos = false;  // keep generating past the end-of-text token
  std::string json_path;
};

/// Parses the flags after `generate`. Returns false if --help was given (help printed).
bool parse_generate_options(const std::vector<std::string>& args, GenerateOptions& options);
std::string generate_help();

/// One generation with one attention mode.
struct GenerateRun {
  macattn::engine::AttentionMode mode = macattn::engine::AttentionMode::exact;
  std::vector<std::int32_t> tokens;  // generated ids (an ending EOS included)
  std::string text;                  // tokenizer decode of `tokens`, special tokens skipped
  bool stopped_at_eos = false;
  macattn::engine::Timings timings;
  std::vector<macattn::engine::LayerStats> layers;
  std::vector<std::int64_t> audit_greedy_change_steps;  // decode steps whose greedy token MAC changed
  std::size_t kv_cache_bytes = 0, ring_bytes = 0;
};

struct GenerateResult {
  std::string model_summary;
  std::string model_dir;
  std::int32_t num_layers = 0;
  std::vector<std::int32_t> prompt_tokens;
  std::int64_t capacity = 0;
  std::vector<GenerateRun> runs;  // exact first when both
};

/// Runs the generation(s), streaming the text to stdout and progress to stderr. Throws
/// std::runtime_error / macattn::Error (exit code 1) for a bad model directory, a prompt that
/// does not fit the context, and the like.
GenerateResult run_generate(const GenerateOptions& options);

/// Statistics of one run (stdout), printed after its text.
void print_run_report(const GenerateOptions& options, const GenerateResult& result, const GenerateRun& run);
/// Exact vs MAC, when both ran.
void print_comparison(const GenerateOptions& options, const GenerateResult& result);
void write_generate_json(const GenerateOptions& options, const GenerateResult& result);

}  // namespace macattn_tool
