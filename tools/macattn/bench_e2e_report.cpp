// tools/macattn/bench_e2e_report.cpp: what `macattn bench-e2e` prints and writes.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "bench_e2e.hpp"
#include "git_commit.hpp"

namespace macattn_tool {

using macattn::engine::AttentionMode;

namespace {

double ratio(double a, double b) {
  return b > 0 ? a / b : 0.0;
}

// The exact row of the same context, for the speedup column.
const BenchE2ERow* exact_row(const BenchE2ERun& run, std::int64_t context) {
  for (const BenchE2ERow& r : run.rows)
    if (r.context == context && r.mode == AttentionMode::exact) return &r;
  return nullptr;
}

}  // namespace

void print_bench_e2e_table(const BenchE2EOptions& o, const BenchE2ERun& run) {
  std::printf("\nmacattn bench-e2e: %s\n", run.model_summary.c_str());
  std::printf("machine: %s; %d threads; build %s, commit %s\n", machine_name().c_str(), run.threads, MACATTN_BUILD_TYPE,
              MACATTN_GIT_COMMIT);
  std::printf("prompt: %s; %lld warm-up + %lld timed decode steps per context and mode; K/V %s, prefill chunk %d\n",
              run.prompt_source.c_str(), static_cast<long long>(o.warmup), static_cast<long long>(o.steps),
              macattn::dtype_name(o.engine.kv_dtype), o.engine.chunk);
  std::printf("MAC: %s, layers %s, ring %s\n", o.engine.mac.to_string().c_str(),
              o.engine.mac_layers.text.empty() ? "all" : o.engine.mac_layers.text.c_str(),
              macattn::dtype_name(o.engine.ring_dtype));
  std::printf("%8s %-6s %10s %11s %12s %9s %9s %13s %8s  %s\n", "context", "attn", "prefill s", "prefill t/s",
              "decode tok/s", "ms/token", "head hit", "KV read/exact", "speedup", "hit rate per layer");
  for (const BenchE2ERow& r : run.rows) {
    const BenchE2ERow* e = exact_row(run, r.context);
    std::printf("%8lld %-6s %10.2f %11.1f %12.2f %9.3f %9.3f %12.1f%% %7.2fx ", static_cast<long long>(r.context),
                attention_mode_name(r.mode), r.prefill_seconds, ratio(double(r.context), r.prefill_seconds),
                r.decode_tokens_per_second, r.median_step_ms, r.total.hit_rate(),
                100.0 * ratio(double(r.kv_bytes_read), double(r.kv_bytes_exact)),
                e ? ratio(r.decode_tokens_per_second, e->decode_tokens_per_second) : 0.0);
    if (r.mode == AttentionMode::mac)
      for (const auto& l : r.layers) std::printf(" %.3f", l.head_hit_rate());
    std::printf("\n");
  }
  std::printf(
      "(decode tok/s over the timed steps; ms/token: median step; speedup: decode tok/s over exact's at the\n"
      " same context; KV read/exact: K/V bytes decode read against what exact attention reads)\n");
}

void write_bench_e2e_json(const BenchE2EOptions& o, const BenchE2ERun& run) {
  if (o.json_path.empty()) return;
  nlohmann::json j;
  j["model_dir"] = run.model_dir;
  j["model"] = run.model_summary;
  j["machine"] = machine_name();
  j["threads"] = run.threads;
  j["commit"] = MACATTN_GIT_COMMIT;
  j["build_type"] = MACATTN_BUILD_TYPE;
  j["prompt"] = run.prompt_source;
  j["warmup_steps"] = o.warmup;
  j["timed_steps"] = o.steps;
  j["kv_dtype"] = macattn::dtype_name(o.engine.kv_dtype);
  j["chunk"] = o.engine.chunk;
  j["mac"] = {{"window", o.engine.mac.window},
              {"rect_offset", o.engine.mac.rect_offset},
              {"tau", o.engine.mac.tau},
              {"front_sinks", o.engine.mac.front_sinks},
              {"min_context", o.engine.mac.min_context},
              {"layers", o.engine.mac_layers.text.empty() ? "all" : o.engine.mac_layers.text},
              {"ring_dtype", macattn::dtype_name(o.engine.ring_dtype)}};
  for (const BenchE2ERow& r : run.rows) {
    const BenchE2ERow* e = exact_row(run, r.context);
    nlohmann::json row = {
        {"context", r.context},
        {"attention", attention_mode_name(r.mode)},
        {"prefill_seconds", r.prefill_seconds},
        {"decode_seconds", r.decode_seconds},
        {"decode_tokens_per_second", r.decode_tokens_per_second},
        {"median_step_ms", r.median_step_ms},
        {"speedup_vs_exact", e ? ratio(r.decode_tokens_per_second, e->decode_tokens_per_second) : 0.0},
        {"head_hit_rate", r.total.hit_rate()},
        {"kv_tokens_read", r.total.kv_tokens_read},
        {"kv_tokens_exact", r.total.kv_tokens_exact},
        {"kv_bytes_read", r.kv_bytes_read},
        {"kv_bytes_exact", r.kv_bytes_exact}};
    for (const auto& l : r.layers) {
      row["layers"].push_back({{"mac_enabled", l.mac_enabled},
                               {"head_hit_rate", l.head_hit_rate()},
                               {"kv_tokens_read", l.attention.kv_tokens_read},
                               {"kv_tokens_exact", l.attention.kv_tokens_exact}});
    }
    j["rows"].push_back(row);
  }
  std::ofstream f(o.json_path);
  if (!f) throw std::runtime_error("cannot open --json file '" + o.json_path + "' for writing");
  f << j.dump(2) << "\n";
  if (!f) throw std::runtime_error("error writing --json file '" + o.json_path + "'");
}

}  // namespace macattn_tool
