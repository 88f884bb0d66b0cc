// tools/macattn/args.cpp: flag parsing and value checks for the macattn tool.
#include <thread>
#include <fstream>
#include "args.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <utility>

namespace macattn_tool {

namespace {
std::string quoted(const std::string& s) {
  return "'" + s + "'";
}
}  // namespace

std::int64_t parse_int(const std::string& flag, const std::string& value, std::int64_t min, std::int64_t max) {
  std::int64_t v = 0;
  const char* first = value.data();
  const char* last = value.data() + value.size();
  const auto [end, ec] = std::from_chars(first, last, v);
  if (value.empty() || ec == std::errc::invalid_argument || end != last) {
    throw UsageError(flag + " " + quoted(value) + ": not a whole number");
  }
  if (ec == std::errc::result_out_of_range || v < min || v > max) {
    std::ostringstream s;
    s << flag << " " << quoted(value) << ": must be in [" << min << ", " << max << "]";
    throw UsageError(s.str());
  }
  return v;
}

double parse_real(const std::string& flag, const std::string& value, double min, double max, bool max_exclusive) {
  // strtod accepts leading spaces, hex floats and "inf"/"nan"; insist on a plain finite number.
  char* end = nullptr;
  const double v = value.empty() || std::isspace(static_cast<unsigned char>(value[0]))
                       ? std::nan("")
                       : std::strtod(value.c_str(), &end);
  if (value.empty() || end != value.c_str() + value.size() || !std::isfinite(v)) {
    throw UsageError(flag + " " + quoted(value) + ": not a finite number");
  }
  if (v < min || v > max || (max_exclusive && v == max)) {
    std::ostringstream s;
    s << flag << " " << quoted(value) << ": must be in [" << min << ", " << max << (max_exclusive ? ")" : "]");
    throw UsageError(s.str());
  }
  return v;
}

std::string parse_choice(const std::string& flag, const std::string& value, const std::vector<std::string>& choices) {
  std::string list;
  for (const std::string& c : choices) {
    if (c == value) return value;
    list += (list.empty() ? "" : ", ") + c;
  }
  throw UsageError(flag + " " + quoted(value) + ": must be one of " + list);
}

macattn::CpuProducts parse_cpu_products(const std::string& flag, const std::string& value) {
  return parse_choice(flag, value, {"fp32", "bf16"}) == "bf16" ? macattn::CpuProducts::bf16 : macattn::CpuProducts::fp32;
}

void FlagSet::add(const std::string& name, const std::string& placeholder, const std::string& help,
                  const std::string& default_text, Setter setter) {
  flags_.push_back(Flag{name, placeholder, help, default_text, std::move(setter)});
}

FlagSet::Flag* FlagSet::find(const std::string& name) {
  for (Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

void FlagSet::parse(const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "-h" || arg == "--help") {
      help_requested_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) throw UsageError("unexpected argument " + quoted(arg) + " (flags start with --)");
    std::string name = arg;
    std::string value;
    bool has_value = false;
    if (const std::size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    Flag* flag = find(name);
    if (flag == nullptr) throw UsageError("unknown flag " + quoted(name));
    if (flag->seen) throw UsageError(name + " given twice");
    if (!has_value) {
      if (i + 1 >= args.size()) throw UsageError(name + " needs a value (" + flag->placeholder + ")");
      value = args[++i];
    }
    flag->seen = true;
    flag->setter(value);
  }
}

std::string FlagSet::help_text() const {
  const std::string help_left = "-h, --help";
  std::size_t width = help_left.size();
  for (const Flag& f : flags_) width = std::max(width, f.name.size() + 1 + f.placeholder.size());
  std::ostringstream s;
  for (const Flag& f : flags_) {
    const std::string left = f.name + " " + f.placeholder;
    s << "  " << left << std::string(width - left.size() + 2, ' ') << f.help;
    if (!f.default_text.empty()) s << " (default " << f.default_text << ")";
    s << "\n";
  }
  s << "  " << help_left << std::string(width - help_left.size() + 2, ' ') << "this text\n";
  return s.str();
}

std::string machine_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  return model + ", " + std::to_string(std::thread::hardware_concurrency()) + " logical CPUs";
}

}  // namespace macattn_tool
