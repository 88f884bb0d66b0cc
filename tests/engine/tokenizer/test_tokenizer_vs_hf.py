"""macattn's Tokenizer against Hugging Face `tokenizers`, token for token.

Each tokenizer.json is built here with `tokenizers` (GPT-2, Llama-3 and Qwen2 styles, plus one
with the rarer Split settings) or is the project's shipped one; tokenizer_tool (C++) and HF
then encode the same corpus (unicode, code, whitespace runs, numbers, contractions, special
and added tokens, invalid UTF-8) and must agree on the ids with and without special tokens and
on both decodings. Run by ctest through run_pytest.sh, which passes TOKENIZER_TOOL."""
import functools
import json
import os
import pathlib
import subprocess

import pytest

tokenizers = pytest.importorskip("tokenizers")

import hf_builders  # noqa: E402  (after the skip: it imports tokenizers)

HERE = pathlib.Path(__file__).resolve().parent
SHIPPED = HERE.parents[2] / "models" / "macattn-ref" / "tokenizer.json"


def _tool():
    tool = os.environ.get("TOKENIZER_TOOL")
    if not tool or not os.path.exists(tool):
        pytest.skip("TOKENIZER_TOOL is not set to the built tokenizer_tool (run through ctest)")
    return tool


def run_tool(tokenizer_path, texts, tmp_path, config_path=None):
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps({"texts": [t.hex() for t in texts]}))
    cmd = [_tool(), str(tokenizer_path), str(texts_path)] + ([str(config_path)] if config_path else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def compare(tok, tokenizer_path, tmp_path):
    texts = hf_builders.corpus() + hf_builders.random_texts(400, 100, seed=2024)
    ours = run_tool(tokenizer_path, texts, tmp_path)["results"]
    ref = hf_builders.hf_reference(tok, texts)
    assert len(ours) == len(ref)
    mismatches = []
    for raw, mine, theirs in zip(texts, ours, ref):
        mine = dict(mine, text=bytes.fromhex(mine["text"]).decode("utf-8"),
                    text_skip=bytes.fromhex(mine["text_skip"]).decode("utf-8"))
        for key in ("ids", "ids_plain", "text", "text_skip"):
            if mine[key] != theirs[key]:
                mismatches.append(f"{key} of {raw[:60]!r}: ours {str(mine[key])[:200]} hf {str(theirs[key])[:200]}")
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:15])
    return ours


@functools.lru_cache(maxsize=None)
def _styles():
    return hf_builders.styles()


@pytest.mark.parametrize("style", ["gpt2", "gpt2_prefix_space_partial_alphabet", "llama3", "qwen2", "split_behaviors"])
def test_built_tokenizer_matches_hf(style, tmp_path):
    tok = _styles()[style]
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    compare(tok, path, tmp_path)




def test_shipped_reference_tokenizer_matches_hf(tmp_path):
    if not SHIPPED.exists():
        pytest.skip(f"{SHIPPED} is not there")
    tok = tokenizers.Tokenizer.from_file(str(SHIPPED))
    ours = run_tool(SHIPPED, [b"x"], tmp_path)
    assert ours["bos"] == tok.token_to_id("<|begin_of_text|>")
    compare(tok, SHIPPED, tmp_path)


def test_special_token_ids_match_hf(tmp_path):
    # bos from the template, eos from the config, and the ids HF gives every added token.
    tok = hf_builders.llama3_style()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}}))
    ours = run_tool(path, [b""], tmp_path, config)
    assert ours["bos"] == tok.token_to_id("<|begin_of_text|>")
    assert ours["eos"] == [tok.token_to_id("<|eot_id|>")]
    assert ours["vocab_size"] == max(tok.get_vocab(with_added_tokens=True).values()) + 1
    assert ours["results"][0]["ids"] == [tok.token_to_id("<|begin_of_text|>")]
