// tools/macattn/bench_options.cpp: the flags of `macattn bench`.
#include <iostream>
#include <sstream>

#include "args.hpp"
#include "bench.hpp"

namespace macattn_tool {

namespace {

std::vector<std::string> split_list(const std::string& flag, const std::string& value) {
  std::vector<std::string> items;
  std::stringstream s(value);
  std::string item;
  while (std::getline(s, item, ',')) {
    if (item.empty()) throw UsageError(flag + " '" + value + "': empty item in the list");
    items.push_back(item);
  }
  if (items.empty()) throw UsageError(flag + " needs at least one value");
  return items;
}

BenchShape named_shape(const std::string& flag, const std::string& name) {
  const std::string n = parse_choice(flag, name, {"llama3-8b", "gqa8", "hd64", "mha"});
  macattn::AttentionShape s;
  if (n == "llama3-8b") s = {32, 8, 128, 0.0f};
  if (n == "gqa8") s = {32, 4, 128, 0.0f};
  if (n == "hd64") s = {32, 8, 64, 0.0f};
  if (n == "mha") s = {32, 32, 128, 0.0f};
  return {n, s};
}

macattn::DType parse_dtype(const std::string& flag, const std::string& value) {
  const std::string v = parse_choice(flag, value, {"f32", "f16", "bf16"});
  return v == "f32" ? macattn::DType::f32 : v == "f16" ? macattn::DType::f16 : macattn::DType::bf16;
}

template <typename T>
std::string str(T v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

FlagSet bench_flags(BenchOptions& o) {
  FlagSet f;
  f.add("--shapes", "LIST", "attention shapes: llama3-8b (32/8/128), gqa8 (32/4/128), hd64 (32/8/64), mha (32/32/128)",
        "llama3-8b", [&o](const std::string& v) {
          o.shapes.clear();
          for (const auto& s : split_list("--shapes", v)) o.shapes.push_back(named_shape("--shapes", s));
        });
  f.add("--contexts", "LIST", "context lengths N (decode position N-1)", "8192,32768,65536,131072",
        [&o](const std::string& v) {
          o.contexts.clear();
          for (const auto& s : split_list("--contexts", v)) o.contexts.push_back(parse_int("--contexts", s, 2, 1 << 24));
        });
  f.add("--batches", "LIST", "batch sizes", "1,4", [&o](const std::string& v) {
    o.batches.clear();
    for (const auto& s : split_list("--batches", v))
      o.batches.push_back(static_cast<std::int32_t>(parse_int("--batches", s, 1, 4096)));
  });
  f.add("--dtypes", "LIST", "K/V dtypes: bf16, f16, f32", "bf16", [&o](const std::string& v) {
    o.dtypes.clear();
    for (const auto& s : split_list("--dtypes", v)) o.dtypes.push_back(parse_dtype("--dtypes", s));
  });
  f.add("--hit-rates", "LIST", "target hit rates in [0, 1]", "0,0.5,0.8,0.9,0.95,0.97,1", [&o](const std::string& v) {
    o.hit_rates.clear();
    for (const auto& s : split_list("--hit-rates", v)) o.hit_rates.push_back(parse_real("--hit-rates", s, 0.0, 1.0));
  });
  f.add("--miss-patterns", "LIST", "packed (misses fill whole KV groups), independent (per head)", "packed,independent",
        [&o](const std::string& v) {
          o.patterns.clear();
          for (const auto& s : split_list("--miss-patterns", v))
            o.patterns.push_back(parse_choice("--miss-patterns", s, {"packed", "independent"}) == "packed"
                                     ? MissPattern::packed
                                     : MissPattern::independent);
        });
  f.add("--backend", "NAME", "backend timed: cpu | reference | cuda (the GPU benchmark)", "cpu",
        [&o](const std::string& v) {
          const std::string b = parse_choice("--backend", v, {"cpu", "reference", "cuda"});
          o.cuda = b == "cuda";
          o.backend = b == "reference" ? macattn::Backend::reference : macattn::Backend::cpu;
        });
  f.add("--threads", "N", "threads (0 = all cores)", "0", [&o](const std::string& v) {
    o.threads = static_cast<std::int32_t>(parse_int("--threads", v, 0, 4096));
  });
  f.add("--window", "W", "ring capacity", str(o.config.window), [&o](const std::string& v) {
    o.config.window = static_cast<std::int32_t>(parse_int("--window", v, 1, 1 << 20));
  });
  f.add("--rect", "S", "rectification offset", str(o.config.rect_offset), [&o](const std::string& v) {
    o.config.rect_offset = static_cast<std::int32_t>(parse_int("--rect", v, 1, 1 << 20));
  });
  f.add("--tau", "X", "match threshold parameter in [0, 1)", str(o.config.tau),
        [&o](const std::string& v) { o.config.tau = static_cast<float>(parse_real("--tau", v, 0.0, 1.0, true)); });
  f.add("--ring-dtype", "T", "ring dtype: bf16, f16, f32", "bf16",
        [&o](const std::string& v) { o.ring_dtype = parse_dtype("--ring-dtype", v); });
  f.add("--match-age", "N", "hits match position t - N (1 = the previous step, the common case)", "1",
        [&o](const std::string& v) { o.match_age = static_cast<std::int32_t>(parse_int("--match-age", v, 1, 1 << 20)); });
  f.add("--min-seconds", "X", "timing budget per measurement", str(o.min_seconds),
        [&o](const std::string& v) { o.min_seconds = parse_real("--min-seconds", v, 0.0, 3600.0); });
  f.add("--min-reps", "N", "minimum timed runs per measurement", str(o.min_reps),
        [&o](const std::string& v) { o.min_reps = static_cast<std::int32_t>(parse_int("--min-reps", v, 1, 100000)); });
  f.add("--check", "on|off", "check every configuration against the reference backend first", "on",
        [&o](const std::string& v) { o.check = parse_choice("--check", v, {"on", "off"}) == "on"; });
  f.add("--flush", "on|off", "evict caches before every timed run", "on",
        [&o](const std::string& v) { o.flush = parse_choice("--flush", v, {"on", "off"}) == "on"; });
  f.add("--huge-pages", "on|off",
        "K/V buffers advised for 2 MiB transparent huge pages (as the engine's cache; off: 4 KiB pages). The "
        "bandwidth ceiling is measured on huge pages either way",
        "on", [&o](const std::string& v) { o.huge_pages = parse_choice("--huge-pages", v, {"on", "off"}) == "on"; });
  f.add("--cpu-products", "fp32|bf16",
        "--backend cpu: bf16 K/V products as exact as fp32 (queries and weights as two bf16 terms) or rounded to "
        "bf16 as GPU kernels do (macattn::set_cpu_products; checked against the reference at 1e-2 instead of 1e-3)",
        "fp32", [&o](const std::string& v) { o.products = parse_cpu_products("--cpu-products", v); });
  f.add("--graph-steps", "N",
        "--backend cuda: also time N consecutive layer-steps in one graph (per step; 1 = off)", str(o.graph_steps),
        [&o](const std::string& v) {
          o.graph_steps = static_cast<std::int32_t>(parse_int("--graph-steps", v, 1, 64));
        });
  f.add("--miss-rows", "near|far",
        "--backend cuda: ring rows other than a hit's match: near (q_pre +/- sqrt(2) per dim: distance 2D, "
        "as the CPU bench's random rows; they pass the scan's 32-dim bound) or far (q_pre + 3 per dim: "
        "every row falls at the first bound)",
        "near", [&o](const std::string& v) {
          o.far_miss_rows = parse_choice("--miss-rows", v, {"near", "far"}) == "far";
        });
  f.add("--page-size", "N", "--backend cuda: tokens per K/V page (1-1024)", str(o.page_size),
        [&o](const std::string& v) { o.page_size = static_cast<std::int32_t>(parse_int("--page-size", v, 1, 1024)); });
  f.add("--kv-layout", "nhd|hnd",
        "--backend cuda: page layout, NHD ([page][token][kv head][dim]) or HND ([page][kv head][token][dim])", "nhd",
        [&o](const std::string& v) { o.hnd = parse_choice("--kv-layout", v, {"nhd", "hnd"}) == "hnd"; });
  f.add("--page-order", "in|shuffled",
        "--backend cuda: each sequence's pages in pool order, or scattered over the pool in a random order (as "
        "in a long-running server)",
        "in", [&o](const std::string& v) {
          o.shuffled_pages = parse_choice("--page-order", v, {"in", "shuffled"}) == "shuffled";
        });
  f.add("--queries", "bf16|f32",
        "--backend cuda: dtype of the queries (q_post, q_pre) and the output; the engine passes f32", "bf16",
        [&o](const std::string& v) {
          o.query_dtype = parse_choice("--queries", v, {"bf16", "f32"}) == "f32" ? macattn::DType::f32
                                                                                  : macattn::DType::bf16;
        });
  f.add("--head-stats", "on|off",
        "--backend cuda: the timed MAC steps write per-head stats, as the engine's decode steps do (without a "
        "miss's best row, so the scan still drops rows)",
        "off", [&o](const std::string& v) { o.head_stats = parse_choice("--head-stats", v, {"on", "off"}) == "on"; });
  f.add("--seed", "N", "random seed", "1",
        [&o](const std::string& v) { o.seed = static_cast<std::uint64_t>(parse_int("--seed", v, 0, INT64_MAX)); });
  f.add("--json", "FILE", "write results as JSON", "none", [&o](const std::string& v) { o.json_path = v; });
  f.add("--csv", "FILE", "write results as CSV (one row per configuration)", "none",
        [&o](const std::string& v) { o.csv_path = v; });
  f.add("--progress", "on|off", "progress lines on stderr", "on",
        [&o](const std::string& v) { o.progress = parse_choice("--progress", v, {"on", "off"}) == "on"; });
  return f;
}

}  // namespace

bool parse_bench_options(const std::vector<std::string>& args, BenchOptions& o) {
  o.shapes = {named_shape("--shapes", "llama3-8b")};
  o.config.min_context = 0;
  FlagSet flags = bench_flags(o);
  flags.parse(args);
  if (flags.help_requested()) {
    std::cout << "usage: macattn bench [flags]\n\n"
                 "Decode attention, exact vs MAC, one layer-step per timing, over a grid of shapes,\n"
                 "contexts, batches, dtypes, hit rates and miss patterns. Hit rates are forced by ring\n"
                 "contents that the real scan matches (no decision is overridden). Every configuration\n"
                 "is checked against the reference backend before it is timed; timings are medians\n"
                 "over runs that each start from cold caches. The machine's streaming-read bandwidth\n"
                 "is measured in the same run.\n\nflags:\n"
              << flags.help_text();
    return false;
  }
  for (const auto& s : o.shapes) s.shape.validate();
  o.config.validate();
  if (!o.cuda && (o.page_size != 16 || o.hnd || o.shuffled_pages))
    throw UsageError("--page-size, --kv-layout and --page-order apply to --backend cuda only (the CPU benchmark "
                     "times a contiguous cache)");
  if (!o.cuda && (o.query_dtype != macattn::DType::bf16 || o.head_stats))
    throw UsageError("--queries and --head-stats apply to --backend cuda only");
  for (const auto n : o.contexts)
    if (n <= o.match_age) throw UsageError("--contexts " + std::to_string(n) + " must exceed --match-age");
  if (o.match_age > o.config.window)
    throw UsageError("--match-age " + std::to_string(o.match_age) + " must be <= --window " +
                     std::to_string(o.config.window));
  return true;
}

}  // namespace macattn_tool
