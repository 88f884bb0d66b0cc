// tools/macattn/engine_commands.hpp: the commands that run a model (built with the engine,
// MACATTN_WITH_ENGINE): `macattn generate` (generate.hpp) and `macattn bench-e2e` (bench_e2e.hpp).
#pragma once

#include <string>
#include <vector>

namespace macattn_tool {

/// Each parses its flags (UsageError on a bad one), runs, and returns the exit code.
int run_generate_command(const std::vector<std::string>& args);
int run_bench_e2e_command(const std::vector<std::string>& args);

}  // namespace macattn_tool
