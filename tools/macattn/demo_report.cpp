// tools/macattn/demo_report.cpp: the final table and the JSON file of `macattn demo`.
#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "demo.hpp"

namespace macattn_tool {

namespace {

double ratio(double a, double b) {
  return b > 0.0 ? a / b : 0.0;
}

double per_step(std::int64_t total, const DemoOptions& o) {
  return static_cast<double>(total) / static_cast<double>(o.steps);
}

}  // namespace

void print_report(const DemoOptions& o, const DemoResults& r) {
  const macattn::StepStats& t = r.totals;
  std::printf("\nmacattn demo: one layer, synthetic stream, %s backend%s%s%s\n", macattn::backend_name(o.backend),
              r.cpu_isa.empty() ? "" : " (", r.cpu_isa.c_str(), r.cpu_isa.empty() ? "" : " kernels)");
  std::printf("  layer   Hq %d, Hkv %d, D %d; K/V %s, queries and outputs f32, ring %s; batch %d\n",
              o.shape.num_q_heads, o.shape.num_kv_heads, o.shape.head_dim, macattn::dtype_name(o.kv_dtype),
              macattn::dtype_name(o.ring_dtype), o.batch);
  std::printf("  MAC     W %d, S %d, tau %.3g (threshold %.4g), F %d, min_context %lld\n", o.config.window,
              o.config.rect_offset, static_cast<double>(o.config.tau),
              static_cast<double>(o.config.threshold(o.shape.head_dim)), o.config.front_sinks,
              static_cast<long long>(o.config.min_context));
  std::printf(
      "  stream  prompt %lld tokens + %lld decode steps; keys %s; drift %.3g, jump prob %.3g (%lld jumps); "
      "seed %llu\n",
      static_cast<long long>(o.context), static_cast<long long>(o.steps), key_mode_name(o.stream.keys), o.stream.drift,
      o.stream.jump_prob, static_cast<long long>(r.query_jumps), static_cast<unsigned long long>(o.stream.seed));
  std::printf("  setup   prompt generation %.2f s; mac_prefill_init of %lld rows %.2f s; decode loop %.2f s\n\n",
              r.setup_seconds, static_cast<long long>(r.prefill_rows), r.prefill_init_seconds, r.decode_seconds);

  std::printf("  %-34s %14s %14s\n", "per decode step", "exact", "MAC");
  std::printf("  %-34s %14.3f %14.3f   (exact/MAC = %.2fx)\n", "time, median (ms)", r.exact_ms.median, r.mac_ms.median,
              ratio(r.exact_ms.median, r.mac_ms.median));
  std::printf("  %-34s %14.3f %14.3f\n", "time, mean (ms)", r.exact_ms.mean, r.mac_ms.mean);
  std::printf("  %-34s %14s %14.3f   (%zu steps)\n", "time, median, all-hit steps (ms)", "-", r.mac_ms_all_hit.median,
              r.mac_ms_all_hit.count);
  std::printf("  %-34s %14s %14.3f   (%zu steps)\n", "time, median, miss steps (ms)", "-", r.mac_ms_some_miss.median,
              r.mac_ms_some_miss.count);
  std::printf("  %-34s %14.0f %14.0f   (MAC reads %.1f%%)\n", "K/V tokens read (per KV-head group)",
              per_step(t.kv_tokens_exact, o), per_step(t.kv_tokens_read, o),
              100.0 * ratio(static_cast<double>(t.kv_tokens_read), static_cast<double>(t.kv_tokens_exact)));
  std::printf("  %-34s %14s %13.1f%%\n", "head hit rate", "-", 100.0 * t.hit_rate());
  std::printf("  %-34s %14s %13.1f%%\n", "all-hit KV groups", "-",
              100.0 * ratio(static_cast<double>(t.groups_all_hit), static_cast<double>(t.groups)));
  std::printf("  %-34s %14s %14.2f\n", "band length, mean over hits", "-", r.mean_band_len);
  std::printf("  %-34s %14s %14.2f   (%.1f%% matched t-1)\n", "match lag t-m, mean over hits", "-", r.mean_match_lag,
              100.0 * r.match_previous_fraction);
  std::printf("  %-34s %14s %14.4f\n", "rel. L2 error vs exact, mean", "0", r.rel_l2_step.mean);
  std::printf("  %-34s %14s %14.4f\n", "rel. L2 error vs exact, max", "0", r.rel_l2_step.max);
  std::printf("  %-34s %14s %14.4f\n", "rel. L2 error of hit heads, mean", "0", r.rel_l2_hit_head.mean);
  if (t.ring_wipes != 0) std::printf("  ring wipes: %lld (unexpected)\n", static_cast<long long>(t.ring_wipes));

  std::printf(
      "\nnote: the error figure above is NOT representative of a trained model. On random keys and values\n"
      "attention is spread thinly over the whole context, and each reused entry is a chain of reuses\n"
      "built under older queries back to the prompt, so MAC's output can differ from exact attention by a\n"
      "relative L2 of order 1. A trained model concentrates attention on a few matching tokens, and the\n"
      "error is much smaller (try --keys clustered); measure quality on a real model's queries.\n"
      "Times are wall-clock on this machine's CPU (medians; a loaded machine makes the means noisy). An\n"
      "all-hit step is one where every KV group hit; in a miss step some group read its whole K/V.\n"
      "The K/V tokens read are what bounds a bandwidth-bound kernel's speed on any device.\n");
}

void write_json(const DemoOptions& o, const DemoResults& r) {
  if (o.json_path.empty()) return;
  std::FILE* f = std::fopen(o.json_path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error("cannot open --json file '" + o.json_path + "' for writing");
  const macattn::StepStats& t = r.totals;
  std::fprintf(f, "{\n  \"tool\": \"macattn demo\",\n  \"version\": \"%s\",\n  \"backend\": \"%s\",\n",
               MACATTN_VERSION_STRING, macattn::backend_name(o.backend));
  std::fprintf(f, "  \"cpu_isa\": \"%s\",\n  \"threads\": %d,\n", r.cpu_isa.c_str(), o.threads);
  std::fprintf(f,
               "  \"options\": {\"context\": %lld, \"steps\": %lld, \"batch\": %d, \"heads_q\": %d, \"heads_kv\": %d, "
               "\"head_dim\": %d, \"dtype\": \"%s\", \"ring_dtype\": \"%s\", \"window\": %d, \"rect\": %d, "
               "\"tau\": %.9g, \"sinks\": %d, \"min_context\": %lld, \"keys\": \"%s\", \"clusters\": %d, "
               "\"drift\": %.9g, \"jump_prob\": %.9g, \"rope_theta\": %.9g, \"seed\": %llu},\n",
               static_cast<long long>(o.context), static_cast<long long>(o.steps), o.batch, o.shape.num_q_heads,
               o.shape.num_kv_heads, o.shape.head_dim, macattn::dtype_name(o.kv_dtype),
               macattn::dtype_name(o.ring_dtype), o.config.window, o.config.rect_offset,
               static_cast<double>(o.config.tau), o.config.front_sinks, static_cast<long long>(o.config.min_context),
               key_mode_name(o.stream.keys), o.stream.clusters, o.stream.drift, o.stream.jump_prob, o.stream.rope_theta,
               static_cast<unsigned long long>(o.stream.seed));
  std::fprintf(f,
               "  \"results\": {\"setup_s\": %.6g, \"prefill_init_s\": %.6g, \"prefill_rows\": %lld, "
               "\"decode_s\": %.6g,\n"
               "    \"exact_ms\": {\"median\": %.6g, \"mean\": %.6g, \"max\": %.6g},\n"
               "    \"mac_ms\": {\"median\": %.6g, \"mean\": %.6g, \"max\": %.6g},\n"
               "    \"mac_ms_all_hit\": {\"median\": %.6g, \"steps\": %zu},\n"
               "    \"mac_ms_some_miss\": {\"median\": %.6g, \"steps\": %zu},\n"
               "    \"heads\": %lld, \"heads_hit\": %lld, \"hit_rate\": %.6g, \"groups\": %lld, "
               "\"groups_all_hit\": %lld,\n"
               "    \"kv_tokens_read\": %lld, \"kv_tokens_exact\": %lld, \"ring_wipes\": %lld,\n"
               "    \"mean_band_len\": %.6g, \"mean_match_lag\": %.6g, \"match_previous_fraction\": %.6g, "
               "\"query_jumps\": %lld,\n"
               "    \"rel_l2_step\": {\"median\": %.6g, \"mean\": %.6g, \"max\": %.6g},\n"
               "    \"rel_l2_hit_head\": {\"median\": %.6g, \"mean\": %.6g, \"max\": %.6g}}\n}\n",
               r.setup_seconds, r.prefill_init_seconds, static_cast<long long>(r.prefill_rows), r.decode_seconds,
               r.exact_ms.median, r.exact_ms.mean, r.exact_ms.max, r.mac_ms.median, r.mac_ms.mean, r.mac_ms.max,
               r.mac_ms_all_hit.median, r.mac_ms_all_hit.count, r.mac_ms_some_miss.median, r.mac_ms_some_miss.count,
               static_cast<long long>(t.heads), static_cast<long long>(t.heads_hit), t.hit_rate(),
               static_cast<long long>(t.groups), static_cast<long long>(t.groups_all_hit),
               static_cast<long long>(t.kv_tokens_read), static_cast<long long>(t.kv_tokens_exact),
               static_cast<long long>(t.ring_wipes), r.mean_band_len, r.mean_match_lag, r.match_previous_fraction,
               static_cast<long long>(r.query_jumps), r.rel_l2_step.median, r.rel_l2_step.mean, r.rel_l2_step.max,
               r.rel_l2_hit_head.median, r.rel_l2_hit_head.mean, r.rel_l2_hit_head.max);
  const bool ok = std::fclose(f) == 0;
  if (!ok) throw std::runtime_error("error writing --json file '" + o.json_path + "'");
}

}  // namespace macattn_tool
