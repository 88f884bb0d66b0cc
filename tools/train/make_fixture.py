#!/usr/bin/env python3
"""Regenerate tests/python/fixtures/ref_greedy.json from the shipped reference model.

Runs Hugging Face transformers on the CPU in float32 (the bf16 weights upcast):
the fixed prompt's token ids (with <|begin_of_text|>), its greedy continuation, the
top-10 logits at the prompt's last position, and the smallest top-1/top-2 logit
margin met during the greedy steps (how far the recorded argmaxes are from a tie).
The model card quotes the continuation; tests/python/test_reference_model.py checks
it; C++ engine tests can compare their logits and tokens against it.

  python3 tools/train/make_fixture.py --model models/macattn-ref \
      --out tests/python/fixtures/ref_greedy.json
"""
import argparse
import json

PROMPT = ('func main() {\n\tfmt.Println("hello, world")\n}\n\n'
          '// Add returns the sum of a and b.\nfunc Add(a, b int) int {\n')
NEW_TOKENS = 32


def compute(model_dir, prompt=PROMPT, new_tokens=NEW_TOKENS):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        last = model(ids).logits[0, -1]
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                             output_scores=True, return_dict_in_generate=True,
                             pad_token_id=tok.pad_token_id)
    cont = out.sequences[0, ids.shape[1]:].tolist()
    margins = []
    for s in out.scores:
        v = s[0].float().topk(2).values
        margins.append(float(v[0] - v[1]))
    top = last.topk(10)
    return dict(
        prompt=prompt,
        prompt_ids=ids[0].tolist(),
        greedy_ids=cont,
        greedy_text=tok.decode(cont),
        last_logits_top10=dict(ids=top.indices.tolist(), values=[round(float(v), 5) for v in top.values]),
        min_greedy_margin=round(min(margins), 5),
        dtype="float32 (bf16 weights upcast), CPU",
        new_tokens=new_tokens,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/macattn-ref")
    ap.add_argument("--out", default="tests/python/fixtures/ref_greedy.json")
    a = ap.parse_args()
    import torch
    import transformers
    fx = compute(a.model)
    fx["generated_with"] = dict(torch=torch.__version__, transformers=transformers.__version__,
                                command="python3 tools/train/make_fixture.py --model %s --out %s" % (a.model, a.out))
    text = "{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in fx.items()) + "\n}\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
