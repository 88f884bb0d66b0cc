#!/usr/bin/env python3
"""Regenerates fixtures/ (needs pip `tokenizers`): small GPT-2-, Llama-3- and Qwen2-style
tokenizer.json files built by hf_builders.py and expected.json, what Hugging Face `tokenizers`
makes of the corpus with each, so the C++ tests check agreement without Python. Also copies the
valid tokenizers into fuzz/corpus/ as seeds.

    python3 tests/engine/tokenizer/make_fixtures.py
"""
import json
import pathlib
import shutil

import tokenizers

import hf_builders

HERE = pathlib.Path(__file__).resolve().parent


def main():
    fixtures = HERE / "fixtures"
    fixtures.mkdir(exist_ok=True)
    texts = hf_builders.corpus()
    builders = {"gpt2": hf_builders.gpt2_style, "llama3": hf_builders.llama3_style, "qwen2": hf_builders.qwen2_style}
    expected = {"tokenizers_version": tokenizers.__version__, "texts": [t.hex() for t in texts], "styles": {}}
    for name, build in builders.items():
        tok = build()
        (fixtures / f"{name}.tokenizer.json").write_text(tok.to_str(pretty=False) + "\n")
        results = hf_reference_compact(tok, texts)
        expected["styles"][name] = results
        shutil.copy(fixtures / f"{name}.tokenizer.json", HERE / "fuzz" / "corpus" / f"valid_{name}.json")
    (fixtures / "expected.json").write_text(json.dumps(expected, separators=(",", ":"), ensure_ascii=False) + "\n")
    write_small_seeds(HERE / "fuzz" / "corpus")


def write_small_seeds(corpus):
    """Small seeds that reach every part quickly: one tiny file using each feature, and broken
    variants of it (the fuzzer mutates from both)."""
    tiny = {
        "version": "1.0",
        "added_tokens": [
            {"id": 6, "content": "<s>", "special": True, "normalized": False},
            {"id": 7, "content": "[L]", "lstrip": True, "rstrip": True, "single_word": True, "normalized": True},
        ],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "NFKD"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": hf_builders.LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "Split", "pattern": {"String": ","}, "behavior": "MergedWithNext", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": True, "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel"},
            {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                      {"Sequence": {"id": "A", "type_id": 0}}],
             "special_tokens": {"<s>": {"id": "<s>", "ids": [6], "tokens": ["<s>"]}}}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "unk_token": "u", "fuse_unk": True, "byte_fallback": True, "ignore_merges": True,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "vocab": {"H": 0, "e": 1, "He": 2, "\u0120": 3, "u": 4, "<0x21>": 5},
                  "merges": ["H e"]},
    }
    text = json.dumps(tiny)
    seeds = {
        "tiny_all_features.json": text,
        "gpt2_bytelevel_only.json": json.dumps({"pre_tokenizer": {"type": "ByteLevel"}, "decoder": {"type": "ByteLevel"},
                                                "model": {"vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}}),
        "broken_truncated.json": text[: len(text) // 2],
        "broken_no_model.json": json.dumps({k: v for k, v in tiny.items() if k != "model"}),
        "broken_bad_merge.json": text.replace('"H e"', '"H e x"'),
        "broken_bad_regex.json": json.dumps({**tiny, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"},
                                                                       "behavior": "Isolated"}}),
        "broken_deep_nesting.json": '{"pre_tokenizer":' + '{"type":"Sequence","pretokenizers":[' * 40 + "]}" * 40
                                    + ',"model":{"vocab":{},"merges":[]}}',
        "broken_catastrophic_regex.json": json.dumps({**tiny, "pre_tokenizer": {
            "type": "Split", "pattern": {"Regex": "(\\w|\\w\\w)+$"}, "behavior": "Removed"}}),
        "broken_template.json": json.dumps({**tiny, "post_processor": {"type": "TemplateProcessing",
                                                                       "single": [{"SpecialToken": {"id": "x"}}]}}),
    }
    for name, content in seeds.items():
        (corpus / name).write_text(content)
    # A file, a NUL, then a text for the fuzzer to encode besides its fixed one.
    text_after = "  He said: 'Hello'\t\t[L] <s>\n\n 12345 \u00e9e\u0301 \U0001F600".encode("utf-8") + b"\xff\xc3"
    (corpus / "tiny_with_text.bin").write_bytes(text.encode("utf-8") + b"\0" + text_after)


def hf_reference_compact(tok, texts):
    # Decoded texts are well-formed UTF-8, so plain JSON strings; text_skip only where it differs.
    out = []
    for r in hf_builders.hf_reference(tok, texts):
        entry = {"ids": r["ids"], "ids_plain": r["ids_plain"], "text": r["text"]}
        if r["text_skip"] != r["text"]:
            entry["text_skip"] = r["text_skip"]
        out.append(entry)
    return out


if __name__ == "__main__":
    main()
