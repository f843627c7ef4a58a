"""Tiny seeded Gemma checkpoints for converter tests, cached by a hash of their recipe.

Pattern (reuse it for new generations):

    recipe = {"arch": "Gemma2ForCausalLM", "config": {...}, "seed": 0}
    model_dir = cached_dir("hf", recipe, lambda d: build_checkpoint(d, Gemma2ForCausalLM, Gemma2Config(**...), seed))

``cached_dir`` builds into a temporary sibling directory and renames it into place, so an interrupted
build never leaves a half-written cache entry; a recipe change changes the hash and rebuilds.
Tokenizer: ``write_tiny_tokenizer`` trains a ~400-piece SentencePiece BPE model (byte fallback, Gemma's
special ids pad 0 / eos 1 / bos 2 / unk 3, Gemma's chat markers as control symbols) and writes
``tokenizer.model``, ``tokenizer_config.json`` (with ``added_tokens_decoder`` as Google's files have
it) and a chat template.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

VOCAB_SIZE = 400
CONTROL_SYMBOLS = ["<mask>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def cache_root() -> Path:
    root = Path(os.environ.get("GEMMA_EDGE_TEST_CACHE", Path.home() / ".cache" / "gemma-edge" / "test"))
    path = root / "convert"
    path.mkdir(parents=True, exist_ok=True)
    return path


def recipe_key(recipe: Any) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_dir(kind: str, recipe: Any, build: Callable[[Path], None]) -> Path:
    """``cache/convert/<kind>-<hash(recipe)>``, built once by ``build(directory)``."""
    target = cache_root() / f"{kind}-{recipe_key(recipe)}"
    if (target / ".complete").exists():
        return target
    staging = target.with_name(f"{target.name}.{os.getpid()}.building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        build(staging)
        (staging / ".complete").write_text(json.dumps(recipe, sort_keys=True, default=str))
        if target.exists() and not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)  # a leftover of an interrupted older layout
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / ".complete").exists():  # else a concurrent build finished first: use it
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def cached_file(kind: str, recipe: Any, suffix: str, build: Callable[[Path], None]) -> Path:
    """``cache/convert/<kind>-<hash(recipe)><suffix>``, built once by ``build(path)``."""
    target = cache_root() / f"{kind}-{recipe_key(recipe)}{suffix}"
    if target.exists():
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}.building")
    try:
        build(staging)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return target


def _corpus(seed: int = 0, lines: int = 400) -> list[str]:
    rng = random.Random(seed)
    syllables = ["ga", "me", "ma", "to", "ken", "ize", "ro", "la", "pi", "nu", "ver", "sa", "li", "on", "dre"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(300)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))) + rng.choice([".", "!", "?"])
            for _ in range(lines)]


def write_tiny_tokenizer(directory: Path, vocab_size: int = VOCAB_SIZE) -> None:
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(_corpus()), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(directory / "tokenizer"), vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        control_symbols=CONTROL_SYMBOLS, add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, minloglevel=2, num_threads=1,
    )
    corpus.unlink()
    (directory / "tokenizer.vocab").unlink()
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", *CONTROL_SYMBOLS]
    config = {
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
        "mask_token": "<mask>", "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": {
            str(i): {"content": text, "special": True, "lstrip": False, "rstrip": False,
                     "normalized": False, "single_word": False}
            for i, text in enumerate(pieces)
        },
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def perturb(model: Any, seed: int) -> None:
    """Make every weight matter: default norm inits (0 or 1) would hide a missing or extra +1."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float32)
            if parameter.dim() <= 1 or "norm" in name:
                parameter.add_(0.1 * noise.to(parameter.dtype))
            else:
                parameter.copy_((0.05 * noise).to(parameter.dtype))


def build_checkpoint(directory: Path, model_class: Any, config: Any, seed: int, dtype: str = "float32") -> None:
    """A seeded random ``model_class(config)`` saved as safetensors next to the tiny tokenizer."""
    import torch

    torch.manual_seed(seed)
    model = model_class(config).eval()
    perturb(model, seed)
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(directory)
    write_tiny_tokenizer(directory)


def linked_copy(source: Path, directory: Path, edit: Callable[[dict], None] | None = None,
                drop: tuple[str, ...] = (), edited: str = "config.json") -> Path:
    """A variant of the checkpoint ``source``: its files linked (not copied) into ``directory`` except those
    in ``drop``, the JSON file ``edited`` rewritten after ``edit(its content)``."""
    directory.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name not in drop + (edited,):
            (directory / item.name).symlink_to(item)
    content = json.loads((source / edited).read_text())
    if edit is not None:
        edit(content)
    (directory / edited).write_text(json.dumps(content))
    return directory


def token_ids(n: int = 64, seed: int = 0, low: int = 16, high: int = VOCAB_SIZE) -> list[int]:
    """``<bos>`` then n-1 random non-special ids (longer than the tiny sliding windows)."""
    rng = random.Random(seed)
    return [2] + [rng.randrange(low, high) for _ in range(n - 1)]
