// tools/macattn/generate_options.cpp: the flags of `macattn generate`.
#include <iostream>
#include <sstream>

#include "generate.hpp"

namespace macattn_tool {

namespace {

template <typename T>
std::string str(T v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

FlagSet generate_flags(GenerateOptions& o) {
  FlagSet f;
  add_engine_flags(f, o.engine);
  f.add("--prompt", "TEXT", "-p: the prompt text", "", [&o](const std::string& v) {
    o.prompt = v;
    o.prompt_given = true;
  });
  f.add("--file", "FILE", "-f: read the prompt from FILE (e.g. prompts/passkey_12k.txt)", "",
        [&o](const std::string& v) {
          if (v.empty()) throw UsageError("--file '': needs a file name");
          o.prompt_file = v;
        });
  f.add("--n-predict", "N", "-n: tokens to generate at most", str(o.n_predict),
        [&o](const std::string& v) { o.n_predict = parse_int("--n-predict", v, 1, std::int64_t{1} << 30); });
  f.add(
      "--temp", "X", "sampling temperature; 0 = greedy (argmax)", str(o.sampling.temperature),
      [&o](const std::string& v) { o.sampling.temperature = static_cast<float>(parse_real("--temp", v, 0.0, 100.0)); });
  f.add("--top-k", "N", "sample among the N most likely tokens; 0 = all", str(o.sampling.top_k),
        [&o](const std::string& v) {
          o.sampling.top_k = static_cast<std::int32_t>(parse_int("--top-k", v, 0, 1 << 30));
        });
  f.add("--top-p", "X", "sample from the smallest set of tokens whose probability reaches X, in (0, 1]",
        str(o.sampling.top_p), [&o](const std::string& v) {
          o.sampling.top_p = static_cast<float>(parse_real("--top-p", v, 0.0, 1.0));
          if (o.sampling.top_p <= 0.0f) throw UsageError("--top-p '" + v + "': must be in (0, 1]");
        });
  f.add("--seed", "N", "-s: random seed of the sampler (each run starts from it)", str(o.sampling.seed),
        [&o](const std::string& v) {
          o.sampling.seed = static_cast<std::uint64_t>(parse_int("--seed", v, 0, INT64_MAX));
        });
  f.add(
      "--attention", "MODE", "exact | mac | both (exact and MAC side by side, then a comparison)", "mac",
      [&o](const std::string& v) {
        const std::string c = parse_choice("--attention", v, {"exact", "mac", "both"});
        o.attention = c == "exact" ? AttentionChoice::exact : c == "mac" ? AttentionChoice::mac : AttentionChoice::both;
      });
  f.add("--audit", "[on|off]",
        "MAC runs also compute exact attention every step: per-layer relative L2, greedy-token changes", "off",
        [&o](const std::string& v) {
          o.audit = parse_choice("--audit", v, {"on", "off"}) == "on";
        });
  f.add("--ignore-eos", "[on|off]", "keep generating past the end-of-text token", "off", [&o](const std::string& v) {
    o.ignore_eos = parse_choice("--ignore-eos", v, {"on", "off"}) == "on";
  });
  f.add("--json", "FILE", "also write the runs (tokens, text, speeds, per-layer stats) as JSON to FILE", "",
        [&o](const std::string& v) {
          if (v.empty()) throw UsageError("--json '': needs a file name");
          o.json_path = v;
        });
  return f;
}

}  // namespace

std::string generate_help() {
  GenerateOptions defaults;
  std::ostringstream s;
  s << "usage: macattn generate [-m DIR] (-p TEXT | -f FILE) [-n N] [flags]\n"
       "\n"
       "Generates text with a Hugging Face Llama-family model on the CPU, decoding with exact\n"
       "attention, MAC-Attention, or both side by side from the same prompt (--attention both:\n"
       "the same prompt and seed through each, then whether the tokens agree and how fast each was).\n"
       "Prints the generated text as it is produced, then prefill and decode tokens/s, the per-layer\n"
       "head hit rate of MAC and the K/V bytes read against exact attention. A progress line for\n"
       "long prefills goes to stderr.\n"
       "\n"
       "  macattn generate -f prompts/passkey_12k.txt -n 8 --attention both\n"
       "\n"
       "Short flags as in llama.cpp: -m -p -f -n -c -t -s.\n"
       "\n"
       "flags:\n"
    << generate_flags(defaults).help_text();
  return s.str();
}

bool parse_generate_options(const std::vector<std::string>& args, GenerateOptions& o) {
  FlagSet flags = generate_flags(o);
  flags.parse(expand_short_flags(args, {"--audit", "--ignore-eos"}));
  if (flags.help_requested()) {
    std::cout << generate_help();
    return false;
  }
  if (o.prompt_given && !o.prompt_file.empty()) throw UsageError("give the prompt with -p or -f, not both");
  if (!o.prompt_given && o.prompt_file.empty()) throw UsageError("no prompt: give -p TEXT or -f FILE");
  if (o.audit && o.attention == AttentionChoice::exact) {
    throw UsageError("--audit on compares MAC with exact attention: it needs --attention mac or both");
  }
  check_engine_options(o.engine);
  try {
    o.sampling.validate();
  } catch (const macattn::Error& e) {
    throw UsageError(e.what());
  }
  return true;
}

}  // namespace macattn_tool
