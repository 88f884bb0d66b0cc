#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer of the macattn reference model.

Hugging Face `tokenizers`, Llama-3-style pre-tokenisation (the Llama 3 split
regex, then byte-level mapping without prefix space), a ByteLevel decoder, and a
post-processor that puts <|begin_of_text|> in front of every encoded text (as
Llama 3 does).  Writes tokenizer.json and tokenizer_config.json.

  python3 tools/train/train_tokenizer.py --corpus .data/corpus/train.jsonl \
      --out models/macattn-ref --vocab-size 4096
"""
import argparse
import json
import os
import random

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# The pre-tokenisation regex of Llama 3 (tiktoken cl100k-style, digits in groups of <= 3).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
SPECIALS = [BOS, EOS, PAD]


def texts(path, max_bytes, seed):
    rows = [json.loads(l)["text"] for l in open(path)]
    random.Random(seed).shuffle(rows)
    total = 0
    for t in rows:
        total += len(t.encode())
        if total > max_bytes:
            break
        yield t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=".data/corpus/train.jsonl")
    ap.add_argument("--out", default="models/macattn-ref")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--max-bytes", type=int, default=40_000_000,
                    help="train on a seeded random sample of this many bytes of documents")
    ap.add_argument("--model-max-length", type=int, default=16384)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size, min_frequency=2, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts(args.corpus, args.max_bytes, args.seed), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B",
                                      special_tokens=[(BOS, bos_id)]),
    ])
    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))

    added = {str(tok.token_to_id(t)): dict(content=t, lstrip=False, normalized=False, rstrip=False,
                                           single_word=False, special=True) for t in SPECIALS}
    cfg = dict(added_tokens_decoder=added, bos_token=BOS, eos_token=EOS, pad_token=PAD,
               clean_up_tokenization_spaces=False, model_max_length=args.model_max_length,
               model_input_names=["input_ids", "attention_mask"],
               tokenizer_class="PreTrainedTokenizerFast")
    json.dump(cfg, open(os.path.join(args.out, "tokenizer_config.json"), "w"), indent=2)

    sample = "def greet(name):\n    return f'Hello, {name}!'  # 12345 tokens\n"
    enc = tok.encode(sample)
    assert tok.decode(enc.ids, skip_special_tokens=True) == sample
    print("vocab", tok.get_vocab_size(), "sample ids", enc.ids[:16], "...")


if __name__ == "__main__":
    main()
