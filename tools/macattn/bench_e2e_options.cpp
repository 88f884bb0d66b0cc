// tools/macattn/bench_e2e_options.cpp: the flags of `macattn bench-e2e`.
#include <iostream>
#include <sstream>

#include "bench_e2e.hpp"

namespace macattn_tool {

namespace {

template <typename T>
std::string str(T v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::string join(const std::vector<std::int64_t>& v) {
  std::string s;
  for (const std::int64_t x : v) {
    if (!s.empty()) s += ',';
    s += std::to_string(x);
  }
  return s;
}

FlagSet bench_e2e_flags(BenchE2EOptions& o) {
  FlagSet f;
  add_engine_flags(f, o.engine);
  f.add("--contexts", "LIST", "context lengths (prompt tokens before the timed decode)", join(o.contexts),
        [&o](const std::string& v) {
          o.contexts.clear();
          std::stringstream s(v);
          std::string item;
          while (std::getline(s, item, ','))
            o.contexts.push_back(parse_int("--contexts", item, 2, std::int64_t{1} << 30));
          if (o.contexts.empty()) throw UsageError("--contexts needs at least one value");
        });
  f.add("--steps", "N", "timed decode steps per context and attention mode", str(o.steps),
        [&o](const std::string& v) { o.steps = parse_int("--steps", v, 1, 1 << 20); });
  f.add("--warmup", "N", "decode steps before timing", str(o.warmup),
        [&o](const std::string& v) { o.warmup = parse_int("--warmup", v, 0, 1 << 20); });
  f.add("--file", "FILE", "-f: prompt text, repeated to fill each context", "prompts/passkey_12k.txt",
        [&o](const std::string& v) {
          if (v.empty()) throw UsageError("--file '': needs a file name");
          o.prompt_file = v;
        });
  f.add("--synthetic", "on|off", "random token ids instead of text (seeded by --seed)", "off",
        [&o](const std::string& v) {
          o.synthetic = parse_choice("--synthetic", v, {"on", "off"}) == "on";
        });
  f.add("--seed", "N", "-s: seed of the synthetic ids", str(o.seed),
        [&o](const std::string& v) { o.seed = static_cast<std::uint64_t>(parse_int("--seed", v, 0, INT64_MAX)); });
  f.add("--attention", "MODE", "exact | mac | both", "both", [&o](const std::string& v) {
    const std::string c = parse_choice("--attention", v, {"exact", "mac", "both"});
    o.run_exact = c != "mac";
    o.run_mac = c != "exact";
  });
  f.add("--batches", "LIST", "--device cuda: batch sizes (sequences decoded together)", "1", [&o](const std::string& v) {
    o.batches.clear();
    std::stringstream s(v);
    std::string item;
    while (std::getline(s, item, ','))
      o.batches.push_back(static_cast<std::int32_t>(parse_int("--batches", item, 1, 64)));
    if (o.batches.empty()) throw UsageError("--batches needs at least one value");
  });
  f.add("--shape", "NAME", "--device cuda: llama3-8b = random weights of that shape, K/V random (synthetic)", "",
        [&o](const std::string& v) { o.shape = parse_choice("--shape", v, {"llama3-8b"}); });
  f.add("--hit-rates", "LIST", "--device cuda --shape: MAC hit rates forced through the rings", "0,1",
        [&o](const std::string& v) {
          o.hit_rates.clear();
          std::stringstream s(v);
          std::string item;
          while (std::getline(s, item, ',')) {
            o.hit_rates.push_back(parse_real("--hit-rates", item, 0.0, 1.0));
          }
          if (o.hit_rates.empty()) throw UsageError("--hit-rates needs at least one value");
        });
  f.add("--miss-rows", "near|far",
        "--device cuda --shape: the rings' non-matching rows: near = q_pre +/- sqrt(2) per dim (rejected by the scan "
        "after 64 dims, like unrelated queries), far = q_pre + 100 (rejected after the first 32)",
        "near", [&o](const std::string& v) {
          o.far_miss_rows = parse_choice("--miss-rows", v, {"near", "far"}) == "far";
        });
  f.add("--reps", "N", "--device cuda --shape: graph replays per timing trial", str(o.reps),
        [&o](const std::string& v) { o.reps = static_cast<std::int32_t>(parse_int("--reps", v, 1, 100000)); });
  f.add("--json", "FILE", "also write the results as JSON to FILE", "", [&o](const std::string& v) {
    if (v.empty()) throw UsageError("--json '': needs a file name");
    o.json_path = v;
  });
  return f;
}

}  // namespace

std::string bench_e2e_help() {
  BenchE2EOptions defaults;
  std::ostringstream s;
  s << "usage: macattn bench-e2e [-m DIR] [--contexts LIST] [--steps N] [flags]\n"
       "\n"
       "Times whole-model decoding at each context length, exact attention and MAC-Attention side by\n"
       "side on the same model (the shipped reference model by default). Per context and mode: one\n"
       "prefill of the prompt (the bundled passkey prompt repeated to the length, or random ids), a\n"
       "few warm-up steps, then N timed decode steps feeding back the greedy token. Reports decode\n"
       "tokens/s, the per-layer head hit rate of MAC and the K/V bytes read against exact attention,\n"
       "with the machine, threads, commit and parameters. Prefill is quadratic in the context: at 64K\n"
       "it dominates the run time.\n"
       "\n"
       "With --device cuda (never by default: auto stays on the CPU here) it times the CUDA engine instead:\n"
       "--batches sequences decoded together, graph replays of the whole decode step, and with\n"
       "--shape llama3-8b random weights and K/V of that shape (synthetic, timing only) with MAC hit rates\n"
       "forced through the rings (--hit-rates); method in docs/benchmarks/e2e_cuda.md.\n"
       "\n"
       "flags:\n"
    << bench_e2e_flags(defaults).help_text();
  return s.str();
}

bool parse_bench_e2e_options(const std::vector<std::string>& args, BenchE2EOptions& o) {
  FlagSet flags = bench_e2e_flags(o);
  flags.parse(expand_short_flags(args));
  if (flags.help_requested()) {
    std::cout << bench_e2e_help();
    return false;
  }
  if (o.synthetic && !o.prompt_file.empty()) throw UsageError("--synthetic on and --file exclude each other");
  check_engine_options(o.engine);
  return true;
}

}  // namespace macattn_tool
