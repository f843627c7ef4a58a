"""Tiny seeded random Gemma 4 checkpoints (dense 31B-like, E2B/E4B-like, MoE 26B-A4B-like), built with
transformers and cached on disk, plus a session-wide tiny Gemma 4 GGUF with the real Gemma 4 vocabulary.

The checkpoints are shaped like the real families (per-layer KV heads and head dims, K reused as V, KV
sharing, per-layer embeddings, double-wide MLP, experts) but small enough to build and run in seconds,
with a sliding window small enough that most of a 80-token prompt lies beyond it.

Their tokenizer comes from the real Gemma 4 vocabulary (the vocab-only GGUF llama.cpp ships): `vocab="real"`
writes it back as `tokenizer.json` (262,144 tokens with all merges), `vocab="tiny"` keeps only its first
512 tokens and the merges among them, so token texts, ids and types of the tiny vocabulary are a prefix of
the real one and both can be checked against that GGUF.

`tiny_gemma4_gguf(kind, outtype)` is the entry point for end-to-end tests that need a real Gemma 4 GGUF
(`<|channel>`, `<|tool_call>`, `<|"|>` … are real tokens). Checkpoints are cached under the test cache dir,
keyed by a hash of their recipe; the GGUF is converted by the current converter once per test session.
"""
from __future__ import annotations

import atexit
import copy
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tests.convert.tiny import cached_dir

BUILDER_VERSION = 1  # part of every recipe: bump it when the way checkpoints are built changes
TINY_VOCAB_SIZE = 512

# The seven markers llama.cpp's reference converter types USER_DEFINED so they render as text.
VISIBLE_MARKERS = ("<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
                   "<tool_response|>", '<|"|>')

_DENSE = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1,
    attention_k_eq_v=True, sliding_window=16, max_position_embeddings=256,
    layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
    hidden_size_per_layer_input=0, final_logit_softcapping=30.0,
)
# Gemma 4 families, scaled down (docs/converter-spec.md §9.3). Values are transformers config kwargs.
RECIPES: dict[str, dict] = {
    "dense": _DENSE,
    "moe": {**_DENSE, "enable_moe_block": True, "num_experts": 4, "top_k_experts": 2,
            "moe_intermediate_size": 32},
    "e2b": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=10, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, global_head_dim=32, sliding_window=16,
        max_position_embeddings=256,
        layer_types=(["sliding_attention"] * 4 + ["full_attention"]) * 2,
        num_kv_shared_layers=5, hidden_size_per_layer_input=16, use_double_wide_mlp=True,
        final_logit_softcapping=30.0,
    ),
}
# A smaller E-style layout for the real-vocabulary GGUF: its per-layer table has 262,144 rows.
REAL_VOCAB_OVERRIDES = {"e2b": dict(num_hidden_layers=6, num_kv_shared_layers=3, hidden_size_per_layer_input=8,
                                    layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2)}


def perturb_(model, seed: int, router_std: float = 1.0) -> None:
    """Random weights that expose conversion mistakes: matrices ~ N(0, 0.05); every 1-D weight (norms,
    scales) 1 + N(0, 0.1), so a missing or extra +1 shift changes the logits; layer scalars in [0.8, 1.0];
    MoE router projections ~ N(0, router_std) so the top-k choice is far from ties."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if param.ndim <= 1:
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=gen))
            else:
                std = router_std if name.endswith("router.proj.weight") else 0.05
                param.copy_(std * torch.randn(param.shape, generator=gen))
        for name, buf in sorted(model.named_buffers()):
            if name.endswith("layer_scalar"):
                buf.copy_(0.8 + 0.2 * torch.rand(buf.shape, generator=gen))


def save_checkpoint(model, out: Path, dtype: str) -> None:
    import torch

    model.to(getattr(torch, dtype)).save_pretrained(out, safe_serialization=True)


# ---------------------------------------------------------------- tokenizer from the real vocabulary


def real_vocab_gguf() -> Path:
    """The real Gemma 4 vocab-only GGUF from the reference folder (skip/fail like the conftest fixture)."""
    from tests.conftest import require_reference

    return require_reference("vocab") / "ggml-vocab-gemma-4.gguf"


_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf_metadata(path: Path) -> dict:
    """All key/values of a GGUF file (strings decoded, arrays as lists). A direct parse of the header:
    gguf.GGUFReader takes ~15 s to index the 777k strings of the real vocabulary, this takes ~1 s."""
    import struct

    data = path.read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        pos += n
        return data[pos - n:pos].decode("utf-8")

    def value(kind: int):
        nonlocal pos
        if kind == 8:
            return string()
        if kind == 9:
            elem, count = take("<I"), take("<Q")
            if elem in _GGUF_SCALARS:
                fmt = _GGUF_SCALARS[elem]
                size = struct.calcsize(fmt)
                items = list(struct.unpack_from(f"<{count}{fmt[1]}", data, pos))
                pos += size * count
                return items
            return [value(elem) for _ in range(count)]
        return take(_GGUF_SCALARS[kind])

    assert data[:4] == b"GGUF", path
    pos = 8
    take("<Q")  # tensor count
    n_kv = take("<Q")
    out = {}
    for _ in range(n_kv):
        key = string()
        out[key] = value(take("<I"))
    return out


@functools.lru_cache(maxsize=2)
def read_real_vocab(path: Path) -> dict:
    """Tokens, types, merges, special ids and chat template of a vocab GGUF, as plain Python values."""
    meta = read_gguf_metadata(path)
    key = lambda name: meta["tokenizer.ggml." + name]  # noqa: E731
    return {
        "tokens": key("tokens"), "types": key("token_type"), "merges": key("merges"),
        "bos": key("bos_token_id"), "eos": key("eos_token_id"), "unk": key("unknown_token_id"),
        "pad": key("padding_token_id"), "mask": key("mask_token_id"),
        "chat_template": meta["tokenizer.chat_template"],
    }


def write_tokenizer_files(vocab: dict, out: Path, n_tokens: int | None = None) -> None:
    """tokenizer.json / tokenizer_config.json / chat_template.jinja shaped like the official Gemma 4 repos:
    a byte-fallback BPE whose special markers (CONTROL in the GGUF, plus the seven visible markers) are
    special added tokens and named in tokenizer_config.json, as transformers reads them."""
    tokens = vocab["tokens"] if n_tokens is None else vocab["tokens"][:n_tokens]
    ids = {t: i for i, t in enumerate(tokens)}
    merges = [m.split(" ") for m in vocab["merges"]]
    if n_tokens is not None:
        merges = [(a, b) for a, b in merges if a in ids and b in ids and a + b in ids]
    special = [i for i, t in enumerate(tokens) if vocab["types"][i] == 3 or t in VISIBLE_MARKERS]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i in special],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [vocab["bos"]], "tokens": ["<bos>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": ids, "merges": merges},
    }
    named = {"bos_token": vocab["bos"], "eos_token": vocab["eos"], "unk_token": vocab["unk"],
             "pad_token": vocab["pad"], "mask_token": vocab["mask"]}
    config = {name: tokens[i] for name, i in named.items()}
    config["extra_special_tokens"] = [tokens[i] for i in special if i not in named.values()]
    config.update(tokenizer_class="GemmaTokenizer", add_bos_token=True,
                  model_max_length=1_000_000, padding_side="left")
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")
    (out / "chat_template.jinja").write_text(vocab["chat_template"], encoding="utf-8")


# ---------------------------------------------------------------- checkpoints


def recipe_for(kind: str, vocab: str = "tiny", config_format: str = "per_layer_config",
               dtype: str = "bfloat16", seed: int = 0) -> dict:
    params = copy.deepcopy(RECIPES[kind])
    if vocab == "real":
        params.update(REAL_VOCAB_OVERRIDES.get(kind, {}))
    return {"builder": BUILDER_VERSION, "kind": kind, "vocab": vocab, "config_format": config_format, "dtype": dtype, "seed": seed,
            "params": params}


def build_model(recipe: dict, n_vocab: int):
    """The transformers model of a recipe, perturbed with its seed (float32)."""
    import torch
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    config = Gemma4TextConfig(vocab_size=n_vocab, vocab_size_per_layer_input=n_vocab, pad_token_id=0,
                              eos_token_id=1, bos_token_id=2, **recipe["params"])
    torch.manual_seed(recipe["seed"])
    model = Gemma4ForCausalLM(config).eval()
    perturb_(model, recipe["seed"])
    return model


def to_legacy_config_format(config_path: Path) -> None:
    """Rewrite a transformers-5.23 config (full-layer head dim and KV heads in `per_layer_config`) in the
    older format with top-level `global_head_dim` / `num_global_key_value_heads`."""
    config = json.loads(config_path.read_text())
    overrides = next(iter(config.pop("per_layer_config").values()))
    config["global_head_dim"] = overrides["head_dim"]
    if "num_key_value_heads" in overrides:
        config["num_global_key_value_heads"] = overrides["num_key_value_heads"]
    config_path.write_text(json.dumps(config, indent=2))


def gemma4_checkpoint(kind: str = "dense", vocab: str = "tiny", config_format: str = "per_layer_config",
                      dtype: str = "bfloat16", seed: int = 0) -> Path:
    """A cached Hugging Face checkpoint directory (config, safetensors, tokenizer) for `kind` in RECIPES.

    vocab: "tiny" (512-token prefix of the real vocabulary) or "real" (all 262,144 tokens).
    config_format: "per_layer_config" (as transformers 5.23 saves it) or "global_head_dim" (older files).
    """
    recipe = recipe_for(kind, vocab, config_format, dtype, seed)
    source = real_vocab_gguf()

    def build(out: Path) -> None:
        real = read_real_vocab(source)
        n_tokens = None if vocab == "real" else TINY_VOCAB_SIZE
        write_tokenizer_files(real, out, n_tokens)
        model = build_model(recipe, n_tokens or len(real["tokens"]))
        save_checkpoint(model, out, dtype)
        if config_format == "global_head_dim":
            to_legacy_config_format(out / "config.json")

    return cached_dir(f"gemma4-{kind}-{vocab}-{config_format}-{dtype}", recipe, build)


@functools.cache
def tiny_gemma4_gguf(kind: str = "e2b", outtype: str = "f32") -> Path:
    """A tiny random Gemma 4 GGUF (kind "e2b" or "dense") with the real Gemma 4 vocabulary, converted by
    our converter once per test session (the checkpoint itself is cached on disk); llama.cpp loads it.
    Skips (fails in CI) like the ``gemma4_vocab_path`` fixture when the reference vocabulary is missing."""
    if kind not in ("e2b", "dense"):
        raise ValueError(f"kind must be 'e2b' or 'dense', not {kind!r}")
    checkpoint = gemma4_checkpoint(kind, vocab="real")
    directory = Path(tempfile.mkdtemp(prefix=f"tiny-gemma4-{kind}-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return convert_with_ours(checkpoint, directory / f"tiny-gemma4-{kind}-{outtype}.gguf", outtype)


def convert_with_ours(checkpoint: Path, out: Path, outtype: str) -> Path:
    """Our converter's text GGUF, through its command line entry (the same path users take); the
    projector of a multimodal checkpoint is the mmproj tests' business (--no-mmproj)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "convert", "convert", str(checkpoint), "-o", str(out),
                             "--type", outtype, "--force", "--quiet", "--no-mmproj"],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if result.returncode != 0:
        raise RuntimeError(f"our converter failed on {checkpoint.name}: {result.stderr.strip()[-2000:]}")
    return out


def conversion_refusal(checkpoint: Path, out: Path) -> str:
    """Our converter's one-line error on ``checkpoint`` (asserted: exit code 2, one stderr line, nothing written)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "convert", "convert", str(checkpoint), "-o", str(out),
                             "--type", "f32"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 2, result.stderr
    assert not out.exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def token_ids(n: int, n_vocab: int, seed: int = 1, bos: int = 2, low: int = 107) -> list[int]:
    """`bos` then n−1 seeded random ids of ordinary tokens (ids ≥ `low`, past the Gemma 4 specials)."""
    rng = np.random.default_rng(seed)
    return [bos] + [int(i) for i in rng.integers(low, n_vocab, size=n - 1)]
