"""Builds small GPT-2-, Llama-3- and Qwen2-style tokenizer.json files with Hugging Face
`tokenizers`, and the corpus they are compared on. Used by test_tokenizer_vs_hf.py and by
make_fixtures.py (which writes the fixtures the C++ tests and the fuzz seeds use)."""
import json
import random

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# The Split regexes exactly as the real models' tokenizer.json files have them.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. It's what they'll do, isn't it? I'm sure we've seen it.",
    "def tokenize(text):\n    return [t for t in text.split(' ') if t]  # words\n\tindented\twith\ttabs\n",
    "for (int i = 0; i < 1024; ++i) { sum += a[i] * b[i]; }  // 3.14159 2718281828 1,000,000",
    "日本語のテキストと中文的文本，还有한국어 텍스트。 Ελληνικά, Кириллица, العربية, עברית.",
    "café naïve résumé coöperate — emoji 😀👍🏽 and more: hello hello world world the the",
    "SELECT name, count(*) FROM users WHERE age >= 18 GROUP BY name; <html><body>x</body></html>",
]


def _train(pre_tokenizer, normalizer, specials, vocab_size, full_alphabet):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, show_progress=False, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if full_alphabet else [])
    tok.train_from_iterator(TRAIN_TEXT * 3, trainer)
    return tok


def _extra_added_tokens(tok):
    # Added tokens with each of HF's matching flags, so the corpus exercises them.
    tok.add_tokens([
        AddedToken("[LS]", lstrip=True, normalized=False, special=True),
        AddedToken("[RS]", rstrip=True, normalized=False, special=False),
        AddedToken("word", single_word=True, normalized=False, special=False),
        AddedToken("e\u0301x", normalized=True, special=False),  # matched after NFC where there is one
        AddedToken("<tool>", normalized=False, special=False),
    ])


def gpt2_style(add_prefix_space=False, full_alphabet=True, vocab_size=500):
    tok = _train(pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space), None, ["<|endoftext|>"], vocab_size,
                 full_alphabet)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    _extra_added_tokens(tok)
    return tok


def llama3_style(vocab_size=600, ignore_merges=True):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok = _train(pre, None, specials, vocab_size, True)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    _extra_added_tokens(tok)
    data = json.loads(tok.to_str())
    data["model"]["ignore_merges"] = ignore_merges
    # A whole word in the vocab that the merges cannot build: only ignore_merges yields it.
    data["model"]["vocab"]["Ġzebra"] = max(data["model"]["vocab"].values()) + 1
    data["added_tokens"] = []  # re-added below so their ids follow the grown vocab, as HF assigns them
    tok2 = Tokenizer.from_str(json.dumps(data))
    tok2.add_special_tokens(specials)
    _extra_added_tokens(tok2)
    return tok2


def qwen2_style(vocab_size=600):
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok = _train(pre, normalizers.NFC(), ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], vocab_size, True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    _extra_added_tokens(tok)
    return tok


def split_behaviors_style():
    # Less common Split settings (other behaviours, invert, a String pattern) over ByteLevel.
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d+"), behavior="merged_with_previous"),
        pre_tokenizers.Split(",", behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"[ \t]"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"\p{P}"), behavior="contiguous"),
        pre_tokenizers.Split(Regex(r"\p{Han}"), behavior="isolated", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    return _train(pre, normalizers.Sequence([normalizers.NFKC()]), ["<s>"], 400, True)


def styles():
    """name -> Tokenizer, every style the comparison covers."""
    return {
        "gpt2": gpt2_style(),
        "gpt2_prefix_space_partial_alphabet": gpt2_style(add_prefix_space=True, full_alphabet=False, vocab_size=300),
        "llama3": llama3_style(),
        "qwen2": qwen2_style(),
        "split_behaviors": split_behaviors_style(),
    }


def corpus():
    """The texts (bytes) the tokenizers are compared on."""
    texts = [
        "", " ", "  ", "\t", "\n", "\r\n", "a", "hello world", "Hello, World!", "  leading and trailing  ",
        "tabs\tand\t\tmore\t tabs", "new\nlines\n\n\nthree", "mixed \t \n  \r\n whitespace runs   \n", " \n \n",
        "1", "12", "123", "1234", "12345", "123456", "1234567890", "3.14159", "1,000,000", "-42", "0x1F", "2024-01-31",
        "\u0663\u0664\u0665 arabic-indic", "\u2460\u2461 circled", "\u216b roman",
        "I'm you're he's we've they'll I'd can't DON'T I'M WE'LL", "it's 'quoted' 'S 'T", "\u017f 's '\u017f long s",
        "日本語のテキスト", "中文测试，标点。", "한국어 텍스트", "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇯🇵",
        "combining e\u0301 a\u0308 n\u0303 \u1100\u1161\u11a8", "café naïve résumé", "NFC: \u00e9 vs e\u0301",
        "RTL: שלום עולם مرحبا بالعالم", "Ελληνικά Кириллица", "\ufb01 ligature \u2460 \u00bd \u00b2",
        "zero\u200bwidth", "nbsp\u00a0here", "nel\u0085line", "ideographic\u3000space", "line\u2028sep",
        "\u0000nul\u0001", "\u00ad soft hyphen",
        "def f(x):\n    return x**2  # square\n", "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
        "<html><body class=\"x\">&amp;</body></html>", "SELECT * FROM t WHERE a='b';", "    indented\n\tcode\n",
        "path/to/file.txt C:\\Windows\\", "a==b!=c<=d>=e->f=>g", "zebra, a zebra zebras Zebra",
        "<|endoftext|>", "Hello<|endoftext|>world", "<|begin_of_text|>hi<|end_of_text|>",
        "<|im_start|>user\nhi<|im_end|>\n", "<|endoftext|><|endoftext|>", "partial <|endof", "<|eot_id|> <s>",
        "a [LS] b", "a   [LS]b", "x[RS]   y", "[LS][RS]", "word words sword word.", "\u00e9x e\u0301x ex",
        " <tool> x<tool>y", "a" * 300, " " * 300 + "x", "\n" * 50, "1" * 50, "ab" * 200,
    ]
    out = [t.encode("utf-8") for t in texts]
    out += [b"\xff", b"abc\x80def", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80 surrogate",
            b"\xc0\xaf overlong", b"\xf4\x90\x80\x80 too big", b"ok\xf0\x80\x80ok", b"\xfe\xfe\xff\xff"]
    return out + random_texts(60, 10, seed=1234)


def random_texts(n_text, n_bytes, seed):
    """Seeded random strings over a mixed alphabet (whitespace kinds, digits, letters, CJK,
    emoji, combining marks, apostrophes, pieces of special and added tokens), then random bytes."""
    alphabet = (list("abcXYZ019'.,!?-_ \t\n\r") + ["\u00a0", "\u3000", "\u0085", "\u00e9", "e\u0301", "日", "本",
                "😀", "👍🏽", "\u200d", "\u0663", "<|", "|>", "endoftext", "<|endoftext|>", "[LS]", "[RS]", "word",
                "<tool>", "'s", "'LL", "\u2028", "\ufb01", "\u0130", "\u017f"])
    rng = random.Random(seed)
    out = []
    for _ in range(n_text):
        out.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))).encode("utf-8"))
    for _ in range(n_bytes):
        out.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 24))))
    return out


def hf_reference(tok, texts):
    """What HF makes of each text: ids with and without special tokens, and both decodings."""
    results = []
    for raw in texts:
        text = raw.decode("utf-8", errors="replace")
        ids = tok.encode(text, add_special_tokens=True).ids
        results.append({
            "ids": ids,
            "ids_plain": tok.encode(text, add_special_tokens=False).ids,
            "text": tok.decode(ids, skip_special_tokens=False),
            "text_skip": tok.decode(ids, skip_special_tokens=True),
        })
    return results
