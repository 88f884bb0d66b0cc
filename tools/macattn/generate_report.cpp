// tools/macattn/generate_report.cpp: what `macattn generate` prints after each run, the
// exact-vs-MAC comparison, and the JSON file.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "generate.hpp"
#include "git_commit.hpp"

namespace macattn_tool {

using macattn::engine::AttentionMode;
using macattn::engine::LayerStats;

namespace {

LayerStats sum_layers(const std::vector<LayerStats>& layers) {
  LayerStats total;
  for (const LayerStats& l : layers) {
    total.decode_steps = std::max(total.decode_steps, l.decode_steps);
    total.attention.add(l.attention);
    total.kv_bytes_read += l.kv_bytes_read;
    total.kv_bytes_exact += l.kv_bytes_exact;
  }
  return total;
}

double ratio(double a, double b) {
  return b > 0 ? a / b : 0.0;
}

const GenerateRun* find_run(const GenerateResult& r, AttentionMode mode) {
  for (const GenerateRun& run : r.runs)
    if (run.mode == mode) return &run;
  return nullptr;
}

}  // namespace

void print_run_report(const GenerateOptions& o, const GenerateResult& result, const GenerateRun& run) {
  const auto& t = run.timings;
  std::printf("[%s] %zu tokens generated%s\n", attention_mode_name(run.mode), run.tokens.size(),
              run.stopped_at_eos ? " (stopped at end of text)" : "");
  std::printf("[%s] prefill: %s tokens in %.2f s (%.1f tok/s); decode: %s tokens in %.3f s (%.2f tok/s)\n",
              attention_mode_name(run.mode), format_count(t.prefill_tokens).c_str(), t.prefill_seconds,
              t.prefill_tokens_per_second(), format_count(t.decode_tokens).c_str(), t.decode_seconds,
              t.decode_tokens_per_second());
  const LayerStats total = sum_layers(run.layers);
  if (run.mode == AttentionMode::mac && total.decode_steps > 0) {
    const bool audit = o.audit && !run.layers.empty() && run.layers[0].audit_steps > 0;
    std::printf("[mac] %-5s %-5s %13s %14s  %-34s%s\n", "layer", "attn", "head hit rate", "groups all-hit",
                "K/V bytes read / exact", audit ? "  audit rel L2 mean / max" : "");
    for (std::size_t i = 0; i < run.layers.size(); ++i) {
      const LayerStats& l = run.layers[i];
      std::printf("[mac] %-5zu %-5s %13.3f %14.3f  %10s / %-10s (%5.1f%%)", i, l.mac_enabled ? "mac" : "exact",
                  l.head_hit_rate(), ratio(double(l.attention.groups_all_hit), double(l.attention.groups)),
                  format_bytes(double(l.kv_bytes_read)).c_str(), format_bytes(double(l.kv_bytes_exact)).c_str(),
                  100.0 * ratio(double(l.kv_bytes_read), double(l.kv_bytes_exact)));
      if (audit) std::printf("  %.2e / %.2e", l.audit_rel_l2_mean(), l.audit_rel_l2_max);
      std::printf("\n");
    }
    std::printf("[mac] %-5s %-5s %13.3f %14.3f  %10s / %-10s (%5.1f%%)\n", "all", "", total.head_hit_rate(),
                ratio(double(total.attention.groups_all_hit), double(total.attention.groups)),
                format_bytes(double(total.kv_bytes_read)).c_str(), format_bytes(double(total.kv_bytes_exact)).c_str(),
                100.0 * ratio(double(total.kv_bytes_read), double(total.kv_bytes_exact)));
    if (audit) {
      std::printf("[mac] audit: the greedy token would have changed at %zu of %lld decode steps",
                  run.audit_greedy_change_steps.size(), static_cast<long long>(run.layers[0].audit_steps));
      for (std::size_t i = 0; i < run.audit_greedy_change_steps.size() && i < 10; ++i)
        std::printf("%s%lld", i == 0 ? " (generated token " : ", ",
                    static_cast<long long>(run.audit_greedy_change_steps[i]));
      std::printf("%s\n", run.audit_greedy_change_steps.empty()       ? ""
                          : run.audit_greedy_change_steps.size() > 10 ? ", ...)"
                                                                      : ")");
    }
  } else {
    std::printf("[%s] K/V bytes read by decode: %s (every layer reads the whole cache)\n",
                attention_mode_name(run.mode), format_bytes(double(total.kv_bytes_read)).c_str());
  }
  std::printf("[%s] K/V cache %s, MAC rings %s\n", attention_mode_name(run.mode),
              format_bytes(double(run.kv_cache_bytes)).c_str(), format_bytes(double(run.ring_bytes)).c_str());
  (void)result;
  std::fflush(stdout);
}

void print_comparison(const GenerateOptions& o, const GenerateResult& result) {
  const GenerateRun* exact = find_run(result, AttentionMode::exact);
  const GenerateRun* mac = find_run(result, AttentionMode::mac);
  if (exact == nullptr || mac == nullptr) return;
  std::size_t same = 0;
  while (same < exact->tokens.size() && same < mac->tokens.size() && exact->tokens[same] == mac->tokens[same]) ++same;
  const bool identical = exact->tokens == mac->tokens;
  const bool audited = o.audit;
  std::printf("\n=== exact vs MAC ===\n");
  if (identical) {
    std::printf("tokens: identical (%zu of %zu)\n", same, exact->tokens.size());
  } else {
    std::printf("tokens: differ from generated token %zu on (exact %zu tokens, MAC %zu)\n", same, exact->tokens.size(),
                mac->tokens.size());
  }
  const double e = exact->timings.decode_tokens_per_second(), m = mac->timings.decode_tokens_per_second();
  std::printf("decode: exact %.2f tok/s, MAC %.2f tok/s (%.2fx)%s\n", e, m, ratio(m, e),
              audited ? "; MAC's time includes the audit's exact attention" : "");
  const LayerStats te = sum_layers(exact->layers), tm = sum_layers(mac->layers);
  std::printf("K/V bytes read by decode: exact %s, MAC %s (%.1f%%); MAC head hit rate %.3f\n",
              format_bytes(double(te.kv_bytes_read)).c_str(), format_bytes(double(tm.kv_bytes_read)).c_str(),
              100.0 * ratio(double(tm.kv_bytes_read), double(te.kv_bytes_read)), tm.head_hit_rate());
  std::fflush(stdout);
}

void write_generate_json(const GenerateOptions& o, const GenerateResult& result) {
  if (o.json_path.empty()) return;
  nlohmann::json j;
  j["model_dir"] = result.model_dir;
  j["model"] = result.model_summary;
  j["machine"] = machine_name();
  j["commit"] = MACATTN_GIT_COMMIT;
  j["build_type"] = MACATTN_BUILD_TYPE;
  j["threads"] = o.engine.threads;
  j["prompt_tokens"] = result.prompt_tokens;
  j["prompt_file"] = o.prompt_file;
  j["context"] = result.capacity;
  j["n_predict"] = o.n_predict;
  j["sampling"] = {{"temperature", o.sampling.temperature},
                   {"top_k", o.sampling.top_k},
                   {"top_p", o.sampling.top_p},
                   {"seed", o.sampling.seed}};
  j["mac"] = {{"window", o.engine.mac.window},
              {"rect_offset", o.engine.mac.rect_offset},
              {"tau", o.engine.mac.tau},
              {"front_sinks", o.engine.mac.front_sinks},
              {"min_context", o.engine.mac.min_context},
              {"layers", o.engine.mac_layers.text.empty() ? "all" : o.engine.mac_layers.text},
              {"ring_dtype", macattn::dtype_name(o.engine.ring_dtype)}};
  j["kv_dtype"] = macattn::dtype_name(o.engine.kv_dtype);
  j["chunk"] = o.engine.chunk;
  j["audit"] = o.audit;
  for (const GenerateRun& run : result.runs) {
    nlohmann::json r;
    r["attention"] = attention_mode_name(run.mode);
    r["tokens"] = run.tokens;
    r["text"] = run.text;
    r["stopped_at_eos"] = run.stopped_at_eos;
    r["prefill_tokens"] = run.timings.prefill_tokens;
    r["prefill_seconds"] = run.timings.prefill_seconds;
    r["prefill_tokens_per_second"] = run.timings.prefill_tokens_per_second();
    r["decode_tokens"] = run.timings.decode_tokens;
    r["decode_seconds"] = run.timings.decode_seconds;
    r["decode_tokens_per_second"] = run.timings.decode_tokens_per_second();
    r["kv_cache_bytes"] = run.kv_cache_bytes;
    r["ring_bytes"] = run.ring_bytes;
    r["audit_greedy_change_steps"] = run.audit_greedy_change_steps;
    for (const LayerStats& l : run.layers) {
      r["layers"].push_back({{"mac_enabled", l.mac_enabled},
                             {"decode_steps", l.decode_steps},
                             {"heads", l.attention.heads},
                             {"heads_hit", l.attention.heads_hit},
                             {"head_hit_rate", l.head_hit_rate()},
                             {"groups", l.attention.groups},
                             {"groups_all_hit", l.attention.groups_all_hit},
                             {"kv_tokens_read", l.attention.kv_tokens_read},
                             {"kv_tokens_exact", l.attention.kv_tokens_exact},
                             {"kv_bytes_read", l.kv_bytes_read},
                             {"kv_bytes_exact", l.kv_bytes_exact},
                             {"audit_steps", l.audit_steps},
                             {"audit_rel_l2_mean", l.audit_rel_l2_mean()},
                             {"audit_rel_l2_max", l.audit_rel_l2_max}});
    }
    j["runs"].push_back(r);
  }
  std::ofstream f(o.json_path);
  if (!f) throw std::runtime_error("cannot open --json file '" + o.json_path + "' for writing");
  f << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  if (!f) throw std::runtime_error("error writing --json file '" + o.json_path + "'");
}

}  // namespace macattn_tool
