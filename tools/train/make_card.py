#!/usr/bin/env python3
"""Write models/macattn-ref/MODEL_CARD.md and loss.png from the recorded run.

Inputs (all committed beside the weights or in the repository):
  models/macattn-ref/{config.json, train_args.json, train_log.jsonl, eval.json}
  models/corpus_manifest
  tests/python/fixtures/ref_greedy.json

  python3 tools/train/make_card.py --model models/macattn-ref
"""
import argparse
import json
import os

import numpy as np

SWITCH_NOTE = "context length switched from 4K to 16K"


def load(path):
    return json.load(open(path))


def plot(log, args, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tok = np.array([r["tokens"] for r in log]) / 1e6
    txt = np.array([r["text_loss"] for r in log])
    ans = np.array([r["ans_loss"] for r in log])
    acc = np.array([r["ans_acc"] for r in log])
    k = 9

    def smooth(v):
        if len(v) < k:
            return v
        pad = np.concatenate([np.full(k // 2, v[0]), v, np.full(k // 2, v[-1])])
        return np.convolve(pad, np.ones(k) / k, mode="valid")
    switch = next((r["tokens"] / 1e6 for r, p in zip(log[1:], log) if r["seq_len"] != p["seq_len"]), None)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    a1.plot(tok, txt, color="tab:blue", alpha=0.3, lw=0.8, label="per 10 steps")
    a1.plot(tok, smooth(txt), color="tab:blue", lw=1.6, label=f"moving average ({k} points)")
    a1.set_ylim(min(txt) - 0.2, min(8.5, max(txt[5:]) + 0.3) if len(txt) > 5 else None)
    a1.set_xlabel("training tokens (millions)")
    a1.set_ylabel("next-token cross-entropy (nats)")
    a1.set_title("Language-model loss on real-text sequences")
    a2.plot(tok, smooth(ans), color="tab:red", lw=1.4, label="answer-digit loss")
    a2.set_ylabel("answer-digit cross-entropy (nats)", color="tab:red")
    a2.set_xlabel("training tokens (millions)")
    a2.set_title("Synthetic retrieval (passkey + key-value)")
    a3 = a2.twinx()
    a3.plot(tok, smooth(acc), color="tab:green", lw=1.4, label="answer-token accuracy")
    a3.set_ylabel("answer-token accuracy", color="tab:green")
    a3.set_ylim(0, 1.02)
    for ax in (a1, a2):
        if switch:
            ax.axvline(switch, color="gray", ls="--", lw=1)
            ax.text(switch, ax.get_ylim()[1], " 4K -> 16K", va="top", fontsize=8, color="gray")
        ax.grid(alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle(f"macattn-ref training (seed {args['seed']}, {args['steps']} steps, "
                 f"{log[-1]['tokens'] / 1e6:.0f}M tokens)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return switch


def table(rows, header):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/macattn-ref")
    ap.add_argument("--manifest", default="models/corpus_manifest")
    ap.add_argument("--fixture", default="tests/python/fixtures/ref_greedy.json")
    a = ap.parse_args()
    m = a.model
    cfg = load(os.path.join(m, "config.json"))
    targs = load(os.path.join(m, "train_args.json"))
    log = [json.loads(l) for l in open(os.path.join(m, "train_log.jsonl"))]
    ev = load(os.path.join(m, "eval.json"))
    man = load(a.manifest)
    fx = load(a.fixture)
    switch = plot(log, targs, os.path.join(m, "loss.png"))
    size = os.path.getsize(os.path.join(m, "model.safetensors"))
    n = targs["n_params"]
    emb = cfg["vocab_size"] * cfg["hidden_size"]
    toks = man["tokens"]
    rope = cfg.get("rope_parameters", {}).get("rope_theta", cfg.get("rope_theta"))
    last = log[-1]
    avg = lambda key, k=10: float(np.mean([r[key] for r in log[-k:]]))
    text_passes = last["tokens"] * (1 - targs["syn_frac"] * targs["grass_frac"]) / toks["train_tokens"]
    parts, lo = [], 0.0
    for part in targs["seq_schedule"].split(","):
        L, hi = part.split(":")
        a0, a1 = int(round(lo * targs["steps"])), int(round(float(hi) * targs["steps"])) - 1
        parts.append(f"{int(L):,}-token sequences for steps {a0 + 1}-{a1 + 1}")
        lo = float(hi)
    sched = "Context: " + ", then ".join(parts) + " (batch size adjusted to keep the tokens per step)"

    arch = table([
        ["class", "`LlamaForCausalLM` (Hugging Face transformers; RoPE, RMSNorm, SwiGLU MLP)"],
        ["layers", cfg["num_hidden_layers"]],
        ["hidden size", cfg["hidden_size"]],
        ["MLP intermediate size", f"{cfg['intermediate_size']} (SiLU-gated)"],
        ["query heads / KV heads", f"{cfg['num_attention_heads']} / {cfg['num_key_value_heads']} "
                                   f"(GQA, {cfg['num_attention_heads'] // cfg['num_key_value_heads']} query heads per KV head)"],
        ["head dim", f"{cfg['head_dim']} (attention width {cfg['num_attention_heads'] * cfg['head_dim']} "
                     f"> hidden {cfg['hidden_size']}: q_proj is {cfg['hidden_size']}x{cfg['num_attention_heads'] * cfg['head_dim']})"],
        ["RoPE", f"default (non-scaled), theta = {rope:g}, rotate-half layout as in HF Llama"],
        ["RMSNorm eps", cfg["rms_norm_eps"]],
        ["vocabulary", cfg["vocab_size"]],
        ["embeddings", "tied: `lm_head.weight` = `model.embed_tokens.weight` (stored once)"],
        ["context trained", f"{cfg['max_position_embeddings']} tokens (max_position_embeddings)"],
        ["parameters", f"{n:,} ({n - emb:,} outside the embedding)"],
        ["weights", f"`model.safetensors`, bf16, {size:,} bytes"],
        ["special tokens", "`<|begin_of_text|>` = 0 (BOS, prepended by the tokenizer), "
                           "`<|end_of_text|>` = 1 (EOS, ends every training document), `<|pad|>` = 2"],
    ], ["", ""])

    src_rows = []
    tps = toks.get("tokens_per_source", {})
    for s in man["sources"]:
        src_rows.append([s["name"], f"`{s['package']}` {s['version']}", s["kind"], s["licence"],
                         s["train_files"], f"{s['train_bytes'] / 1e6:.1f}", f"{tps.get(s['name'], 0) / 1e6:.2f}",
                         s["heldout_docs"]])
    src = table(src_rows, ["source", "Debian package", "kind", "licence", "train files", "train MB",
                           "train Mtokens", "held-out docs"])

    ppl = ev["perplexity"]
    Ls = sorted(ppl, key=int)
    ppl_tab = table([[f"{int(L) // 1024}K", f"{ppl[L]['window_ppl']:.2f}", f"{ppl[L]['window_tokens']:,}",
                      f"{ppl[L]['fixed_target_ppl']:.2f}"] for L in Ls],
                    ["context", "window ppl (first L tokens of each doc)", "tokens scored",
                     "fixed-target ppl (doc tokens 15360..16383)"])
    srcs = sorted(ppl[Ls[0]]["by_source"])
    ppl_src = table([[s] + [f"{ppl[L]['by_source'][s]:.2f}" for L in Ls] for s in srcs],
                    ["held-out source"] + [f"window ppl {int(L) // 1024}K" for L in Ls])

    def pk_table(t):
        lens = sorted(t, key=int)
        depths = [k for k in t[lens[0]] if k != "mean"]
        pct = lambda v: f"{v * 100:.0f}" if abs(v * 100 - round(v * 100)) < 1e-6 else f"{v * 100:.1f}"
        rows = [[f"{int(L) // 1024}K" if int(L) >= 1024 else L] + [pct(t[L][d]) for d in depths]
                + [f"**{t[L]['mean'] * 100:.1f}**"] for L in lens]
        return table(rows, ["context \\ depth"] + [f"{float(d) * 100:.0f}%" for d in depths] + ["mean"])
    eargs = ev["args"]
    ver = ev.get("versions", {})
    kv = ev["kv16"]
    kv_tab = table([[f"{int(L) // 1024}K", f"{kv[L]['accuracy'] * 100:.1f}", kv[L]["answers"]]
                    for L in sorted(kv, key=int)], ["context", "accuracy %", "answers"])

    train_cmd = ("python3 tools/train/train.py --data .data/tok --out .data/run --steps {steps} "
                 "--seq-schedule {seq_schedule} --seed {seed} --time-limit {tl:g} --log-every {log_every} "
                 "--ckpt-every {ckpt_every}").format(tl=targs["time_limit"], **targs)
    eval_cmd = (f"python3 tools/train/eval.py --model .data/run/hf --data .data/tok --out eval.json "
                f"--pk-n {eargs['pk_n']} --kv-n {eargs['kv_n']}")
    hp = (f"AdamW (beta1 0.9, beta2 {targs['beta2']}, eps 1e-8, weight decay {targs['wd']} on matrices), "
          f"peak lr {targs['lr']:g}, {targs['warmup']} warm-up steps, cosine decay to "
          f"{targs['min_lr_frac'] * targs['lr']:g}, gradient clip {targs['clip']}, "
          f"{targs['batch_tokens']:,} tokens per step, init std {targs['init_std']}, bf16 autocast with fp32 "
          f"master weights, PyTorch SDPA (flash) attention, seed {targs['seed']}")

    card = f"""# macattn-ref: the project's small long-context reference model

A 7.7M-parameter Llama-architecture language model trained from scratch, for this
project only: it gives the MAC-Attention engine, its tests and its quality evaluation a real
trained transformer (queries and keys that behave like a language model's, retrieval that
depends on attention reaching far back) at a size that travels with the repository. It is
not a useful assistant or a general-purpose model.

Files: `config.json`, `model.safetensors` (bf16), `tokenizer.json`, `tokenizer_config.json`,
`generation_config.json` (Hugging Face format, loads with `AutoModelForCausalLM` /
`AutoTokenizer`), `train_args.json` (every hyperparameter of the run), `train_log.jsonl`
(the logged losses), `eval.json` (every number below), `loss.png`.

## Architecture

{arch}

## Tokenizer

Byte-level BPE, {cfg['vocab_size']} tokens, trained with Hugging Face `tokenizers` on a seeded
40 MB sample of the training split (`tools/train/train_tokenizer.py`). Pre-tokenisation is
Llama 3's: its split regex (letters, numbers in groups of at most 3 digits, punctuation,
whitespace) followed by the byte-level mapping without a prefix space; ByteLevel decoder, so
`decode(encode(text))` returns `text` exactly. The post-processor prepends `<|begin_of_text|>`.
On the training split it averages {toks['bytes_per_token']:.2f} bytes per token.

## Data

Text and code shipped by Debian 12 (bookworm, main) packages, fetched with `apt-get download`
and unpacked with `dpkg-deb -x` by `tools/train/build_corpus.py` (no other source). Files are
cleaned (UTF-8 only, line endings normalised, runs of blank lines capped, files with very long
lines or under 400 bytes dropped) and deduplicated exactly (hash of whitespace-normalised
text, across all packages). The licence of every package is taken from its
`/usr/share/doc/<package>/copyright`; `models/corpus_manifest` records the package versions,
.deb SHA-256 sums, file counts, licences, and the SHA-256 of the built corpus.

{src}

Training split: {toks['train_docs']:,} documents, {toks['train_bytes'] / 1e6:.1f} MB,
{toks['train_tokens']:,} tokens. Held-out split: {man['heldout_fraction'] * 100:.0f}% of the files of each
package (chosen by a hash of their path) never enter training; the held-out files of one package
are concatenated in path order into documents of at least 100 KB, and the
{toks['heldout_docs']} documents of at least 16,385 tokens ({toks['heldout_tokens']:,} tokens) form the
evaluation set.

**Synthetic retrieval.** {targs['syn_frac'] * 100:.0f}% of the sequences of every batch are synthetic
(`tools/train/synth.py`): half are passkeys ("The pass key is 48213. Remember it. 48213 is the
pass key." at a uniformly random depth, then "What is the pass key? The pass key is 48213."),
half are key-value lookups (1-32 lines "The value of key 4821 is 77310." scattered at random
positions, then 1-8 questions "What is the value of key 4821? It is 77310."). The filler is a
random window of the training text ({(1 - targs['grass_frac']) * 100:.0f}%) or the repetitive
"The grass is green..." filler ({targs['grass_frac'] * 100:.0f}%). The loss is the mean next-token
cross-entropy over all tokens plus {targs['ans_weight']:g} x the mean cross-entropy of the answer digits.

## Training

One run on one NVIDIA H200 (bf16), {last['time']:.0f} s of training:
{targs['steps']} steps, {last['tokens']:,} tokens seen ({last['tokens'] / toks['train_tokens']:.1f} times the
training split; about {text_passes:.1f} passes over its text, since the grass-filler sequences hold none of it).
{sched}. {hp}.

Final training losses (mean of the last 10 log points): text {avg('text_loss'):.3f} nats,
retrieval answers {avg('ans_loss'):.3f} nats, answer-token accuracy {avg('ans_acc') * 100:.1f}%.

![loss curve](loss.png)

Left: next-token loss on the real-text sequences of each batch; right: loss and accuracy on
the answer digits of the synthetic sequences. The dashed line marks where the context grew
from 4K to 16K tokens ({switch:.0f}M tokens). The text loss rises for a while around 200M tokens,
as the retrieval circuit forms (answer-token accuracy jumps from about 5% to 80%), and again
right after the switch to 16K, where retrieval accuracy first drops; both recover.

## Held-out perplexity

On the {ev['heldout_docs']} held-out documents (bf16 on the GPU, `tools/train/eval.py`).
*Window ppl* scores all predictions in the first L tokens of each document, so its text differs
per L. *Fixed-target ppl* scores the same 1024 tokens (positions 15360..16383 of each document)
with the preceding L tokens as context, so it isolates what longer context buys.

{ppl_tab}

By source (window ppl):

{ppl_src}

## Passkey retrieval

Exact match of the 5-digit key (greedy decoding, measured as the argmax of every key token
under teacher forcing, which is equivalent), {eargs['pk_n']} random keys per cell, depth = where
the needle sits in the filler (0% = right after the instruction, 100% = just before the question).
Accuracy in %.

Filler = held-out text (never trained on):

{pk_table(ev['passkey_text'])}

Filler = the classic repetitive "The grass is green. The sky is blue..." text:

{pk_table(ev['passkey_grass'])}

Key-value lookup, 16 keys at uniformly random positions in held-out text, 4 questions per
sequence, {eargs['kv_n']} sequences per length (accuracy per answer):

{kv_tab}

The passkey format is part of the training mix (with training-split filler and other keys), so
these tables measure retrieval from every depth and length up to 16K, not generalisation to an
unseen task format.

## Fixed prompt, greedy continuation

transformers on the CPU, float32 (bf16 weights upcast), `do_sample=False`, {fx['new_tokens']} new tokens
(`tools/train/make_fixture.py`; recorded in `tests/python/fixtures/ref_greedy.json` with the
top-10 logits at the prompt's last position; smallest top-1/top-2 logit margin over the 32 steps:
{fx['min_greedy_margin']}).

Prompt ({len(fx['prompt_ids'])} tokens with BOS):

```
{fx['prompt']}```

Continuation:

```
{fx['greedy_text']}
```

Prompt ids: `{json.dumps(fx['prompt_ids'])}`

Greedy ids: `{json.dumps(fx['greedy_ids'])}`

A 7.7M-parameter model falls into repetition quickly under greedy decoding; that is expected.

## Reproduce

From the repository root. Corpus, tokenizer and tokens (CPU, a few minutes; needs `apt-get`,
`dpkg-deb`, and `pip install tokenizers numpy`):

```
python3 tools/train/build_corpus.py build --out .data/corpus
python3 tools/train/train_tokenizer.py --corpus .data/corpus/train.jsonl --out models/macattn-ref --vocab-size 4096
python3 tools/train/build_corpus.py tokenize --corpus .data/corpus --tokenizer models/macattn-ref/tokenizer.json --out .data/tok
```

Training and evaluation (one H200, torch {ver.get('torch', '2.11.0+cu130')}, transformers {ver.get('transformers', '5.17.0')}, `.data/tok`
carried to the GPU machine; one call of about 8 minutes):

```
{train_cmd}
{eval_cmd}
```

`train.py` writes `.data/run/ckpt.pt` every {targs['ckpt_every']} steps (weights, AdamW state, step, log)
and resumes exactly with `--resume .data/run/ckpt.pt` (batches are a pure function of seed and
step); `--init-from DIR` restarts from exported weights with a fresh optimiser. The exported
`.data/run/hf/{{config.json, generation_config.json, model.safetensors, train_args.json}}`,
`.data/run/log.jsonl` (as `train_log.jsonl`) and `eval.json` are the files committed here.
Then, on any machine with torch and transformers:

```
python3 tools/train/make_fixture.py --model models/macattn-ref --out tests/python/fixtures/ref_greedy.json
python3 tools/train/make_card.py --model models/macattn-ref
python3 -m pytest tests/python/test_reference_model.py
```

GPU kernels are not bitwise deterministic, so a rerun reproduces the curve and the tables
closely, not bit for bit.

## Limitations

Tiny and trained for minutes: it knows the style of technical documentation and code from
its corpus, not facts, and repeats itself under greedy decoding. English and code only.
Retrieval is strong because it was trained for it on exactly these formats.
Use it to test and measure attention implementations, not as a language model.
"""
    open(os.path.join(m, "MODEL_CARD.md"), "w").write(card)
    print("wrote", os.path.join(m, "MODEL_CARD.md"), "and loss.png")


if __name__ == "__main__":
    main()
