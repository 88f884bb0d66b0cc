// tools/macattn/demo_options.cpp: the flags of `macattn demo`.
#include <cstdio>
#include <iostream>
#include <sstream>

#include "args.hpp"
#include "demo.hpp"

namespace macattn_tool {

namespace {

constexpr std::int64_t kMaxContext = std::int64_t{1} << 31;
constexpr double kMaxKVBytes = 16.0 * (1ull << 30);  // refuse K/V buffers above 16 GiB

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

FlagSet demo_flags(DemoOptions& o) {
  FlagSet f;
  // The stream.
  f.add("--context", "N", "prompt length P (tokens before decode)", str(o.context),
        [&o](const std::string& v) { o.context = parse_int("--context", v, 1, kMaxContext); });
  f.add("--steps", "N", "decode steps", str(o.steps),
        [&o](const std::string& v) { o.steps = parse_int("--steps", v, 1, 1 << 24); });
  f.add("--batch", "B", "sequences decoded together", str(o.batch),
        [&o](const std::string& v) { o.batch = static_cast<std::int32_t>(parse_int("--batch", v, 1, 4096)); });
  f.add("--keys", "MODE", "random | clustered (keys from a few clusters: concentrated attention)", "random",
        [&o](const std::string& v) {
          o.stream.keys =
              parse_choice("--keys", v, {"random", "clustered"}) == "random" ? KeyMode::random : KeyMode::clustered;
        });
  f.add("--clusters", "N", "key clusters for --keys clustered", str(o.stream.clusters), [&o](const std::string& v) {
    o.stream.clusters = static_cast<std::int32_t>(parse_int("--clusters", v, 1, 1 << 20));
  });
  f.add("--drift", "X", "query drift per step, about radians", str(o.stream.drift),
        [&o](const std::string& v) { o.stream.drift = parse_real("--drift", v, 0.0, 10.0); });
  f.add("--jump-prob", "P", "probability per head per step of a jump to a fresh query", str(o.stream.jump_prob),
        [&o](const std::string& v) { o.stream.jump_prob = parse_real("--jump-prob", v, 0.0, 1.0); });
  f.add("--rope-theta", "X", "RoPE base", str(o.stream.rope_theta),
        [&o](const std::string& v) { o.stream.rope_theta = parse_real("--rope-theta", v, 1.0, 1e12); });
  f.add("--seed", "N", "random seed", str(o.stream.seed), [&o](const std::string& v) {
    o.stream.seed = static_cast<std::uint64_t>(parse_int("--seed", v, 0, INT64_MAX));
  });
  // The layer.
  f.add("--heads-q", "N", "query heads Hq", str(o.shape.num_q_heads), [&o](const std::string& v) {
    o.shape.num_q_heads = static_cast<std::int32_t>(parse_int("--heads-q", v, 1, 1024));
  });
  f.add("--heads-kv", "N", "KV heads Hkv (must divide Hq)", str(o.shape.num_kv_heads), [&o](const std::string& v) {
    o.shape.num_kv_heads = static_cast<std::int32_t>(parse_int("--heads-kv", v, 1, 1024));
  });
  f.add("--head-dim", "D", "head dimension (even, <= 1024)", str(o.shape.head_dim), [&o](const std::string& v) {
    o.shape.head_dim = static_cast<std::int32_t>(parse_int("--head-dim", v, 2, 1024));
  });
  f.add("--dtype", "T", "K/V cache dtype: f32 | f16 | bf16 (queries and outputs are f32)", "bf16",
        [&o](const std::string& v) { o.kv_dtype = parse_dtype("--dtype", v); });
  f.add("--ring-dtype", "T", "MAC ring dtype: f32 | f16 | bf16", "bf16",
        [&o](const std::string& v) { o.ring_dtype = parse_dtype("--ring-dtype", v); });
  f.add("--backend", "NAME", "reference (scalar oracle) | cpu (fast SIMD, threaded)", "cpu",
        [&o](const std::string& v) {
          o.backend = parse_choice("--backend", v, {"reference", "cpu"}) == "cpu" ? macattn::Backend::cpu
                                                                                  : macattn::Backend::reference;
        });
  f.add("--threads", "N", "threads of the cpu backend, 0 = all cores", str(o.threads),
        [&o](const std::string& v) { o.threads = static_cast<std::int32_t>(parse_int("--threads", v, 0, 4096)); });
  // MAC.
  f.add("--window", "W", "ring capacity = lookback window", str(o.config.window), [&o](const std::string& v) {
    o.config.window = static_cast<std::int32_t>(parse_int("--window", v, 1, 1 << 20));
  });
  f.add("--rect", "S", "rectification offset: the last S keys are always exact", str(o.config.rect_offset),
        [&o](const std::string& v) {
          o.config.rect_offset = static_cast<std::int32_t>(parse_int("--rect", v, 1, 1 << 20));
        });
  f.add("--tau", "X", "match threshold in [0, 1): hit iff dist^2 < 2*D*(1-tau)^2", str(o.config.tau),
        [&o](const std::string& v) { o.config.tau = static_cast<float>(parse_real("--tau", v, 0.0, 1.0, true)); });
  f.add("--sinks", "F", "front-sink tokens recomputed exactly every step", str(o.config.front_sinks),
        [&o](const std::string& v) {
          o.config.front_sinks = static_cast<std::int32_t>(parse_int("--sinks", v, 0, 1 << 20));
        });
  f.add("--min-context", "N", "no matching while the position is below N", str(o.config.min_context),
        [&o](const std::string& v) { o.config.min_context = parse_int("--min-context", v, 0, kMaxContext); });
  // Output.
  f.add("--json", "FILE", "also write the results as JSON to FILE", "", [&o](const std::string& v) {
    if (v.empty()) throw UsageError("--json '': needs a file name");
    o.json_path = v;
  });
  f.add("--progress", "on|off", "progress lines on stderr", "on", [&o](const std::string& v) {
    o.progress = parse_choice("--progress", v, {"on", "off"}) == "on";
  });
  return f;
}

}  // namespace

std::string demo_help() {
  DemoOptions defaults;
  std::ostringstream s;
  s << "usage: macattn demo [flags]\n"
       "\n"
       "Runs a synthetic long-context decode stream (one attention layer, Llama-3.1-8B's shape by\n"
       "default) through exact attention and MAC-Attention side by side, and reports the hit rate,\n"
       "the K/V tokens each path read, the time per step and the error of MAC against exact.\n"
       "Keys and values are random (RoPE applied to keys); each head's pre-RoPE query drifts\n"
       "slowly and sometimes jumps to a fresh direction. The ring is initialised from the last W\n"
       "prompt positions (mac_prefill_init) before decoding. The error on such random data is far\n"
       "larger than on a trained model's attention; see the note printed at the end.\n"
       "\n"
       "flags:\n"
    << demo_flags(defaults).help_text();
  return s.str();
}

bool parse_demo_options(const std::vector<std::string>& args, DemoOptions& o) {
  FlagSet flags = demo_flags(o);
  flags.parse(args);
  if (flags.help_requested()) {
    std::cout << demo_help();
    return false;
  }
  // Checks across flags, named by the flags a user typed.
  if (o.shape.num_q_heads % o.shape.num_kv_heads != 0) {
    throw UsageError("--heads-kv " + str(o.shape.num_kv_heads) + " must divide --heads-q " + str(o.shape.num_q_heads));
  }
  if (o.shape.head_dim % 2 != 0) throw UsageError("--head-dim " + str(o.shape.head_dim) + ": must be even (RoPE)");
  const double kv_bytes = 2.0 * static_cast<double>(o.batch) * static_cast<double>(o.context + o.steps) *
                          o.shape.num_kv_heads * o.shape.head_dim *
                          static_cast<double>(macattn::dtype_size(o.kv_dtype));
  if (kv_bytes > kMaxKVBytes) {
    throw UsageError("--context/--steps/--batch: the K/V cache would take " + str(kv_bytes / (1ull << 30)) +
                     " GiB (limit 16 GiB)");
  }
  try {
    o.shape.validate();
    o.config.validate();
  } catch (const macattn::Error& e) {
    throw UsageError(e.what());
  }
  o.stream.num_q_heads = o.shape.num_q_heads;
  o.stream.num_kv_heads = o.shape.num_kv_heads;
  o.stream.head_dim = o.shape.head_dim;
  return true;
}

}  // namespace macattn_tool
