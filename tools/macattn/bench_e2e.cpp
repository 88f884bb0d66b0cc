// tools/macattn/bench_e2e.cpp: the driver of `macattn bench-e2e`.
//
// Each (context, mode) gets its own Session: the API fixes the attention mode at construction,
// so the prompt is prefilled once per mode. The decode steps feed back each mode's own greedy
// token, as a generation would; the first `warmup` steps are not timed.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <stdexcept>

#include "bench_e2e.hpp"
#include "engine/model.hpp"
#include "engine/sampling.hpp"
#include "engine/tokenizer/tokenizer.hpp"

namespace macattn_tool {

namespace fs = std::filesystem;
using macattn::engine::AttentionMode;

namespace {

// `length` prompt ids: BOS (if the tokenizer has one), then the text's tokens repeated.
std::vector<std::int32_t> text_prompt(const macattn::engine::Tokenizer& tokenizer, const std::string& text,
                                      std::int64_t length) {
  const std::vector<std::int32_t> body = tokenizer.encode(text, /*add_special_tokens=*/false);
  if (body.empty()) throw std::runtime_error("the prompt text has no tokens");
  std::vector<std::int32_t> ids;
  if (tokenizer.bos_id()) ids.push_back(*tokenizer.bos_id());
  while (static_cast<std::int64_t>(ids.size()) < length) ids.push_back(body[(ids.size()) % body.size()]);
  ids.resize(static_cast<std::size_t>(length));
  return ids;
}

std::vector<std::int32_t> synthetic_prompt(std::int32_t vocab, std::uint64_t seed, std::int64_t length) {
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(length));
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % static_cast<std::uint64_t>(vocab));
  return ids;
}

BenchE2ERow measure(const BenchE2EOptions& o, const macattn::engine::Model& model,
                    const std::vector<std::int32_t>& prompt, AttentionMode mode, int& threads) {
  BenchE2ERow row;
  row.context = static_cast<std::int64_t>(prompt.size());
  row.mode = mode;
  const std::int64_t capacity = row.context + o.warmup + o.steps + 1;
  macattn::engine::Session session(model, session_options(o.engine, mode, model.config().num_layers, capacity, false));
  threads = omp_get_max_threads();
  macattn::engine::PrefillProgress progress;
  if (o.engine.progress) {
    progress = [&row, mode](std::int64_t done, std::int64_t total) {
      std::fprintf(stderr, "\rcontext %lld, %s: prefill %lld/%lld tokens   ", static_cast<long long>(row.context),
                   attention_mode_name(mode), static_cast<long long>(done), static_cast<long long>(total));
      std::fflush(stderr);
    };
  }
  std::span<const float> logits = session.prefill(prompt, o.engine.chunk, progress);
  row.prefill_seconds = session.timings().prefill_seconds;
  std::vector<double> step_ms;
  for (std::int64_t s = 0; s < o.warmup + o.steps; ++s) {
    const std::int32_t token = macattn::engine::argmax_token(logits);
    const auto start = std::chrono::steady_clock::now();
    logits = session.decode(token);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (s >= o.warmup) step_ms.push_back(ms);
  }
  for (const double ms : step_ms) row.decode_seconds += ms / 1000.0;
  row.decode_tokens_per_second =
      row.decode_seconds > 0 ? static_cast<double>(step_ms.size()) / row.decode_seconds : 0.0;
  std::nth_element(step_ms.begin(), step_ms.begin() + static_cast<std::ptrdiff_t>(step_ms.size() / 2), step_ms.end());
  row.median_step_ms = step_ms[step_ms.size() / 2];
  row.layers = session.layer_stats();
  for (const auto& l : row.layers) {
    row.total.add(l.attention);
    row.kv_bytes_read += l.kv_bytes_read;
    row.kv_bytes_exact += l.kv_bytes_exact;
  }
  if (o.engine.progress) std::fprintf(stderr, "\r%60s\r", "");
  return row;
}

}  // namespace

BenchE2ERun run_bench_e2e(const BenchE2EOptions& o) {
  const fs::path dir = model_directory(o.engine);
  const macattn::engine::Model model = macattn::engine::Model::load(dir);
  o.engine.mac_layers.resolve(model.config().num_layers);
  BenchE2ERun run;
  run.model_dir = dir.string();
  run.model_summary = model.summary();

  std::string text;
  std::optional<macattn::engine::Tokenizer> tokenizer;
  if (o.synthetic) {
    run.prompt_source = "random token ids (seed " + std::to_string(o.seed) + ")";
  } else {
    const fs::path file = find_repo_path(o.prompt_file.empty() ? "prompts/passkey_12k.txt" : o.prompt_file);
    std::ifstream f(file, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read the prompt file '" + file.string() + "'");
    text.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    if (!fs::is_regular_file(dir / "tokenizer.json")) {
      throw std::runtime_error("model directory '" + dir.string() + "' has no tokenizer.json (use --synthetic on)");
    }
    const fs::path config = dir / "tokenizer_config.json";
    tokenizer =
        macattn::engine::Tokenizer::load(dir / "tokenizer.json", fs::is_regular_file(config) ? config : fs::path());
    run.prompt_source = file.string() + ", repeated";
  }
  for (const std::int64_t context : o.contexts) {
    const std::vector<std::int32_t> prompt = o.synthetic ? synthetic_prompt(model.config().vocab_size, o.seed, context)
                                                         : text_prompt(*tokenizer, text, context);
    if (o.run_exact) run.rows.push_back(measure(o, model, prompt, AttentionMode::exact, run.threads));
    if (o.run_mac) run.rows.push_back(measure(o, model, prompt, AttentionMode::mac, run.threads));
    if (o.engine.progress) std::fprintf(stderr, "context %lld done\n", static_cast<long long>(context));
  }
  return run;
}

}  // namespace macattn_tool
