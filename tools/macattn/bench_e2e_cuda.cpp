// tools/macattn/bench_e2e_cuda.cpp: `macattn bench-e2e --device cuda`, decode tokens/s on the GPU.
//
// Two kinds of rows:
//   --shape llama3-8b (synthetic, timing only): random bf16 weights made on the device, random
//     K/V filled to the context (no prefill), MAC hit rates forced through the ring contents so
//     that the device scan itself decides (cuda_bench_force_hits; measured rates reported).
//     Each timed step is a replay of the decode step's CUDA graph after a restore kernel (the
//     one ring slot a step overwrites), whose separately timed cost is subtracted.
//   a real model (-m, default the shipped one): the prompt text repeated to the context is
//     prefilled into every sequence; then graph replays that feed back each step's greedy
//     token are timed, and the hit rates are the model's own.
// tokens/s = batch / step time. The byte floor of exact decode = (weights one step reads + K/V
// bytes exact attention reads) / the streaming-read bandwidth measured in the same run.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "bench_e2e.hpp"
#include "engine/cuda/cuda_bench.hpp"
#include "engine/cuda/cuda_session.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer/tokenizer.hpp"
#include "git_commit.hpp"
#if defined(MACATTN_ENGINE_WITH_CUDA)
#include "stream_bandwidth_cuda.hpp"
#endif

namespace macattn_tool {

namespace fs = std::filesystem;
using macattn::engine::AttentionMode;
using macattn::engine::CudaSession;

namespace {

struct CudaRow {
  std::string kind;  // "synthetic" or "model"
  std::int64_t context = 0;
  std::int32_t batch = 0;
  AttentionMode mode = AttentionMode::exact;
  double hit_rate_target = -1;  // synthetic MAC rows
  double step_ms = 0, restore_ms = 0, tokens_per_second = 0;
  macattn::StepStats total;
  std::int64_t kv_bytes_read = 0, kv_bytes_exact = 0;
  double weight_bytes = 0, floor_ms = 0;
};

macattn::engine::ModelConfig llama3_8b_config(std::int64_t max_positions) {
  const std::string json = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
    "vocab_size": 128256, "max_position_embeddings": )" +
                           std::to_string(max_positions) + R"(,
    "rope_theta": 500000.0, "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": false,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}})";
  return macattn::engine::ModelConfig::parse(json, "", "llama3-8b (built in)");
}

void fill_stats(const CudaSession& s, CudaRow& r) {
  for (const auto& l : s.layer_stats()) {
    r.total.add(l.attention);
    r.kv_bytes_read += l.kv_bytes_read;
    r.kv_bytes_exact += l.kv_bytes_exact;
  }
}

void finish_row(CudaRow& r, double weight_bytes, double gbps) {
  r.tokens_per_second = r.step_ms > 0 ? r.batch * 1000.0 / r.step_ms : 0;
  r.weight_bytes = weight_bytes;
  // kv_bytes_exact covers one step for synthetic rows and `steps` steps for model rows:
  // per-step values are normalised by the caller through decode_steps (see below).
  r.floor_ms = gbps > 0 ? (weight_bytes + static_cast<double>(r.kv_bytes_exact)) / (gbps * 1e6) : 0;
}

macattn::engine::CudaSessionOptions cuda_options(const BenchE2EOptions& o, AttentionMode mode, std::int32_t L,
                                                 std::int64_t capacity, std::int32_t batch) {
  macattn::engine::CudaSessionOptions co;
  co.session = session_options(o.engine, mode, L, capacity, false);
  co.session.kv_dtype = macattn::DType::bf16;
  co.session.kv_page_size = 16;
  co.batch = batch;
  co.max_prefill_chunk = std::max<std::int32_t>(o.engine.chunk, 1);
  return co;
}

}  // namespace

void run_bench_e2e_cuda(const BenchE2EOptions& o) {
  const std::string device = macattn::engine::cuda_engine_device();
  std::printf("macattn bench-e2e --device cuda: %s\n", device.c_str());
#if defined(MACATTN_ENGINE_WITH_CUDA)
  const double gbps = measure_stream_read_gbps();
#else
  const double gbps = 0;
#endif
  std::printf("streaming-read bandwidth: %.0f GB/s (the byte floor's denominator)\n", gbps);
  std::fflush(stdout);
  std::vector<CudaRow> rows;
  std::string summary;
  const bool synthetic = !o.shape.empty();
  if (synthetic) {
    std::int64_t max_ctx = 0;
    for (const auto c : o.contexts) max_ctx = std::max(max_ctx, c);
    const auto config = llama3_8b_config(std::max<std::int64_t>(max_ctx + 16, 131072));
    summary = std::string("llama3-8b shape, random bf16 weights and K/V (SYNTHETIC: timing only, hit rates forced; ") +
              (o.far_miss_rows ? "far" : "near") + " miss rows)";
    o.engine.mac_layers.resolve(config.num_layers);
    for (const std::int32_t B : o.batches)
      for (const std::int64_t ctx : o.contexts) {
        const std::vector<std::int32_t> tokens(static_cast<std::size_t>(B), 1);
        for (const AttentionMode mode : {AttentionMode::exact, AttentionMode::mac}) {
          if ((mode == AttentionMode::exact && !o.run_exact) || (mode == AttentionMode::mac && !o.run_mac)) continue;
          CudaSession s = CudaSession::synthetic(config, cuda_options(o, mode, config.num_layers, ctx + 16, B), o.seed);
          const std::vector<double> rates = mode == AttentionMode::exact ? std::vector<double>{-1} : o.hit_rates;
          for (const double rate : rates) {
            macattn::engine::cuda_bench_fill_random_kv(s, ctx, o.seed);
            if (mode == AttentionMode::mac) macattn::engine::cuda_bench_force_hits(s, tokens, rate, o.far_miss_rows);
            const auto t = macattn::engine::cuda_bench_time_replays(s, tokens, o.reps, 5);
            CudaRow r;
            r.kind = "synthetic";
            r.context = ctx;
            r.batch = B;
            r.mode = mode;
            r.hit_rate_target = rate;
            r.step_ms = t.step_ms;
            r.restore_ms = t.restore_ms;
            fill_stats(s, r);
            finish_row(r, static_cast<double>(s.decode_weight_bytes()), gbps);
            rows.push_back(r);
            std::fprintf(stderr, "B=%d ctx=%lld %s%s: %.3f ms/step\n", B, static_cast<long long>(ctx),
                         attention_mode_name(mode), rate >= 0 ? (" hit " + std::to_string(rate)).c_str() : "",
                         t.step_ms);
          }
        }
      }
  } else {
    const fs::path dir = model_directory(o.engine);
    const auto model = macattn::engine::Model::load(dir);
    o.engine.mac_layers.resolve(model.config().num_layers);
    summary = model.summary();
    const fs::path file = find_repo_path(o.prompt_file.empty() ? "prompts/passkey_12k.txt" : o.prompt_file);
    std::ifstream f(file, std::ios::binary);
    if (!f) throw std::runtime_error("cannot read the prompt file '" + file.string() + "'");
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const fs::path tcfg = dir / "tokenizer_config.json";
    const auto tok =
        macattn::engine::Tokenizer::load(dir / "tokenizer.json", fs::is_regular_file(tcfg) ? tcfg : fs::path());
    const std::vector<std::int32_t> body = tok.encode(text, false);
    if (body.empty()) throw std::runtime_error("the prompt text has no tokens");
    for (const std::int32_t B : o.batches)
      for (const std::int64_t ctx : o.contexts) {
        std::vector<std::int32_t> prompt;
        if (tok.bos_id()) prompt.push_back(*tok.bos_id());
        while (static_cast<std::int64_t>(prompt.size()) < ctx) prompt.push_back(body[prompt.size() % body.size()]);
        prompt.resize(static_cast<std::size_t>(ctx));
        for (const AttentionMode mode : {AttentionMode::exact, AttentionMode::mac}) {
          if ((mode == AttentionMode::exact && !o.run_exact) || (mode == AttentionMode::mac && !o.run_mac)) continue;
          CudaSession s(model, cuda_options(o, mode, model.config().num_layers, ctx + o.warmup + o.steps + 1, B));
          std::vector<std::int32_t> first(static_cast<std::size_t>(B));
          for (std::int32_t b = 0; b < B; ++b) {
            const auto logits = s.prefill(b, prompt, o.engine.chunk);
            first[b] = static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
          }
          CudaRow r;
          r.kind = "model";
          r.context = ctx;
          r.batch = B;
          r.mode = mode;
          r.step_ms = macattn::engine::cuda_bench_time_decode(s, first, o.warmup, o.steps);
          fill_stats(s, r);
          // Per step: the stats cover `steps` steps.
          r.kv_bytes_exact /= o.steps;
          r.kv_bytes_read /= o.steps;
          finish_row(r, static_cast<double>(s.decode_weight_bytes()), gbps);
          rows.push_back(r);
          std::fprintf(stderr, "B=%d ctx=%lld %s: %.3f ms/step\n", B, static_cast<long long>(ctx),
                       attention_mode_name(mode), r.step_ms);
        }
      }
  }

  std::printf("model: %s\nbuild %s, commit %s; %s\n\n", summary.c_str(), MACATTN_BUILD_TYPE, MACATTN_GIT_COMMIT,
              device.c_str());
  std::printf("%-9s %8s %5s %-6s %7s %9s %10s %11s %9s %9s %10s\n", "kind", "context", "batch", "mode", "target",
              "hit rate", "ms/step", "tokens/s", "KV/exact", "floor ms", "vs exact");
  for (const CudaRow& r : rows) {
    double exact_tps = 0;
    for (const CudaRow& e : rows)
      if (e.mode == AttentionMode::exact && e.context == r.context && e.batch == r.batch)
        exact_tps = e.tokens_per_second;
    char target[16] = "-";
    if (r.hit_rate_target >= 0) std::snprintf(target, sizeof target, "%.2f", r.hit_rate_target);
    std::printf(
        "%-9s %8lld %5d %-6s %7s %9.3f %10.3f %11.1f %9.3f %9.3f %9.2fx\n", r.kind.c_str(),
        static_cast<long long>(r.context), r.batch, attention_mode_name(r.mode), target, r.total.hit_rate(), r.step_ms,
        r.tokens_per_second, r.kv_bytes_exact ? static_cast<double>(r.kv_bytes_read) / r.kv_bytes_exact : 0.0,
        r.mode == AttentionMode::exact ? r.floor_ms : 0.0, exact_tps > 0 ? r.tokens_per_second / exact_tps : 0.0);
  }
  std::printf(
      "\nexact rows: floor ms = (weight bytes + exact K/V bytes) / %.0f GB/s; ms/step / floor ms is the "
      "target's 1.3x check.\n",
      gbps);
  if (synthetic)
    std::printf("SYNTHETIC rows: random weights and K/V; MAC hits forced through the rings (timing only).\n");

  if (!o.json_path.empty()) {
    nlohmann::json j;
    j["device"] = device;
    j["model"] = summary;
    j["commit"] = MACATTN_GIT_COMMIT;
    j["stream_read_gbps"] = gbps;
    j["synthetic"] = synthetic;
    if (synthetic) j["miss_rows"] = o.far_miss_rows ? "far" : "near";
    j["mac"] = o.engine.mac.to_string();
    for (const CudaRow& r : rows) {
      nlohmann::json x;
      x["kind"] = r.kind;
      x["context"] = r.context;
      x["batch"] = r.batch;
      x["mode"] = attention_mode_name(r.mode);
      if (r.hit_rate_target >= 0) x["hit_rate_target"] = r.hit_rate_target;
      x["head_hit_rate"] = r.total.hit_rate();
      x["step_ms"] = r.step_ms;
      x["restore_ms_subtracted"] = r.restore_ms;
      x["tokens_per_second"] = r.tokens_per_second;
      x["kv_bytes_read_per_step"] = r.kv_bytes_read;
      x["kv_bytes_exact_per_step"] = r.kv_bytes_exact;
      x["weight_bytes_per_step"] = r.weight_bytes;
      x["byte_floor_ms"] = r.floor_ms;
      x["step_over_floor"] = r.floor_ms > 0 ? r.step_ms / r.floor_ms : 0.0;
      j["rows"].push_back(x);
    }
    std::ofstream(o.json_path) << j.dump(2) << "\n";
    std::printf("\nresults written to %s\n", o.json_path.c_str());
  }
}

}  // namespace macattn_tool
