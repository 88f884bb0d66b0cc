"""Consistency tests of the shipped reference model, models/macattn-ref.

The file-level checks (sizes, config, safetensors header shapes, card vs fixture)
need only the standard library. The tokenizer round trip needs `tokenizers`; loading
the model and checking its greedy continuation need `torch` and `transformers`
(CPU wheels from PyPI are enough). A test whose package is missing is skipped with
a message naming the package.

Regenerate the fixture with tools/train/make_fixture.py (see the model card).
"""
import importlib
import json
import os
import struct

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "models", "macattn-ref")
FIXTURE = os.path.join(ROOT, "tests", "python", "fixtures", "ref_greedy.json")
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "generation_config.json", "MODEL_CARD.md", "loss.png"]


def need(*names):
    mods = []
    for name in names:
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            pytest.skip(f"package '{name}' is not installed: pip install {name} to run this test")
    return mods[0] if len(mods) == 1 else mods


def config():
    with open(os.path.join(MODEL, "config.json")) as f:
        return json.load(f)


def fixture():
    with open(FIXTURE) as f:
        return json.load(f)


def safetensors_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def expected_shapes(c):
    h, d = c["hidden_size"], c["head_dim"]
    q, kv, ffn = c["num_attention_heads"] * d, c["num_key_value_heads"] * d, c["intermediate_size"]
    shapes = {"model.embed_tokens.weight": [c["vocab_size"], h], "model.norm.weight": [h]}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": [q, h], p + "self_attn.k_proj.weight": [kv, h],
            p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, q],
            p + "mlp.gate_proj.weight": [ffn, h], p + "mlp.up_proj.weight": [ffn, h],
            p + "mlp.down_proj.weight": [h, ffn],
            p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h]})
    if not c.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = [c["vocab_size"], h]
    return shapes


def test_files_present_and_small():
    for f in FILES:
        assert os.path.isfile(os.path.join(MODEL, f)), f"missing models/macattn-ref/{f}"
    total = sum(os.path.getsize(os.path.join(MODEL, f)) for f in os.listdir(MODEL))
    assert os.path.getsize(os.path.join(MODEL, "model.safetensors")) <= 16_000_000
    assert total <= 17_000_000, f"models/macattn-ref is {total} bytes"


def test_config_is_long_context_gqa_llama():
    c = config()
    assert c["model_type"] == "llama" and c["architectures"] == ["LlamaForCausalLM"]
    assert c["head_dim"] in (64, 128)
    assert c["num_attention_heads"] % c["num_key_value_heads"] == 0
    assert c["num_attention_heads"] // c["num_key_value_heads"] >= 4
    assert c["max_position_embeddings"] >= 16384
    assert 4096 <= c["vocab_size"] <= 8192
    assert c["hidden_act"] == "silu"
    theta = c.get("rope_parameters", {}).get("rope_theta", c.get("rope_theta"))
    assert theta == c["rope_theta"] and theta >= 100000


def test_safetensors_shapes_match_config():
    c = config()
    header = safetensors_header(os.path.join(MODEL, "model.safetensors"))
    got = {k: v["shape"] for k, v in header.items()}
    assert got == expected_shapes(c)
    assert {v["dtype"] for v in header.values()} == {"BF16"}


def test_card_records_fixture_continuation():
    fx = fixture()
    with open(os.path.join(MODEL, "MODEL_CARD.md")) as f:
        card = f.read()
    assert json.dumps(fx["greedy_ids"]) in card
    assert json.dumps(fx["prompt_ids"]) in card
    assert fx["greedy_text"] in card


def test_tokenizer_round_trip():
    tokenizers = need("tokenizers")
    tok = tokenizers.Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    c = config()
    assert tok.get_vocab_size() == c["vocab_size"]
    assert tok.token_to_id("<|begin_of_text|>") == c["bos_token_id"]
    assert tok.token_to_id("<|end_of_text|>") == c["eos_token_id"]
    texts = ["Hello, world! 12345 numbers split in threes: 1234567.\n",
             "def f(x):\n\treturn x ** 2  # comment\n\n\n   trailing   spaces   \n",
             "Unicode: na\u00efve caf\u00e9 \u2014 \u65e5\u672c\u8a9e \U0001F600 \x00\x7f",
             fixture()["prompt"]]
    for text in texts:
        enc = tok.encode(text)
        assert enc.ids[0] == c["bos_token_id"]
        assert max(enc.ids) < c["vocab_size"]
        assert tok.decode(enc.ids, skip_special_tokens=True) == text
    assert tok.encode(fixture()["prompt"]).ids == fixture()["prompt_ids"]


@pytest.fixture(scope="module")
def hf():
    torch, transformers = need("torch", "transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(MODEL)
    return torch, model, tok


def test_transformers_load_and_shapes(hf):
    torch, model, tok = hf
    c = config()
    sd = model.state_dict()
    for name, shape in expected_shapes(c).items():
        assert list(sd[name].shape) == shape, name
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(int(torch.tensor(s).prod()) for s in expected_shapes(c).values())
    ids = torch.tensor([fixture()["prompt_ids"]])
    with torch.no_grad():
        out = model(ids, use_cache=True)
    assert out.logits.shape == (1, ids.shape[1], c["vocab_size"])
    k = out.past_key_values.layers[0].keys if hasattr(out.past_key_values, "layers") else out.past_key_values[0][0]
    assert tuple(k.shape) == (1, c["num_key_value_heads"], ids.shape[1], c["head_dim"])
    assert tok("Hello").input_ids[0] == c["bos_token_id"]


def test_fixture_logits_and_greedy_continuation(hf):
    torch, model, tok = hf
    fx = fixture()
    ids = torch.tensor([fx["prompt_ids"]])
    assert tok(fx["prompt"]).input_ids == fx["prompt_ids"]
    with torch.no_grad():
        last = model(ids).logits[0, -1]
    top = last.topk(10)
    assert top.indices.tolist()[:3] == fx["last_logits_top10"]["ids"][:3]
    ref = torch.tensor(fx["last_logits_top10"]["values"])
    assert torch.allclose(last[fx["last_logits_top10"]["ids"]], ref, atol=2e-3), (top, ref)
    # greedy, step by step, without generate() so that generation-config defaults cannot interfere
    seq = ids
    out = []
    with torch.no_grad():
        for _ in range(len(fx["greedy_ids"])):
            nxt = int(model(seq).logits[0, -1].argmax())
            out.append(nxt)
            seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    assert out == fx["greedy_ids"]
    assert tok.decode(out) == fx["greedy_text"]
