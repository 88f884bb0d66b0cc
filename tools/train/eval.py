#!/usr/bin/env python3
"""Evaluate the reference model: held-out perplexity and passkey / key-value retrieval.

Loads the model with Hugging Face transformers (bf16, SDPA attention on the GPU).

Perplexity, on the held-out documents (each >= 16385 tokens, never trained on):
  * window ppl at L: the first L tokens of every document, all L-1 predictions;
  * fixed-target ppl at L: the same 1024 target tokens (document positions
    15360..16383) predicted with the L tokens of context that end there, so the
    numbers for different L differ only in how much context the model sees.

Passkey: exact match of the 5-digit key (teacher-forced argmax of every key token,
which equals greedy decoding), by context length and depth, with filler taken from
the held-out documents (table 'text') and the classic repetitive filler ('grass').
Key-value lookup: 16 keys scattered uniformly, 4 questions, accuracy per answer.

  python3 tools/train/eval.py --model models/macattn-ref --data .data/tok --out eval.json
"""
import argparse
import json
import lzma
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from synth import Synth  # noqa: E402


def ints(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/macattn-ref")
    ap.add_argument("--data", default=".data/tok")
    ap.add_argument("--out", default="eval.json")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--ppl-lens", default="2048,8192,16384")
    ap.add_argument("--pk-lens", default="1024,2048,4096,8192,12288,16384")
    ap.add_argument("--pk-depths", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")
    ap.add_argument("--pk-n", type=int, default=40, help="samples per (length, depth) cell")
    ap.add_argument("--kv-n", type=int, default=100, help="sequences per length for key-value lookup")
    ap.add_argument("--batch-tokens", type=int, default=262144)
    ap.add_argument("--seed", type=int, default=20240601)
    a = ap.parse_args()

    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    dev = a.device
    dtype = torch.bfloat16 if dev.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa").to(dev).eval()
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    synth = Synth(tok)
    with lzma.open(os.path.join(a.data, "heldout.u16.xz")) as f:
        held = np.frombuffer(f.read(), dtype=np.uint16)
    index = json.load(open(os.path.join(a.data, "heldout.json")))
    docs = [held[d["offset"]:d["offset"] + d["length"]].astype(np.int64) for d in index]
    import transformers
    res = dict(model=a.model, heldout_docs=len(docs), args=vars(a),
               versions=dict(torch=torch.__version__, transformers=transformers.__version__))
    t0 = time.time()

    @torch.no_grad()
    def hidden(x):
        return model.model(input_ids=torch.as_tensor(x, device=dev)).last_hidden_state

    @torch.no_grad()
    def nll_of(x, first_target):
        """Sum and count of next-token NLL for targets x[:, first_target:]."""
        h = hidden(x[:, :-1])[:, first_target - 1:]
        y = torch.as_tensor(x[:, first_target:], device=dev)
        tot, n = 0.0, 0
        for i in range(h.shape[0]):
            lg = model.lm_head(h[i]).float()
            tot += F.cross_entropy(lg, y[i], reduction="sum").item()
            n += y.shape[1]
        return tot, n

    # ---- perplexity
    ppl = {}
    for L in ints(a.ppl_lens):
        bs = max(1, a.batch_tokens // L)
        tot = n = ftot = fn = 0.0
        by_src = {}
        for i in range(0, len(docs), bs):
            chunk = docs[i:i + bs]
            x = np.stack([d[:L] for d in chunk])
            s, c = nll_of(x, 1)
            tot, n = tot + s, n + c
            end = 16384
            xf = np.stack([d[end - L:end] for d in chunk])
            s, c = nll_of(xf, L - min(1024, L // 2))
            ftot, fn = ftot + s, fn + c
        # per-source window ppl
        for d, meta in zip(docs, index):
            s, c = nll_of(d[None, :L], 1)
            k = meta["source"]
            by_src.setdefault(k, [0.0, 0])
            by_src[k][0] += s
            by_src[k][1] += c
        ppl[L] = dict(window_ppl=float(np.exp(tot / n)), window_tokens=int(n),
                      fixed_target_ppl=float(np.exp(ftot / fn)), fixed_target_tokens=int(fn),
                      by_source={k: float(np.exp(v[0] / v[1])) for k, v in by_src.items()})
        print(f"ppl L={L}: window {ppl[L]['window_ppl']:.3f}  fixed-target(last 1024) "
              f"{ppl[L]['fixed_target_ppl']:.3f}", flush=True)
    res["perplexity"] = ppl

    # ---- passkey
    stream = np.concatenate(docs)

    @torch.no_grad()
    def exact(seqs, masks):
        x = np.stack(seqs)
        m = np.stack(masks)
        h = hidden(x)
        mm = torch.as_tensor(m, device=dev)
        pred = model.lm_head(h[mm]).argmax(-1)
        # align: mask marks inputs whose next token is an answer token
        gold = torch.as_tensor(np.stack([np.append(s[1:], 0) for s in seqs]), device=dev)[mm]
        ok = (pred == gold).cpu().numpy()
        return ok, m.sum(1)

    lens, depths = ints(a.pk_lens), [float(d) for d in a.pk_depths.split(",")]
    for filler_name in ("text", "grass"):
        table = {}
        rng = np.random.default_rng([a.seed, 0 if filler_name == "text" else 1])
        for L in lens:
            bs = max(1, a.batch_tokens // L)
            row = {}
            for d in depths:
                seqs, masks = [], []
                for _ in range(a.pk_n):
                    ids, m, _ = synth.passkey(rng, L, d, stream if filler_name == "text" else None)
                    seqs.append(ids)
                    masks.append(m)
                correct = []
                for i in range(0, len(seqs), bs):
                    ok, cnt = exact(seqs[i:i + bs], masks[i:i + bs])
                    # split per sequence: a key is right when all its tokens are
                    off = 0
                    for c in cnt:
                        correct.append(bool(ok[off:off + c].all()))
                        off += c
                row[f"{d:g}"] = float(np.mean(correct))
            row["mean"] = float(np.mean([row[f"{d:g}"] for d in depths]))
            table[L] = row
            print(f"passkey[{filler_name}] L={L}: mean {row['mean']:.3f}  "
                  + " ".join(f"{k}:{v:.2f}" for k, v in row.items() if k != "mean"), flush=True)
        res[f"passkey_{filler_name}"] = table

    # ---- key-value lookup (16 keys, 4 questions)
    kv = {}
    rng = np.random.default_rng([a.seed, 2])
    for L in lens:
        bs = max(1, a.batch_tokens // L)
        seqs, masks = [], []
        for _ in range(a.kv_n):
            ids, m = synth.kv(rng, L, stream, n_keys=16, n_queries=4)
            seqs.append(ids)
            masks.append(m)
        right = total = 0
        for i in range(0, len(seqs), bs):
            ok, cnt = exact(seqs[i:i + bs], masks[i:i + bs])
            off = 0
            for s, m, c in zip(seqs[i:i + bs], masks[i:i + bs], cnt):
                # group answer tokens into answers: runs of consecutive mask positions
                pos = np.where(m)[0]
                runs = np.split(np.arange(len(pos)), np.where(np.diff(pos) > 1)[0] + 1)
                for r in runs:
                    right += bool(ok[off + r].all())
                    total += 1
                off += c
        kv[L] = dict(accuracy=right / total, answers=total)
        print(f"kv16 L={L}: {right / total:.3f} ({total} answers)", flush=True)
    res["kv16"] = kv
    res["eval_seconds"] = time.time() - t0
    json.dump(res, open(a.out, "w"), indent=1)
    print(f"eval done in {res['eval_seconds']:.1f}s -> {a.out}", flush=True)


if __name__ == "__main__":
    main()
