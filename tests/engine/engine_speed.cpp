// engine_speed: a small timing driver for the engine (not a test, not the CLI's bench):
// prefill a context of N tokens, then decode S greedy steps, with exact and with MAC
// attention, and print tokens/s, hit rate and K/V tokens read vs exact.
//
//   engine_speed <model_dir> [context=8192] [decode_steps=64] [text_file|-] [threads=0] [exact|mac|both]
//
// The context is `text_file` tokenized and repeated (real text gives MAC real hits), or
// pseudo-random token ids when no text file is given or the tokenizer is not built.
// On a machine whose cores are shared with other jobs, run with OMP_WAIT_POLICY=passive:
// OpenMP workers that spin between parallel regions otherwise take the cores the calling
// thread needs, and a decode step can be several times slower.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "engine/io/mapped_file.hpp"
#include "engine/model.hpp"
#include "engine/session.hpp"
#if __has_include("engine/tokenizer/tokenizer.hpp") && defined(MACATTN_ENGINE_SPEED_TOKENIZER)
#include "engine/tokenizer/tokenizer.hpp"
#endif

using namespace macattn::engine;

static std::vector<std::int32_t> context_tokens(const Model& model, std::int64_t n, const char* text_file) {
  std::vector<std::int32_t> base;
#if defined(MACATTN_ENGINE_SPEED_TOKENIZER)
  if (text_file != nullptr) {
    const Tokenizer tok =
        Tokenizer::load(model.directory() / "tokenizer.json", model.directory() / "tokenizer_config.json");
    base = tok.encode(read_text_file(text_file, 1u << 30), false);
  }
#else
  (void)text_file;
#endif
  if (base.empty()) {
    std::uint32_t x = 12345;
    base.resize(4096);
    for (auto& t : base)
      t = static_cast<std::int32_t>((x = x * 1664525u + 1013904223u) >> 8) % model.config().vocab_size;
  }
  std::vector<std::int32_t> out(n);
  for (std::int64_t i = 0; i < n; ++i) out[i] = base[i % base.size()];
  return out;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <model_dir> [context=8192] [decode_steps=64] [text_file|-] [threads=0] [exact|mac|both]\n",
                 argv[0]);
    return 2;
  }
  try {
    const std::int64_t ctx = argc > 2 ? std::atoll(argv[2]) : 8192;
    const int steps = argc > 3 ? std::atoi(argv[3]) : 64;
    const char* text = argc > 4 && argv[4][0] != '\0' && std::string(argv[4]) != "-" ? argv[4] : nullptr;
    const int threads = argc > 5 ? std::atoi(argv[5]) : 0;
    const std::string which = argc > 6 ? argv[6] : "both";
    const Model model = Model::load(argv[1]);
    std::printf("%s\n", model.summary().c_str());
    const auto tokens = context_tokens(model, ctx, text);
    for (AttentionMode mode : {AttentionMode::exact, AttentionMode::mac}) {
      if (which != "both" && which != attention_mode_name(mode)) continue;
      SessionOptions o;
      o.max_context = ctx + steps + 1;
      o.threads = threads;
      o.attention.mode = mode;
      Session s(model, o);
      auto logits = s.prefill(tokens, 512);
      for (int i = 0; i < steps; ++i) {
        std::int32_t best = 0;
        for (std::size_t v = 1; v < logits.size(); ++v)
          if (logits[v] > logits[best]) best = static_cast<std::int32_t>(v);
        logits = s.decode(best);
      }
      const Timings& t = s.timings();
      const auto st = s.total_attention_stats();
      std::printf(
          "%-5s context %lld: prefill %.0f tok/s (%.2f s), decode %.1f tok/s (%.2f ms/token), head hit rate %.3f, "
          "kv tokens read / exact %.3f\n",
          attention_mode_name(mode), static_cast<long long>(ctx), t.prefill_tokens_per_second(), t.prefill_seconds,
          t.decode_tokens_per_second(), 1e3 * t.decode_seconds / t.decode_tokens, st.hit_rate(),
          st.kv_tokens_exact ? static_cast<double>(st.kv_tokens_read) / st.kv_tokens_exact : 0.0);
      if (mode == AttentionMode::mac) {
        for (std::size_t l = 0; l < s.layer_stats().size(); ++l)
          std::printf("  layer %zu: hit rate %.3f\n", l, s.layer_stats()[l].head_hit_rate());
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
