// tools/macattn/args.hpp: a small command-line flag parser for the macattn tool.
//
// Flags are declared with a name, a value placeholder, a help line and a setter; values are
// parsed and range-checked here so that every bad value gives one clear message naming the
// flag and the value. Usage errors are thrown as UsageError and end the tool with exit code 2.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "macattn/attention.hpp"

namespace macattn_tool {

/// A bad command line. main() prints the message and exits with kExitUsage.
class UsageError : public std::runtime_error {
 public:
  explicit UsageError(const std::string& what) : std::runtime_error(what) {}
};

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

/// Parses a whole decimal integer in [min, max]; throws UsageError naming flag and value.
std::int64_t parse_int(const std::string& flag, const std::string& value, std::int64_t min, std::int64_t max);
/// Parses a finite real number in [min, max] (or [min, max) when max_exclusive); throws UsageError.
double parse_real(const std::string& flag, const std::string& value, double min, double max,
                  bool max_exclusive = false);
/// Returns value if it is one of choices; otherwise throws UsageError listing them.
std::string parse_choice(const std::string& flag, const std::string& value, const std::vector<std::string>& choices);
/// "fp32" or "bf16" (macattn::CpuProducts); otherwise throws UsageError.
macattn::CpuProducts parse_cpu_products(const std::string& flag, const std::string& value);

/// A set of flags of one subcommand. Accepts `--name value` and `--name=value`; `-h`/`--help`
/// sets help_requested() instead of failing.
class FlagSet {
 public:
  using Setter = std::function<void(const std::string& value)>;

  /// Declares `--name <placeholder>`: help is one line; default_text is shown as "(default X)".
  void add(const std::string& name, const std::string& placeholder, const std::string& help,
           const std::string& default_text, Setter setter);

  /// Parses args (flags only, no positionals). Throws UsageError on an unknown flag, a missing
  /// value, a repeated flag or a bad value.
  void parse(const std::vector<std::string>& args);

  bool help_requested() const { return help_requested_; }
  /// The flag table, one flag per line, aligned, ending with -h/--help.
  std::string help_text() const;

 private:
  struct Flag {
    std::string name, placeholder, help, default_text;
    Setter setter;
    bool seen = false;
  };
  Flag* find(const std::string& name);
  std::vector<Flag> flags_;
  bool help_requested_ = false;
};

/// "<CPU model>, <n> logical CPUs" from /proc/cpuinfo, for benchmark reports.
std::string machine_name();

}  // namespace macattn_tool
