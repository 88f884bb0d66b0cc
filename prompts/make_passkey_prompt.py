#!/usr/bin/env python3
"""Write the bundled long passkey-retrieval prompt (prompts/passkey_12k.txt) deterministically.

The reference model (models/macattn-ref) was trained on passkey sequences built by
tools/train/synth.py: an instruction, filler, at some depth the needle
"The pass key is K. Remember it. K is the pass key.", more filler, and the question
"What is the pass key? The pass key is " followed by the key. This script writes exactly
that text up to the question, so the model's greedy continuation should be the key.
The tokenizer adds <|begin_of_text|> itself, so the file does not contain it.

Filler: the project's own documentation and C++ sources as they were at a pinned commit
(read with `git show COMMIT:PATH`, so the text never changes as the tree moves on), cut at a
line boundary once the prompt reaches --tokens tokens. The key and the depth are fixed by
--seed and --depth. Prints the key, the token count and where the needle sits.

  python3 prompts/make_passkey_prompt.py            # needs `pip install tokenizers` and git
  python3 prompts/make_passkey_prompt.py --check    # regenerate and compare with the file
"""
import argparse
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "train"))
from synth import INTRO, PK_A, PK_B, PK_C, PK_Q  # noqa: E402  (the trained format, verbatim)

FILLER_COMMIT = "731e15420383c12709670f099e5aeb2adf950027"
FILLER_FILES = [
    "README.md", "docs/ARCHITECTURE.md", "docs/benchmarks/cpu.md",
    "include/macattn/config.hpp", "include/macattn/attention.hpp", "include/macattn/kv_cache.hpp",
    "include/macattn/mac_state.hpp", "src/core/dispatch.cpp", "src/core/mac_state.cpp",
    "src/cpu/reference/attend.cpp", "src/cpu/reference/mac_decode.cpp", "src/cpu/reference/prefill_init.cpp",
    "src/cpu/fast/attend_groups.cpp", "src/cpu/fast/mac_decode.cpp", "tests/oracle.cpp", "tests/sim.cpp",
]


def filler_lines():
    lines = []
    for path in FILLER_FILES:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{FILLER_COMMIT}:{path}"], check=True,
                              capture_output=True, text=True).stdout
        lines += text.splitlines(keepends=True) + ["\n"]
    return lines


def build(tokenizer, tokens, depth, seed):
    key = str(random.Random(seed).randint(10000, 99999))
    needle = PK_A + key + PK_B + key + PK_C
    count = lambda s: len(tokenizer.encode(s, add_special_tokens=True).ids)
    budget = tokens - count(INTRO + needle + PK_Q)  # tokens left for the filler (close enough: pieces join cleanly)
    lines, fill = filler_lines(), []
    # Grow the filler a line at a time; count the joined text every 50 lines, then per line near the end.
    i = 0
    while count("".join(fill)) < budget:
        step = 50 if count("".join(fill + lines[i:i + 50])) < budget else 1
        fill += lines[i:i + step]
        i += step
    cut = round(depth * len(fill))
    text = INTRO + "".join(fill[:cut]) + needle.lstrip("\n") + "\n" + "".join(fill[cut:]).rstrip("\n") + PK_Q
    needle_at = count(INTRO + "".join(fill[:cut]))
    return text, key, needle_at


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default=str(ROOT / "models/macattn-ref/tokenizer.json"))
    ap.add_argument("--tokens", type=int, default=12000, help="prompt length in tokens, BOS included (about)")
    ap.add_argument("--depth", type=float, default=0.25, help="needle position as a fraction of the filler")
    ap.add_argument("--seed", type=int, default=6, help="picks the 5-digit key")
    ap.add_argument("--out", default=str(ROOT / "prompts/passkey_12k.txt"))
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    a = ap.parse_args()
    try:
        from tokenizers import Tokenizer
    except ImportError:
        print("skipped: the Python package `tokenizers` is not installed")
        sys.exit(77)
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", FILLER_COMMIT], capture_output=True).returncode:
        print(f"skipped: this checkout lacks commit {FILLER_COMMIT} (the filler's source)")
        sys.exit(77)
    tok = Tokenizer.from_file(a.tokenizer)
    text, key, needle_at = build(tok, a.tokens, a.depth, a.seed)
    n = len(tok.encode(text, add_special_tokens=True).ids)
    print(f"key {key}; {n} tokens with BOS; needle at token {needle_at}; {len(text.encode())} bytes")
    if a.check:
        same = Path(a.out).read_text(encoding="utf-8") == text
        print(f"{a.out}: {'identical' if same else 'DIFFERS'}")
        sys.exit(0 if same else 1)
    Path(a.out).write_text(text, encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
