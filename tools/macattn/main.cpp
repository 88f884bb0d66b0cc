// tools/macattn/main.cpp: the `macattn` command: subcommand dispatch, --help, --version.
//
// Exit codes: 0 success, 1 failure while running, 2 bad command line.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "args.hpp"
#include "bench.hpp"
#include "demo.hpp"
#include "macattn/macattn.hpp"
#ifdef MACATTN_WITH_ENGINE
#include "engine_commands.hpp"
#endif

namespace {

using namespace macattn_tool;

const char* kUsage =
    "usage: macattn <command> [flags]\n"
    "\n"
    "MAC-Attention (Match-Amend-Complete) decode attention for long-context LLM inference.\n"
    "\n"
    "commands:\n"
    "  demo        synthetic long-context decode stream through exact and MAC attention\n"
    "  bench       decode benchmark, exact vs MAC, over contexts, batches, shapes and hit rates\n"
#ifdef MACATTN_WITH_ENGINE
    "  generate    generate text with a Hugging Face Llama-family model, exact and/or MAC attention\n"
    "  bench-e2e   decode tokens/s of a model at given context lengths, exact vs MAC\n"
#endif
    "\n"
    "  macattn --help           this text\n"
    "  macattn --version        version and enabled backends\n"
    "  macattn <command> --help flags of a command\n";

int run_demo_command(const std::vector<std::string>& args) {
  DemoOptions options;
  if (!parse_demo_options(args, options)) return kExitOk;
  const DemoResults results = run_demo(options);
  print_report(options, results);
  write_json(options, results);
  if (!options.json_path.empty()) std::printf("\nresults written to %s\n", options.json_path.c_str());
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> all(argv + 1, argv + argc);
  if (all.empty()) {
    std::cerr << kUsage;
    return kExitUsage;
  }
  const std::string& command = all[0];
  const std::vector<std::string> rest(all.begin() + 1, all.end());
  try {
    if (command == "-h" || command == "--help" || command == "help") {
      std::cout << kUsage;
      return kExitOk;
    }
    if (command == "--version" || command == "version") {
      std::printf("macattn %s (backends: %s, %s with %s kernels; built with CUDA: %s)\n", MACATTN_VERSION_STRING,
                  macattn::backend_name(macattn::Backend::reference), macattn::backend_name(macattn::Backend::cpu),
                  macattn::cpu_isa(), MACATTN_WITH_CUDA ? "yes" : "no");
      return kExitOk;
    }
    if (command == "demo") return run_demo_command(rest);
    if (command == "bench") return run_bench_command(rest);
#ifdef MACATTN_WITH_ENGINE
    if (command == "generate") return run_generate_command(rest);
    if (command == "bench-e2e") return run_bench_e2e_command(rest);
#endif
    throw UsageError("unknown command '" + command + "'");
  } catch (const UsageError& e) {
    std::cerr << "macattn: " << e.what() << "\n(run 'macattn --help' or 'macattn <command> --help')\n";
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "macattn: error: " << e.what() << "\n";
    return kExitFailure;
  }
}
