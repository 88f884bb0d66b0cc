// tools/macattn/generate.cpp: the driver of `macattn generate`.
//
// One Session per attention mode, each from an empty cache: the prompt is prefilled (which
// also fills the MAC rings), then tokens are sampled one at a time with a Sampler seeded the
// same way for each mode, so exact and MAC see the same prompt and the same random stream
// and any difference in their text comes from attention alone.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <stdexcept>

#include "engine/cuda/cuda_session.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer/tokenizer.hpp"
#include "generate.hpp"
#include "utf8_stream.hpp"

namespace macattn_tool {

namespace fs = std::filesystem;
using macattn::engine::AttentionMode;

namespace {

// A relative path missing here is also looked up in the checkout (find_repo_path), so the
// README's `-f prompts/passkey_12k.txt` works from any directory.
std::string read_prompt_file(const std::string& path) {
  std::ifstream f(find_repo_path(path), std::ios::binary);
  if (!f) throw std::runtime_error("cannot read the prompt file '" + path + "'");
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

macattn::engine::Tokenizer load_tokenizer(const fs::path& dir) {
  const fs::path json = dir / "tokenizer.json", config = dir / "tokenizer_config.json";
  std::error_code ec;
  if (!fs::is_regular_file(json, ec)) {
    throw std::runtime_error("model directory '" + dir.string() + "' has no tokenizer.json");
  }
  return macattn::engine::Tokenizer::load(json, fs::is_regular_file(config, ec) ? config : fs::path());
}

// The last characters of the prompt, on one line, for the header (whole UTF-8 characters only).
std::string prompt_tail(const std::string& text, std::size_t max_bytes) {
  std::size_t start = text.size() > max_bytes ? text.size() - max_bytes : 0;
  while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
  std::string tail = start > 0 ? "..." : "";
  for (std::size_t i = start; i < text.size(); ++i)
    tail += text[i] == '\n' ? std::string("\\n") : std::string(1, text[i]);
  return tail;
}

// Prints "prefill: 4096/12008 tokens (34%), 812 tok/s" over itself on stderr, as llama.cpp does.
macattn::engine::PrefillProgress progress_line(bool enabled, const char* label) {
  if (!enabled) return {};
  const auto start = std::chrono::steady_clock::now();
  return [start, label](std::int64_t done, std::int64_t total) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "\rprefill (%s): %lld/%lld tokens (%.0f%%), %.0f tok/s   ", label,
                 static_cast<long long>(done), static_cast<long long>(total), 100.0 * done / total,
                 s > 0 ? done / s : 0.0);
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
}

// The two engines behind one interface for the generation loop: the CPU Session, or a
// CudaSession of batch 1 (logits copied to the host each step; sampling on the host).
struct CpuEngine {
  macattn::engine::Session s;
  std::span<const float> prefill(std::span<const std::int32_t> t, std::int32_t chunk,
                                 const macattn::engine::PrefillProgress& p) {
    return s.prefill(t, chunk, p);
  }
  std::span<const float> decode(std::int32_t t) { return s.decode(t); }
};
struct CudaEngine {
  macattn::engine::CudaSession s;
  std::span<const float> prefill(std::span<const std::int32_t> t, std::int32_t chunk,
                                 const macattn::engine::PrefillProgress& p) {
    return s.prefill(0, t, chunk, p);
  }
  std::span<const float> decode(std::int32_t t) { return s.decode(std::span(&t, 1)); }
};

template <typename Engine>
GenerateRun generate_loop(Engine& engine, const GenerateOptions& o, const macattn::engine::ModelConfig& config,
                          const macattn::engine::Tokenizer& tokenizer, const GenerateResult& result,
                          AttentionMode mode) {
  GenerateRun run;
  run.mode = mode;
  auto& session = engine.s;
  // Like llama.cpp, a progress line only for prompts long enough to wait for (more than one chunk).
  const bool long_prefill = static_cast<std::int64_t>(result.prompt_tokens.size()) > o.engine.chunk;
  std::span<const float> logits =
      engine.prefill(result.prompt_tokens, o.engine.chunk,
                     progress_line(o.engine.progress && long_prefill, attention_mode_name(mode)));

  std::set<std::int32_t> eos(config.eos_token_ids.begin(), config.eos_token_ids.end());
  for (const std::int32_t id : tokenizer.eos_ids()) eos.insert(id);
  const std::int64_t budget = std::min<std::int64_t>(o.n_predict, result.capacity - session.position());
  macattn::engine::Sampler sampler(o.sampling);
  Utf8Stream stream;
  for (std::int64_t i = 0; i < budget; ++i) {
    const std::int32_t token = sampler.sample(logits);
    run.tokens.push_back(token);
    if (eos.count(token) && !o.ignore_eos) {
      run.stopped_at_eos = true;
      break;
    }
    if (token < tokenizer.vocab_size() && !tokenizer.is_special(token)) {
      std::fputs(stream.push(tokenizer.token_bytes(token)).c_str(), stdout);
      std::fflush(stdout);
    }
    if (i + 1 == budget) break;  // the last token's logits are never used: do not decode it
    logits = engine.decode(token);
    if (const auto& audit = session.last_audit(); audit && audit->greedy_changed()) {
      run.audit_greedy_change_steps.push_back(i + 1);  // the choice of generated token i + 1
    }
  }
  std::fputs((stream.finish() + "\n").c_str(), stdout);
  std::fflush(stdout);
  run.text = tokenizer.decode(run.tokens, /*skip_special_tokens=*/true);
  run.timings = session.timings();
  run.layers = session.layer_stats();
  run.kv_cache_bytes = session.kv_cache_bytes();
  run.ring_bytes = session.ring_bytes();
  return run;
}

GenerateRun generate_once(const GenerateOptions& o, const macattn::engine::Model& model,
                          const macattn::engine::Tokenizer& tokenizer, const GenerateResult& result,
                          AttentionMode mode, bool cuda) {
  const auto& config = model.config();
  const macattn::engine::SessionOptions so =
      session_options(o.engine, mode, config.num_layers, result.capacity, o.audit);
  if (cuda) {
    macattn::engine::CudaSessionOptions co;
    co.session = so;
    if (co.session.kv_dtype != macattn::DType::bf16)
      throw std::runtime_error("--device cuda keeps K/V in bf16 (--kv-dtype bf16)");
    co.session.kv_page_size = 16;
    CudaEngine engine{macattn::engine::CudaSession(model, co)};
    return generate_loop(engine, o, config, tokenizer, result, mode);
  }
  CpuEngine engine{macattn::engine::Session(model, so)};
  return generate_loop(engine, o, config, tokenizer, result, mode);
}

}  // namespace

GenerateResult run_generate(const GenerateOptions& o) {
  const fs::path dir = model_directory(o.engine);
  const std::string text = o.prompt_given ? o.prompt : read_prompt_file(o.prompt_file);
  const macattn::engine::Tokenizer tokenizer = load_tokenizer(dir);
  const macattn::engine::Model model = macattn::engine::Model::load(dir);
  const auto& config = model.config();

  GenerateResult result;
  result.model_dir = dir.string();
  result.model_summary = model.summary();
  result.num_layers = config.num_layers;
  result.prompt_tokens = tokenizer.encode(text, /*add_special_tokens=*/true);
  result.capacity = o.engine.context > 0 ? o.engine.context : config.max_position_embeddings;
  const auto prompt_len = static_cast<std::int64_t>(result.prompt_tokens.size());
  if (prompt_len == 0) throw std::runtime_error("the prompt is empty (0 tokens)");
  if (prompt_len >= result.capacity) {
    throw std::runtime_error("the prompt is " + format_count(prompt_len) +
                             " tokens, leaving no room to generate in a " + "context of " +
                             format_count(result.capacity) + " tokens (-c; the model's maximum is " +
                             format_count(config.max_position_embeddings) + ")");
  }
  o.engine.mac_layers.resolve(config.num_layers);  // a layer index past the model is a usage error

  const bool cuda = use_cuda_device(o.engine);
  std::printf("macattn generate: %s\n", result.model_summary.c_str());
  std::printf("device: %s\n", device_line(o.engine).c_str());
  std::printf("prompt: %s tokens%s, ending \"%s\"\n", format_count(prompt_len).c_str(),
              o.prompt_file.empty() ? "" : (" from " + o.prompt_file).c_str(), prompt_tail(text, 60).c_str());
  const std::int64_t room = result.capacity - prompt_len;
  std::printf("sampling: %s; up to %s new tokens%s; context %s\n", o.sampling.to_string().c_str(),
              format_count(std::min(o.n_predict, room)).c_str(), o.n_predict > room ? " (-n cut to fit -c)" : "",
              format_count(result.capacity).c_str());
  if (o.attention != AttentionChoice::exact) {
    std::printf("MAC: %s, layers %s%s\n", o.engine.mac.to_string().c_str(),
                o.engine.mac_layers.text.empty() ? "all" : o.engine.mac_layers.text.c_str(),
                o.audit ? "; audit on (exact attention computed every step too)" : "");
  }
  std::fflush(stdout);

  std::vector<AttentionMode> modes;
  if (o.attention != AttentionChoice::mac) modes.push_back(AttentionMode::exact);
  if (o.attention != AttentionChoice::exact) modes.push_back(AttentionMode::mac);
  for (const AttentionMode mode : modes) {
    std::printf("\n=== %s attention ===\n", attention_mode_name(mode));
    std::fflush(stdout);
    result.runs.push_back(generate_once(o, model, tokenizer, result, mode, cuda));
    print_run_report(o, result, result.runs.back());
  }
  return result;
}

}  // namespace macattn_tool
