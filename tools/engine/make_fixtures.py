#!/usr/bin/env python3
"""Regenerate tests/engine/fixtures/: tiny random Hugging Face checkpoints of every
architecture the engine supports, in the real on-disk format, with transformers' outputs.

Each fixture directory holds what `save_pretrained` writes (config.json,
generation_config.json, model.safetensors or shards + model.safetensors.index.json) and
reference.safetensors with
  prompt_ids  I32 [P]      a random prompt (BOS first)
  logits      F32 [P, V]   transformers' logits at every prompt position (float32 compute)
  greedy_ids  I32 [N]      the greedy continuation (argmax, full recompute per step)
  margins     F32 [N]      top-1 minus top-2 logit at each greedy step (distance from a tie)
All computed in float32 on the CPU after loading the saved checkpoint back (bf16/f16
weights upcast), so the reference sees exactly the bytes the engine reads.

  pip install torch transformers safetensors
  python3 tools/engine/make_fixtures.py --out tests/engine/fixtures
"""
import argparse
import json
import os
import shutil

HIDDEN, LAYERS, HEADS, KV_HEADS, INTER, VOCAB = 64, 2, 4, 2, 128, 320
PROMPT_LEN, NEW_TOKENS = 40, 16

# name -> (model class name, config overrides, weight dtype, max shard size or None)
VARIANTS = {
    # Llama 2 style: fp32, untied, plain RoPE.
    "llama_f32": ("llama", dict(), "float32", None),
    # Llama 3.1/3.2 style: llama3 rope scaling (all three wavelength regimes hit with this
    # small original context), bf16, sharded with an index.
    "llama3_bf16_sharded": ("llama", dict(rope_theta=500000.0, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=64)), "bfloat16", "60KB"),
    # Tied embeddings, head_dim != hidden / heads, attention_bias, f16 weights.
    "llama_tied_hd32_bias_f16": ("llama", dict(tie_word_embeddings=True, head_dim=32, attention_bias=True),
                                 "float16", None),
    "mistral_bf16": ("mistral", dict(sliding_window=None, rope_theta=1000000.0), "bfloat16", None),
    # Qwen2/2.5: q/k/v bias.
    "qwen2_bf16": ("qwen2", dict(rope_theta=1000000.0), "bfloat16", None),
    # Qwen3: q/k RMSNorm per head, head_dim 32 != 64 / 4, tied.
    "qwen3_f32_tied": ("qwen3", dict(head_dim=32, tie_word_embeddings=True), "float32", None),
}


def build(kind, overrides, seed):
    import torch
    import transformers as tf
    cls = {"llama": (tf.LlamaConfig, tf.LlamaForCausalLM), "mistral": (tf.MistralConfig, tf.MistralForCausalLM),
           "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM), "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM)}[kind]
    cfg = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
               intermediate_size=INTER, vocab_size=VOCAB, max_position_embeddings=4096, rms_norm_eps=1e-5,
               bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.08, tie_word_embeddings=False,
               attn_implementation="eager")
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = cls[1](cls[0](**cfg)).eval()
    # Norm weights init to 1 and biases to 0: randomise them so a skipped norm weight or
    # bias shows in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def reference(path, seed):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(3, VOCAB, (PROMPT_LEN,), generator=g)
    prompt[0] = 1  # BOS
    with torch.no_grad():
        logits = model(prompt[None]).logits[0].float()
        ids = prompt.tolist()
        greedy, margins = [], []
        for _ in range(NEW_TOKENS):
            last = model(torch.tensor([ids])).logits[0, -1].float()
            top = last.topk(2).values
            nxt = int(last.argmax())
            greedy.append(nxt)
            margins.append(float(top[0] - top[1]))
            ids.append(nxt)
    return prompt.to(torch.int32), logits.contiguous(), torch.tensor(greedy, dtype=torch.int32), torch.tensor(margins)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/engine/fixtures")
    a = ap.parse_args()
    import torch
    import transformers
    from safetensors.torch import save_file
    manifest = {}
    for i, (name, (kind, overrides, dtype, shard)) in enumerate(VARIANTS.items()):
        d = os.path.join(a.out, name)
        shutil.rmtree(d, ignore_errors=True)
        model = build(kind, overrides, seed=100 + i)
        model = model.to(getattr(torch, dtype))
        kw = dict(max_shard_size=shard) if shard else dict(max_shard_size="100MB")
        model.save_pretrained(d, **kw)
        prompt, logits, greedy, margins = reference(d, seed=200 + i)
        save_file(dict(prompt_ids=prompt, logits=logits, greedy_ids=greedy, margins=margins.float()),
                  os.path.join(d, "reference.safetensors"))
        manifest[name] = dict(kind=kind, dtype=dtype, sharded=bool(shard), greedy=greedy.tolist(),
                              min_margin=round(float(margins.min()), 5), files=sorted(os.listdir(d)))
        print(name, manifest[name])
    manifest["_generated_with"] = dict(torch=torch.__version__, transformers=transformers.__version__,
                                       command="python3 tools/engine/make_fixtures.py --out " + a.out)
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
