"""Synthetic long-range retrieval sequences for training and evaluating the reference model.

Two tasks, both built directly in token space from pre-tokenised pieces (the Llama-3
pre-tokeniser splits digits into groups of at most three and never joins them to
the surrounding text, so concatenating separately tokenised pieces gives exactly
the tokens of the whole string; `check_pieces` asserts this):

* passkey (the classic test): an instruction, filler, and at a chosen depth
  "The pass key is 48213. Remember it. 48213 is the pass key.", more filler, and
  "What is the pass key? The pass key is 48213." at the end.
* key-value lookup: K lines "The value of key 4821 is 77310." scattered through the
  filler, and Q questions "What is the value of key 4821? It is 77310." at the end.

Filler is either real text (a window of the token stream) or the repetitive
"The grass is green..." filler of the passkey literature.  Each sequence comes with
a mask of the answer digit tokens (positions in the *input* whose next token is an
answer token), used for the retrieval loss and for exact-match accuracy: greedy
decoding reproduces the answer iff every answer token is the argmax under teacher
forcing.
"""
import numpy as np

INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and "
         "memorize it. I will quiz you about the important information there.\n")
GRASS = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
PK_A, PK_B, PK_C = "\nThe pass key is ", ". Remember it. ", " is the pass key."
PK_Q = "\nWhat is the pass key? The pass key is "
KV_A, KV_B = "\nThe value of key ", " is "
KV_Q, KV_R = "What is the value of key ", "? It is "
DOT_NL = ".\n"


class Synth:
    def __init__(self, tokenizer):
        enc = lambda s: tokenizer.encode(s, add_special_tokens=False).ids
        self.enc = enc
        self.bos = tokenizer.token_to_id("<|begin_of_text|>")
        self.p = {k: np.array(enc(v), dtype=np.int64) for k, v in dict(
            intro=INTRO, pk_a=PK_A, pk_b=PK_B, pk_c=PK_C, pk_q=PK_Q, kv_a=KV_A, kv_b=KV_B,
            kv_q=KV_Q, kv_r=KV_R, dot_nl=DOT_NL, dot=".", nl="\n").items()}
        g = np.array(enc(GRASS * 64), dtype=np.int64)
        self.grass_unit = np.array(enc(GRASS), dtype=np.int64)
        self.grass = g
        # digit groups: tokens of every string of 1-3 digits
        self.dig = {}
        for w in (1, 2, 3):
            for i in range(10 ** w):
                s = str(i).zfill(w)
                self.dig[s] = np.array(enc(s), dtype=np.int64)
        self.check_pieces()

    def num(self, s):
        return np.concatenate([self.dig[s[i:i + 3]] for i in range(0, len(s), 3)])

    def check_pieces(self):
        s, a, b = "48213", "4821", "77310"
        cases = [
            (PK_A + s + PK_B + s + PK_C, [self.p["pk_a"], self.num(s), self.p["pk_b"], self.num(s), self.p["pk_c"]]),
            (PK_Q + s + ".", [self.p["pk_q"], self.num(s), self.p["dot"]]),
            (KV_A + a + KV_B + b + ".", [self.p["kv_a"], self.num(a), self.p["kv_b"], self.num(b), self.p["dot"]]),
            ("\n" + (KV_Q + a + KV_R + b + DOT_NL) * 2,
             [self.p["nl"]] + [self.p["kv_q"], self.num(a), self.p["kv_r"], self.num(b), self.p["dot_nl"]] * 2),
        ]
        for text, parts in cases:
            assert list(np.concatenate(parts)) == self.enc(text), \
                f"piecewise tokenisation differs from whole-string tokenisation: {text!r}"

    def filler(self, rng, n, text_tokens):
        """n filler tokens: a random window of text_tokens, or the grass filler if None."""
        if text_tokens is None:
            reps = n // len(self.grass_unit) + 2
            f = np.tile(self.grass_unit, reps)
            return f[:n]
        start = rng.integers(0, len(text_tokens) - n - 1)
        return text_tokens[start:start + n].astype(np.int64)

    def passkey(self, rng, length, depth, text_tokens, key=None):
        """One passkey sequence of exactly `length` tokens; returns (ids, answer_input_mask, key)."""
        if key is None:
            key = str(rng.integers(10000, 100000))
        k = self.num(key)
        needle = np.concatenate([self.p["pk_a"], k, self.p["pk_b"], k, self.p["pk_c"]])
        question = self.p["pk_q"]
        tail = self.p["dot"]
        head = np.concatenate([[self.bos], self.p["intro"]])
        n_fill = length - len(head) - len(needle) - len(question) - len(k) - len(tail)
        assert n_fill > 0
        fill = self.filler(rng, n_fill, text_tokens)
        cut = int(round(depth * n_fill))
        ids = np.concatenate([head, fill[:cut], needle, fill[cut:], question, k, tail])
        mask = np.zeros(length, dtype=bool)
        a0 = length - len(tail) - len(k)          # first answer token position in ids
        mask[a0 - 1:a0 - 1 + len(k)] = True       # inputs whose next token is an answer token
        return ids, mask, key

    def kv(self, rng, length, text_tokens, n_keys=None, n_queries=None):
        """Key-value lookup sequence of exactly `length` tokens; returns (ids, answer_input_mask)."""
        if n_keys is None:
            n_keys = int(rng.integers(1, 33))
        if n_queries is None:
            n_queries = int(min(n_keys, rng.integers(1, 9)))
        keys = rng.choice(np.arange(1000, 10000), size=n_keys, replace=False)
        vals = rng.integers(10000, 100000, size=n_keys)
        needles = [np.concatenate([self.p["kv_a"], self.num(str(a)), self.p["kv_b"],
                                   self.num(str(b)), self.p["dot"]]) for a, b in zip(keys, vals)]
        qsel = rng.choice(n_keys, size=n_queries, replace=False)
        qparts, ans_off = [self.p["nl"]], []
        off = len(self.p["nl"])
        for i in qsel:
            pre = np.concatenate([self.p["kv_q"], self.num(str(keys[i])), self.p["kv_r"]])
            v = self.num(str(vals[i]))
            qparts += [pre, v, self.p["dot_nl"]]
            ans_off.append((off + len(pre), len(v)))
            off += len(pre) + len(v) + len(self.p["dot_nl"])
        query = np.concatenate(qparts)
        head = np.concatenate([[self.bos], self.p["intro"]])
        n_need = sum(len(x) for x in needles)
        n_fill = length - len(head) - n_need - len(query)
        if n_fill < 16:
            return self.kv(rng, length, text_tokens, max(1, n_keys // 2), max(1, n_queries // 2))
        fill = self.filler(rng, n_fill, text_tokens)
        cuts = np.sort(rng.integers(0, n_fill + 1, size=n_keys))
        parts, prev = [head], 0
        for c, nd in zip(cuts, needles):
            parts += [fill[prev:c], nd]
            prev = c
        parts.append(fill[prev:])
        body = np.concatenate(parts)
        ids = np.concatenate([body, query])
        mask = np.zeros(length, dtype=bool)
        for o, n in ans_off:
            p0 = len(body) + o
            mask[p0 - 1:p0 - 1 + n] = True
        return ids, mask
