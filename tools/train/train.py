#!/usr/bin/env python3
"""Train the macattn reference model: a small long-context LlamaForCausalLM.

Seeded and resumable.  Every batch is a pure function of (--seed, step), so a run
resumed from a checkpoint (--resume) continues exactly as if it had not stopped.
Hyperparameters are flags; they are stored in every checkpoint and in the
exported model directory (train_args.json).

Data: the token files written by `build_corpus.py tokenize` (--data).  Each step
draws --batch-tokens tokens as random windows of the training stream; a share
--syn-frac of the sequences are synthetic retrieval tasks (see synth.py) whose
filler is either a window of the same stream or the repetitive passkey filler.
Loss = mean next-token cross-entropy over all tokens + --ans-weight x mean
cross-entropy over the answer digits of the retrieval tasks.

Context length follows --seq-schedule, e.g. "4096:0.5,16384:1.0" = 4K tokens for
the first 50% of steps, then 16K; the batch keeps --batch-tokens tokens.

Outputs (under --out):
  ckpt.pt            full checkpoint (fp32 weights, AdamW state, step, log); --resume
  log.jsonl          one line per --log-every steps
  hf/                the model in Hugging Face format (bf16 safetensors), on finish
                     or when --time-limit stops the run

The shipped model (models/macattn-ref; 412 s on one H200):
  python3 tools/train/train.py --data .data/tok --out .data/run --steps 1900 \
      --seq-schedule 4096:0.5,16384:1.0 --seed 1234 --time-limit 450 --log-every 10 --ckpt-every 500
Resume after a stop:  add --resume .data/run/ckpt.pt to the same command.
"""
import argparse
import json
import lzma
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synth import Synth  # noqa: E402


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".data/tok")
    ap.add_argument("--tokenizer", default="models/macattn-ref/tokenizer.json")
    ap.add_argument("--out", default=".data/run")
    ap.add_argument("--seed", type=int, default=1234)
    # model
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=896)
    ap.add_argument("--rope-theta", type=float, default=500000.0)
    ap.add_argument("--max-pos", type=int, default=16384)
    ap.add_argument("--init-std", type=float, default=0.02)
    # optimisation
    ap.add_argument("--steps", type=int, default=1900)
    ap.add_argument("--batch-tokens", type=int, default=262144)
    ap.add_argument("--seq-schedule", default="4096:0.5,16384:1.0")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--syn-frac", type=float, default=0.25)
    ap.add_argument("--grass-frac", type=float, default=0.3, help="share of synthetic sequences with grass filler")
    ap.add_argument("--passkey-frac", type=float, default=0.5, help="share of synthetic sequences that are passkeys")
    ap.add_argument("--ans-weight", type=float, default=1.0)
    # run control
    ap.add_argument("--resume", default=None, help="checkpoint to resume (ckpt.pt)")
    ap.add_argument("--init-from", default=None, help="start from these weights (HF dir or .safetensors), fresh optimiser")
    ap.add_argument("--time-limit", type=float, default=0, help="seconds; save and stop when exceeded")
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--stop-at", type=int, default=0, help="stop (with checkpoint) after this step; for tests")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--device", default="cuda")
    return ap.parse_args()


def seq_len_at(schedule, step, steps):
    frac = step / max(1, steps)
    for part in schedule.split(","):
        L, upto = part.split(":")
        if frac < float(upto):
            return int(L)
    return int(schedule.split(",")[-1].split(":")[0])


def lr_at(a, step):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    p = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def load_tokens(path):
    with lzma.open(path) as f:
        return np.frombuffer(f.read(), dtype=np.uint16)


def make_config(a, tok):
    from transformers import LlamaConfig
    cfg = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=a.hidden, intermediate_size=a.ffn,
        num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
        head_dim=a.head_dim, hidden_act="silu", max_position_embeddings=a.max_pos,
        initializer_range=a.init_std, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_theta=a.rope_theta, attention_bias=False, mlp_bias=False,
        bos_token_id=tok.token_to_id("<|begin_of_text|>"), eos_token_id=tok.token_to_id("<|end_of_text|>"),
        pad_token_id=tok.token_to_id("<|pad|>"))
    # transformers 5 keeps rope_theta in rope_parameters; make sure it is what we asked for
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict):
        rp["rope_theta"] = a.rope_theta
    return cfg


def batch(a, step, L, train, synth):
    """Deterministic batch for `step`: (ids [B, L+1] int64, answer mask [B, L] bool, n_syn)."""
    rng = np.random.default_rng([a.seed, step])
    B = max(1, a.batch_tokens // L)
    n_syn = int(round(B * a.syn_frac))
    starts = rng.integers(0, len(train) - L - 2, size=B - n_syn)
    ids = np.empty((B, L + 1), dtype=np.int64)
    mask = np.zeros((B, L + 1), dtype=bool)
    if B - n_syn:
        ids[:B - n_syn] = train[starts[:, None] + np.arange(L + 1)]
    for i in range(B - n_syn, B):
        filler = None if rng.random() < a.grass_frac else train
        if rng.random() < a.passkey_frac:
            x, m, _ = synth.passkey(rng, L + 1, rng.random(), filler)
        else:
            x, m = synth.kv(rng, L + 1, filler)
        ids[i], mask[i] = x, m
    return ids, mask[:, :L], n_syn


def attn_probe(model, dev):
    """Check that attention runs on a fused SDPA kernel (no materialised mask, GQA handled);
    fall back to repeating K/V heads if SDPA's fused kernels refuse enable_gqa."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    seen = {}
    hook = model.model.layers[0].self_attn.register_forward_pre_hook(
        lambda m, args, kwargs: seen.update(mask=kwargs.get("attention_mask")), with_kwargs=True)

    def trial():
        x = torch.randint(0, 100, (2, 512), device=dev)
        with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16), \
                sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
            model(input_ids=x).logits.float().mean().backward()
        model.zero_grad(set_to_none=True)
    try:
        trial()
        mode = "sdpa enable_gqa"
    except RuntimeError as e:
        print("fused SDPA refused GQA:", str(e).splitlines()[0], flush=True)
        import transformers.integrations.sdpa_attention as S
        S.use_gqa_in_sdpa = lambda *args, **kw: False
        trial()
        mode = "repeat_kv + sdpa"
    hook.remove()
    m = seen.get("mask")
    print(f"attention: {mode}; mask given to SDPA: {None if m is None else tuple(m.shape)}", flush=True)


def export_hf(model, cfg, a, out_dir, tok_dir, extra):
    from transformers import GenerationConfig
    os.makedirs(out_dir, exist_ok=True)
    m = model.to(torch.bfloat16)
    m.save_pretrained(out_dir, safe_serialization=True)
    model.to(torch.float32)
    gc = GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                          pad_token_id=cfg.pad_token_id, do_sample=False, max_length=a.max_pos)
    gc.save_pretrained(out_dir)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(tok_dir, f)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(out_dir, f))
    # top-level rope_theta too, for readers that predate rope_parameters
    p = os.path.join(out_dir, "config.json")
    c = json.load(open(p))
    c.setdefault("rope_theta", a.rope_theta)
    json.dump(c, open(p, "w"), indent=2, sort_keys=True)
    json.dump(dict(vars(a), **extra), open(os.path.join(out_dir, "train_args.json"), "w"), indent=1)


def main():
    a = parse()
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = a.device
    os.makedirs(a.out, exist_ok=True)
    tok = Tokenizer.from_file(a.tokenizer)
    synth = Synth(tok)
    train = load_tokens(os.path.join(a.data, "train.u16.xz"))
    print(f"train tokens {len(train):,}", flush=True)

    cfg = make_config(a, tok)
    model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params:,} (tied embedding {model.model.embed_tokens.weight.numel():,})", flush=True)

    attn_probe(model, dev)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=a.wd), dict(params=no_decay, weight_decay=0.0)],
                            lr=a.lr, betas=(0.9, a.beta2), eps=1e-8, fused=dev.startswith("cuda"))
    step, tokens_seen, log = 0, 0, []
    ckpt_path = os.path.join(a.out, "ckpt.pt")
    if a.resume:
        ck = torch.load(a.resume, map_location=dev, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, tokens_seen, log = ck["step"], ck["tokens_seen"], ck["log"]
        print(f"resumed from {a.resume} at step {step}", flush=True)
    elif a.init_from:
        from safetensors.torch import load_file
        p = a.init_from if a.init_from.endswith(".safetensors") else os.path.join(a.init_from, "model.safetensors")
        sd = {k: v.float() for k, v in load_file(p).items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
        model.tie_weights()
        print(f"initialised from {p}", flush=True)

    def save_ckpt():
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), step=step, tokens_seen=tokens_seen,
                        log=log, args=vars(a)), ckpt_path + ".tmp")
        os.replace(ckpt_path + ".tmp", ckpt_path)
        with open(os.path.join(a.out, "log.jsonl"), "w") as f:
            for r in log:
                f.write(json.dumps(r) + "\n")

    t0 = time.time()
    model.train()
    stopped_early = False
    acc = dict(loss=0.0, lm=0.0, ans=0.0, acc=0.0, n=0, n_ans=0)
    while step < a.steps:
        L = seq_len_at(a.seq_schedule, step, a.steps)
        ids_np, mask_np, n_syn = batch(a, step, L, train, synth)
        ids = torch.from_numpy(ids_np).to(dev, non_blocking=True)
        amask = torch.from_numpy(mask_np).to(dev, non_blocking=True)
        x, y = ids[:, :-1], ids[:, 1:]
        lr = lr_at(a, step)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(dev.split(":")[0], dtype=torch.bfloat16), \
                sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
            logits = model(input_ids=x).logits
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                              reduction="none").view(y.shape)
        lm = nll.mean()
        if amask.any():
            ans = nll[amask].mean()
            ans_acc = (logits.argmax(-1)[amask] == y[amask]).float().mean()
        else:
            ans = torch.zeros((), device=dev)
            ans_acc = torch.zeros((), device=dev)
        loss = lm + a.ans_weight * ans
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        step += 1
        tokens_seen += ids.shape[0] * L
        # loss on the real-text sequences alone (the LM curve of the card)
        n_txt = ids.shape[0] - n_syn
        txt = nll[:n_txt].mean() if n_txt else lm
        acc["loss"] += loss.detach()
        acc["lm"] += txt.detach()
        acc["ans"] += ans.detach()
        acc["acc"] += ans_acc.detach()
        acc["n"] += 1
        if step % a.log_every == 0 or step == a.steps:
            n = acc["n"]
            r = dict(step=step, tokens=tokens_seen, seq_len=L, lr=lr, loss=float(acc["loss"]) / n,
                     text_loss=float(acc["lm"]) / n, ans_loss=float(acc["ans"]) / n,
                     ans_acc=float(acc["acc"]) / n, grad_norm=float(gnorm), time=time.time() - t0,
                     mem_gb=torch.cuda.max_memory_allocated() / 2 ** 30 if dev.startswith("cuda") else 0.0)
            log.append(r)
            acc = dict(loss=0.0, lm=0.0, ans=0.0, acc=0.0, n=0, n_ans=0)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
        if step % a.ckpt_every == 0:
            save_ckpt()
        if a.stop_at and step >= a.stop_at:
            stopped_early = True
            break
        if a.time_limit and time.time() - t0 > a.time_limit:
            print(f"time limit reached at step {step}", flush=True)
            stopped_early = True
            break
    save_ckpt()
    elapsed = time.time() - t0
    print(f"done: step {step}/{a.steps} tokens {tokens_seen:,} in {elapsed:.1f}s", flush=True)
    if not a.no_export:
        export_hf(model, cfg, a, os.path.join(a.out, "hf"), os.path.dirname(os.path.abspath(a.tokenizer)),
                  dict(n_params=n_params, final_step=step, tokens_seen=tokens_seen, finished=not stopped_early))
    return 0 if not stopped_early or a.stop_at else 3


if __name__ == "__main__":
    sys.exit(main())
