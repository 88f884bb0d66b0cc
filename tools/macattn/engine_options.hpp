// tools/macattn/engine_options.hpp: what `macattn generate` and `macattn bench-e2e` share:
// the model directory, threads, context, prefill chunk, attention and MAC flags, and the
// llama.cpp-style short flags (-m, -p, -f, -n, -c, -t, -s).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "args.hpp"
#include "engine/session.hpp"
#include "macattn/macattn.hpp"

namespace macattn_tool {

/// MAC layer selection as typed: empty = every layer, else a list like "0,2-3".
struct LayerSelection {
  std::string text;  // empty = all
  /// The per-layer enable vector for a model of num_layers layers ({} = all). Throws
  /// UsageError naming --mac-layers if an index is out of range.
  std::vector<bool> resolve(std::int32_t num_layers) const;
};

struct EngineOptions {
  std::string model_dir;      // empty: models/macattn-ref, found by find_repo_path
  std::int64_t context = 0;   // -c; 0 = the model's max_position_embeddings
  std::int32_t threads = 0;   // -t; 0 = all cores
  std::optional<macattn::CpuProducts> cpu_products;  // --cpu-products (unset: MACATTN_CPU_PRODUCTS or fp32)
  std::int32_t chunk = 512;   // prefill chunk size
  macattn::MacConfig mac;     // --mac-* flags
  LayerSelection mac_layers;  // --mac-layers
  macattn::DType kv_dtype = macattn::DType::bf16;
  macattn::DType ring_dtype = macattn::DType::bf16;
  bool progress = true;  // prefill progress line on stderr
  std::string device = "auto";  // --device: auto | cpu | cuda
};

/// Rewrites llama.cpp's short flags to the long names FlagSet knows ("-n 8" -> "--n-predict 8"),
/// and gives a bare switch of `switches` (e.g. "--audit" not followed by on/off) the value "on".
std::vector<std::string> expand_short_flags(const std::vector<std::string>& args,
                                            const std::vector<std::string>& switches = {});

/// Declares -m/--model, -c/--ctx-size, -t/--threads, --chunk, --kv-dtype, the --mac-* flags and
/// --progress on `flags`, writing into `o`.
void add_engine_flags(FlagSet& flags, EngineOptions& o);

/// True when the run goes to the GPU: --device cuda, or auto with a usable GPU. Throws
/// std::runtime_error for --device cuda without one (the message says why).
bool use_cuda_device(const EngineOptions& o);
/// "cuda (NVIDIA H200 ...)" or "cpu (...why...)", for the progress output.
std::string device_line(const EngineOptions& o);

/// Checks across the engine flags (MacConfig::validate as a usage error).
void check_engine_options(const EngineOptions& o);

/// A path shipped in the repository (the default model, the bundled prompt): relative to the
/// current directory if it exists there, else to the directories above the executable, else to
/// the source tree the tool was built from. Returns `relative` unchanged if none has it.
std::filesystem::path find_repo_path(const std::filesystem::path& relative);

/// The model directory to load: --model, or the shipped reference model. Throws
/// std::runtime_error naming the path if it is not a directory with a config.json.
std::filesystem::path model_directory(const EngineOptions& o);

/// Session options for one attention mode (the MAC fields are used in mac mode only).
macattn::engine::SessionOptions session_options(const EngineOptions& o, macattn::engine::AttentionMode mode,
                                                std::int32_t num_layers, std::int64_t capacity, bool audit);


/// Formats helpers shared by the reports.
std::string format_count(std::int64_t n);  // 12008 -> "12,008"
std::string format_bytes(double bytes);    // 1.5e6 -> "1.43 MiB"

}  // namespace macattn_tool
