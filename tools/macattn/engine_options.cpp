// tools/macattn/engine_options.cpp: flags shared by `macattn generate` and `macattn bench-e2e`.
#include "engine_options.hpp"

#include <stdexcept>

#include "engine/cuda/cuda_session.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace macattn_tool {

namespace fs = std::filesystem;

namespace {

template <typename T>
std::string str(T v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

macattn::DType parse_dtype(const std::string& flag, const std::string& value) {
  const std::string v = parse_choice(flag, value, {"f32", "f16", "bf16"});
  return v == "f32" ? macattn::DType::f32 : v == "f16" ? macattn::DType::f16 : macattn::DType::bf16;
}

// "0,2-3" -> {0, 2, 3}; every item a whole number or a range lo-hi with lo <= hi.
std::vector<std::int64_t> parse_layer_list(const std::string& text) {
  std::vector<std::int64_t> layers;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, ',')) {
    if (item.empty()) throw UsageError("--mac-layers '" + text + "': empty item in the list");
    const std::size_t dash = item.find('-', 1);
    const std::int64_t lo = parse_int("--mac-layers", item.substr(0, dash), 0, 1 << 20);
    const std::int64_t hi =
        dash == std::string::npos ? lo : parse_int("--mac-layers", item.substr(dash + 1), 0, 1 << 20);
    if (hi < lo) throw UsageError("--mac-layers '" + item + "': range end below its start");
    for (std::int64_t l = lo; l <= hi; ++l) layers.push_back(l);
  }
  if (layers.empty()) throw UsageError("--mac-layers needs at least one layer");
  return layers;
}

}  // namespace

std::vector<bool> LayerSelection::resolve(std::int32_t num_layers) const {
  if (text.empty() || text == "all") return {};
  std::vector<bool> enabled(static_cast<std::size_t>(num_layers), false);
  for (const std::int64_t l : parse_layer_list(text)) {
    if (l >= num_layers) {
      throw UsageError("--mac-layers '" + text + "': layer " + str(l) + " out of range (the model has " +
                       str(num_layers) + " layers, 0-" + str(num_layers - 1) + ")");
    }
    enabled[static_cast<std::size_t>(l)] = true;
  }
  return enabled;
}

std::vector<std::string> expand_short_flags(const std::vector<std::string>& args,
                                            const std::vector<std::string>& switches) {
  static const std::map<std::string, std::string> kLong = {
      {"-m", "--model"},    {"-p", "--prompt"},  {"-f", "--file"}, {"-n", "--n-predict"},
      {"-c", "--ctx-size"}, {"-t", "--threads"}, {"-s", "--seed"}};
  std::vector<std::string> out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto it = kLong.find(args[i]);
    out.push_back(it == kLong.end() ? args[i] : it->second);
    // A value is never a flag: copy it as is (a prompt may well be "-p").
    if (it != kLong.end() && i + 1 < args.size()) out.push_back(args[++i]);
    const bool is_switch = it == kLong.end() && std::find(switches.begin(), switches.end(), args[i]) != switches.end();
    if (is_switch && (i + 1 == args.size() || (args[i + 1] != "on" && args[i + 1] != "off"))) out.push_back("on");
  }
  return out;
}

void add_engine_flags(FlagSet& f, EngineOptions& o) {
  f.add("--model", "DIR", "-m: Hugging Face model directory (config.json, model.safetensors, tokenizer.json)",
        "models/macattn-ref", [&o](const std::string& v) {
          if (v.empty()) throw UsageError("--model '': needs a directory");
          o.model_dir = v;
        });
  f.add("--ctx-size", "N", "-c: context size in tokens (prompt + generated); 0 = the model's maximum", "0",
        [&o](const std::string& v) { o.context = parse_int("--ctx-size", v, 0, std::int64_t{1} << 31); });
  f.add("--threads", "N", "-t: threads, 0 = all cores", "0",
        [&o](const std::string& v) { o.threads = static_cast<std::int32_t>(parse_int("--threads", v, 0, 4096)); });
  f.add("--cpu-products", "fp32|bf16",
        "CPU attention with bf16 K/V: products as exact as fp32 (default) or queries and softmax weights rounded to "
        "bf16 as GPU kernels do (faster where arithmetic is the bound; MACATTN_CPU_PRODUCTS sets the default)",
        "fp32", [&o](const std::string& v) { o.cpu_products = parse_cpu_products("--cpu-products", v); });
  f.add("--chunk", "N", "prefill chunk size in tokens", str(o.chunk),
        [&o](const std::string& v) { o.chunk = static_cast<std::int32_t>(parse_int("--chunk", v, 1, 1 << 20)); });
  f.add("--kv-dtype", "T", "K/V cache dtype: f32 | f16 | bf16", "bf16",
        [&o](const std::string& v) { o.kv_dtype = parse_dtype("--kv-dtype", v); });
  f.add("--mac-window", "W", "MAC ring capacity = lookback window", str(o.mac.window), [&o](const std::string& v) {
    o.mac.window = static_cast<std::int32_t>(parse_int("--mac-window", v, 1, 1 << 20));
  });
  f.add("--mac-rect", "S", "MAC rectification band: the last S keys are always exact", str(o.mac.rect_offset),
        [&o](const std::string& v) {
          o.mac.rect_offset = static_cast<std::int32_t>(parse_int("--mac-rect", v, 1, 1 << 20));
        });
  f.add("--mac-tau", "X", "MAC match threshold in [0, 1): hit iff dist^2 < 2*D*(1-tau)^2", str(o.mac.tau),
        [&o](const std::string& v) { o.mac.tau = static_cast<float>(parse_real("--mac-tau", v, 0.0, 1.0, true)); });
  f.add("--mac-sinks", "F", "MAC front-sink tokens recomputed exactly every step", str(o.mac.front_sinks),
        [&o](const std::string& v) {
          o.mac.front_sinks = static_cast<std::int32_t>(parse_int("--mac-sinks", v, 0, 1 << 20));
        });
  f.add(
      "--mac-min-context", "N", "MAC: no matching while the position is below N", str(o.mac.min_context),
      [&o](const std::string& v) { o.mac.min_context = parse_int("--mac-min-context", v, 0, std::int64_t{1} << 31); });
  f.add("--mac-layers", "LIST", "layers that decode with MAC, e.g. 0,2-3 (others exact)", "all",
        [&o](const std::string& v) {
          if (v != "all") parse_layer_list(v);  // syntax now; the range once the model is known
          o.mac_layers.text = v;
        });
  f.add("--mac-ring-dtype", "T", "MAC ring dtype: f32 | f16 | bf16", "bf16",
        [&o](const std::string& v) { o.ring_dtype = parse_dtype("--mac-ring-dtype", v); });
  f.add("--device", "D", "auto | cpu | cuda: where the model runs (auto: cuda when a usable GPU is present)", "auto",
        [&o](const std::string& v) { o.device = parse_choice("--device", v, {"auto", "cpu", "cuda"}); });
  f.add("--progress", "on|off", "prefill progress line on stderr", "on", [&o](const std::string& v) {
    o.progress = parse_choice("--progress", v, {"on", "off"}) == "on";
  });
}

bool use_cuda_device(const EngineOptions& o) {
  if (o.device == "cpu") return false;
  const bool ok = macattn::engine::cuda_engine_available();
  if (o.device == "cuda" && !ok)
    throw std::runtime_error("--device cuda: no usable CUDA device: " + macattn::engine::cuda_engine_device());
  if (o.device == "cuda" && o.kv_dtype != macattn::DType::bf16)
    throw std::runtime_error("--device cuda keeps K/V in bf16: use --kv-dtype bf16");
  // auto: the GPU keeps K/V in bf16 only; another --kv-dtype stays on the CPU.
  return ok && o.kv_dtype == macattn::DType::bf16;
}

std::string device_line(const EngineOptions& o) {
  if (use_cuda_device(o)) return "cuda (" + macattn::engine::cuda_engine_device() + ")";
  if (o.device == "cpu") return "cpu (--device cpu)";
  if (macattn::engine::cuda_engine_available()) return "cpu (--kv-dtype is not bf16, which the GPU path needs)";
  return "cpu (no usable CUDA device: " + macattn::engine::cuda_engine_device() + ")";
}

void check_engine_options(const EngineOptions& o) {
  try {
    o.mac.validate();
  } catch (const macattn::Error& e) {
    throw UsageError(e.what());
  }
}

fs::path find_repo_path(const fs::path& relative) {
  std::error_code ec;
  if (fs::exists(relative, ec)) return relative;
  // Up from the executable: build/tools/macattn/macattn -> the checkout three levels up.
  fs::path dir = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (int up = 0; !ec && !dir.empty() && up < 6; ++up, dir = dir.parent_path()) {
    if (fs::exists(dir / relative, ec)) return dir / relative;
    if (dir == dir.root_path()) break;
  }
#ifdef MACATTN_SOURCE_DIR
  if (fs::exists(fs::path(MACATTN_SOURCE_DIR) / relative, ec)) return fs::path(MACATTN_SOURCE_DIR) / relative;
#endif
  return relative;
}

fs::path model_directory(const EngineOptions& o) {
  const fs::path dir = o.model_dir.empty() ? find_repo_path("models/macattn-ref") : fs::path(o.model_dir);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw std::runtime_error("model directory '" + dir.string() + "' does not exist or is not a directory" +
                             (o.model_dir.empty() ? " (the shipped reference model; pass -m DIR)" : ""));
  }
  if (!fs::is_regular_file(dir / "config.json", ec)) {
    throw std::runtime_error("model directory '" + dir.string() +
                             "' has no config.json (expected a Hugging Face model directory)");
  }
  return dir;
}

macattn::engine::SessionOptions session_options(const EngineOptions& o, macattn::engine::AttentionMode mode,
                                                std::int32_t num_layers, std::int64_t capacity, bool audit) {
  macattn::engine::SessionOptions s;
  s.max_context = capacity;
  s.kv_dtype = o.kv_dtype;
  s.threads = o.threads;
  s.cpu_products = o.cpu_products;
  s.attention.mode = mode;
  s.attention.mac = o.mac;
  s.attention.ring_dtype = o.ring_dtype;
  s.attention.audit = audit && mode == macattn::engine::AttentionMode::mac;
  if (mode == macattn::engine::AttentionMode::mac) s.attention.mac_layers = o.mac_layers.resolve(num_layers);
  return s;
}


std::string format_count(std::int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (n < 0 ? "-" : "") + out;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

}  // namespace macattn_tool
