// tools/macattn/engine_commands.cpp: `macattn generate` and `macattn bench-e2e` from flags to
// exit code.
#include "engine_commands.hpp"

#include <cstdio>

#include "bench_e2e.hpp"
#include "generate.hpp"

namespace macattn_tool {

int run_generate_command(const std::vector<std::string>& args) {
  GenerateOptions options;
  if (!parse_generate_options(args, options)) return kExitOk;
  const GenerateResult result = run_generate(options);
  print_comparison(options, result);
  write_generate_json(options, result);
  if (!options.json_path.empty()) std::printf("\nresults written to %s\n", options.json_path.c_str());
  return kExitOk;
}

int run_bench_e2e_command(const std::vector<std::string>& args) {
  BenchE2EOptions options;
  if (!parse_bench_e2e_options(args, options)) return kExitOk;
  // The GPU benchmark only when asked for: `auto` keeps bench-e2e on the CPU, so its CPU
  // numbers (docs/benchmarks/e2e_cpu.md) and tests mean the same on a machine with a GPU.
  if (options.engine.device == "cuda" && use_cuda_device(options.engine)) {
    run_bench_e2e_cuda(options);
    return kExitOk;
  }
  if (!options.shape.empty()) throw UsageError("--shape needs --device cuda (and a GPU)");
  const BenchE2ERun run = run_bench_e2e(options);
  print_bench_e2e_table(options, run);
  write_bench_e2e_json(options, run);
  if (!options.json_path.empty()) std::printf("\nresults written to %s\n", options.json_path.c_str());
  return kExitOk;
}

}  // namespace macattn_tool
