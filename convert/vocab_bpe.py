"""``tokenizer.json`` (byte-fallback BPE) → the ``gemma4`` GGUF vocabulary; docs/converter-spec.md §2.2.

llama.cpp's reference converter builds this vocabulary through transformers (``LlamaHfVocab``); this module
reads the same facts from the files themselves:

* token ids 0..n_base−1 are ``model.vocab``; then ``added_tokens`` with ids ≥ n_base, in id order;
* a token is BYTE if its text is ``<0xXX>``, CONTROL if it is one of the tokenizer's *special tokens* as
  transformers defines them (the ``*_token`` entries and ``extra_special_tokens`` /
  ``additional_special_tokens`` of ``tokenizer_config.json`` and ``special_tokens_map.json``), an added
  token past the base vocabulary that is not special is USER_DEFINED, everything else NORMAL;
* the seven Gemma 4 chat/tool markers are then typed USER_DEFINED, so llama.cpp renders them as text and
  the chat parser can read them (``<|channel>``, ``<|tool_call>``, ``<|"|>``, …);
* every score is −1000; merges are ``model.merges`` as "a b" strings (required by llama.cpp's gemma4
  tokenizer); special ids, add-bos/eos flags and the chat template come from gguf-py's ``SpecialVocab``
  (the code the reference runs), with ``add_bos_token`` forced true as the reference does (llama.cpp
  forces it for ``gemma4`` anyway).
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from gguf import GGUFValueType

from convert.generations.base import Field, HParams, Vocab, boolean, string
from convert.vocab import BYTE, CONTROL, NORMAL, USER_DEFINED, TokenizerError

# Rendered as text by llama.cpp (the reference converter's list), though special in transformers.
VISIBLE_MARKERS = frozenset({"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
                             "<tool_response|>", '<|"|>'})
SCORE = -1000.0
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_NAMED_SPECIALS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TokenizerError(f"cannot read {path.name}: {error}") from None


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def special_token_texts(config: dict[str, Any]) -> set[str]:
    """Texts transformers (5.x) lists in ``all_special_tokens`` for a tokenizer config: the named special
    tokens, any other ``*_token`` string entry (model-specific, e.g. ``eot_token``) and the extra ones."""
    texts = {_token_text(config.get(name)) for name in _NAMED_SPECIALS}
    texts |= {_token_text(value) for key, value in config.items() if key.endswith("_token")}
    for key in ("extra_special_tokens", "additional_special_tokens"):
        extra = config.get(key) or []
        values = extra.values() if isinstance(extra, dict) else extra
        texts |= {_token_text(value) for value in values}
    return {text for text in texts if text}


def read_tokenizer_json(directory: Path) -> dict[str, Any]:
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"{directory} has no tokenizer.json (Gemma 4 needs its BPE tokenizer)")
    return _read_json(path)


def bpe_token_table(directory: Path, tokenizer: dict[str, Any]) -> tuple[list[str], list[int]]:
    """(tokens, token types) of a byte-fallback BPE ``tokenizer.json``, typed as the reference types them."""
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback") or not isinstance(model.get("vocab"), dict):
        raise TokenizerError("tokenizer.json is not a byte-fallback BPE tokenizer, which the gemma4 vocabulary needs")

    config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (directory / name).is_file():
            config.update(_read_json(directory / name))
    base: dict[str, int] = model["vocab"]
    n_base = len(base)
    added = {int(t["id"]): t["content"] for t in tokenizer.get("added_tokens") or []}
    ids = {**base, **{text: token_id for token_id, text in added.items()}}
    special_ids = {ids[text] for text in special_token_texts(config) if text in ids}

    tokens = [""] * n_base
    for text, token_id in base.items():
        if not 0 <= token_id < n_base or tokens[token_id]:
            raise TokenizerError(f"tokenizer.json vocabulary ids are not 0..{n_base - 1} without gaps")
        tokens[token_id] = text
    types = [BYTE if _BYTE_TOKEN.fullmatch(text) else CONTROL if i in special_ids else NORMAL
             for i, text in enumerate(tokens)]
    for token_id in sorted(i for i in added if i >= n_base):
        if token_id != len(tokens):
            raise TokenizerError(f"tokenizer.json added token ids leave a gap before {token_id}")
        tokens.append(added[token_id])
        types.append(CONTROL if token_id in special_ids else USER_DEFINED)
    types = [USER_DEFINED if text in VISIBLE_MARKERS else kind for text, kind in zip(tokens, types)]
    return tokens, types


def bpe_merges(tokenizer: dict[str, Any]) -> list[str]:
    """``model.merges`` as "a b" strings; pairs (transformers ≥ 4.45) are joined with one space after
    encoding spaces inside a part as U+0120, as gguf-py does."""
    merges = (tokenizer.get("model") or {}).get("merges") or []
    if not merges:
        raise TokenizerError("tokenizer.json has no merges (llama.cpp's gemma4 tokenizer needs them)")
    if all(isinstance(m, str) for m in merges):
        return list(merges)
    if all(isinstance(m, list) and len(m) == 2 for m in merges):
        return [f"{a.replace(' ', chr(0x120))} {b.replace(' ', chr(0x120))}" for a, b in merges]
    raise TokenizerError("tokenizer.json merges are neither 'a b' strings nor [a, b] pairs")


def special_fields(directory: Path, tokenizer: dict[str, Any], n_tokens: int) -> list[Field]:
    """Special ids, add_*_token flags and chat template(s), computed by gguf-py's SpecialVocab.

    SpecialVocab parses tokenizer.json again, which for the real vocabulary (262,144 tokens, 514,906 merges)
    costs ~190 MB on top of ours; it only reads ``added_tokens`` and ``post_processor`` from it, so it runs
    on a temporary directory where tokenizer.json holds just those (every other file linked)."""
    import gguf

    slim = {"added_tokens": tokenizer.get("added_tokens") or [], "post_processor": tokenizer.get("post_processor"),
            "model": {"type": (tokenizer.get("model") or {}).get("type")}}
    with tempfile.TemporaryDirectory(prefix="gemma4-vocab-") as scratch_dir:
        scratch_path = Path(scratch_dir)
        for item in directory.iterdir():
            if item.name != "tokenizer.json":
                (scratch_path / item.name).symlink_to(item.resolve())
        (scratch_path / "tokenizer.json").write_text(json.dumps(slim), encoding="utf-8")
        special = gguf.SpecialVocab(scratch_path, load_merges=False, n_vocab=n_tokens)
    scratch = gguf.GGUFWriter(None, "scratch")
    special.add_to_gguf(scratch, quiet=True)
    return [Field(key, value.value, value.type, value.sub_type)
            for key, value in scratch.kv_data[0].items() if key != "general.architecture"]


def gemma4_vocab(checkpoint: Any, hp: HParams) -> Vocab:
    """The ``gemma4`` GGUF vocabulary of a Gemma 4 checkpoint directory."""
    directory = Path(checkpoint.directory)
    tokenizer = read_tokenizer_json(directory)
    tokens, types = bpe_token_table(directory, tokenizer)
    merges = bpe_merges(tokenizer)
    specials = special_fields(directory, tokenizer, len(tokens))
    del tokenizer  # the parsed JSON is several times the size of what the GGUF keeps
    fields = [
        string("tokenizer.ggml.model", "gemma4"),
        Field("tokenizer.ggml.tokens", tokens, GGUFValueType.ARRAY, GGUFValueType.STRING),
        Field("tokenizer.ggml.scores", [SCORE] * len(tokens), GGUFValueType.ARRAY, GGUFValueType.FLOAT32),
        Field("tokenizer.ggml.token_type", types, GGUFValueType.ARRAY, GGUFValueType.INT32),
        Field("tokenizer.ggml.merges", merges, GGUFValueType.ARRAY, GGUFValueType.STRING),
    ]
    fields += [f for f in specials if f.key != "tokenizer.ggml.add_bos_token"]
    fields += [boolean("tokenizer.ggml.add_space_prefix", False), boolean("tokenizer.ggml.add_bos_token", True)]
    return Vocab(n_tokens=len(tokens), fields=fields)
