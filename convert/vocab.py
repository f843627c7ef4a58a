"""Tokenizer files → GGUF vocabulary for the SentencePiece Gemmas (1, 2, 3, 3n); docs/converter-spec.md §2.1.

The token list reproduces llama.cpp's reference (``_create_vocab_sentencepiece``): ``vocab_size`` slots
pre-filled with ``[PADi]``/UNUSED, SentencePiece pieces with their scores and types, ``added_tokens.json``
as USER_DEFINED, ``tokenizer_config.json`` ``added_tokens_decoder`` entries as CONTROL (special or
special-looking) or USER_DEFINED. Special ids, add-bos/eos flags and the chat template come from
gguf-py's ``SpecialVocab`` — the same code the reference runs — so metadata matches it key for key.

Deliberate extensions (they only change files the reference would get wrong):
* transformers-v5 ``tokenizer_config.json`` files no longer carry ``added_tokens_decoder``; then the
  ``added_tokens`` of ``tokenizer.json`` are applied the same way, so chat markers such as
  ``<start_of_turn>`` become CONTROL tokens;
* bos/eos/unk/pad ids are always written (llama.cpp's SPM defaults 1/2/0 are wrong for Gemma), taken
  from the SentencePiece model when the tokenizer files do not name them;
* ``eot_token_id`` is the first non-EOS id of ``generation_config.json``'s ``eos_token_id`` list (Gemma 3:
  106); the reference writes none for Gemma 2/3 (the runtime then finds ``<end_of_turn>`` by its text)
  and a hard-coded 107 for Gemma 1, where we use the id of ``<end_of_turn>``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gguf import GGUFValueType

from convert.generations.base import Field, HParams, Vocab, boolean, string, u32

# GGUF token types (identical to SentencePiece's ModelProto.SentencePiece.Type numbers)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
EOT_TEXT = "<end_of_turn>"


class TokenizerError(ValueError):
    """The checkpoint's tokenizer files are missing or unreadable."""


def looks_special(text: str) -> bool:
    """Texts the reference treats as control tokens even when not flagged special (gemma{,-2})."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<｜") and text.endswith("｜>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TokenizerError(f"cannot read {path.name}: {error}") from None


def spm_token_table(directory: Path, vocab_size: int | None) -> tuple[list[str], list[float], list[int], Any]:
    """(tokens, scores, types, SentencePieceProcessor) as the reference builds them."""
    from sentencepiece import SentencePieceProcessor

    model_path = directory / "tokenizer.model"
    if not model_path.is_file():
        raise TokenizerError(f"{directory} has no tokenizer.model (SentencePiece model required for this generation)")
    processor = SentencePieceProcessor()
    try:
        processor.LoadFromFile(str(model_path))
    except (OSError, RuntimeError) as error:
        raise TokenizerError(f"cannot read tokenizer.model: {error}") from None

    n = int(vocab_size or processor.vocab_size())
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = [-10000.0] * n
    types = [UNUSED] * n
    for token_id in range(min(n, processor.vocab_size())):
        if processor.IsUnknown(token_id):
            kind = UNKNOWN
        elif processor.IsControl(token_id):
            kind = CONTROL
        elif processor.IsUnused(token_id):
            kind = UNUSED
        elif processor.IsByte(token_id):
            kind = BYTE
        else:
            kind = NORMAL
        tokens[token_id] = processor.IdToPiece(token_id)
        scores[token_id] = processor.GetScore(token_id)
        types[token_id] = kind

    added = directory / "added_tokens.json"
    if added.is_file():
        for text, token_id in _read_json(added).items():
            if token_id < n:
                tokens[token_id], scores[token_id], types[token_id] = text, -1000.0, USER_DEFINED

    for token_id, content, special in _added_token_entries(directory):
        if token_id >= n:
            continue
        if special or looks_special(content):
            types[token_id] = CONTROL
        else:
            content = content.replace("\u2581", " ")
            types[token_id] = USER_DEFINED
        tokens[token_id], scores[token_id] = content, -1000.0
    return tokens, scores, types, processor


def _added_token_entries(directory: Path) -> list[tuple[int, str, bool]]:
    """``added_tokens_decoder`` of tokenizer_config.json, else (v5 files) ``added_tokens`` of tokenizer.json."""
    config_path = directory / "tokenizer_config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    decoder = config.get("added_tokens_decoder")
    if decoder:
        return [(int(k), v["content"], bool(v.get("special"))) for k, v in decoder.items()]
    tokenizer_path = directory / "tokenizer.json"
    if tokenizer_path.is_file():
        added = _read_json(tokenizer_path).get("added_tokens") or []
        return [(int(t["id"]), t["content"], bool(t.get("special"))) for t in added]
    return []


def special_fields(directory: Path, n_tokens: int) -> list[Field]:
    """Special ids, add_*_token flags and chat template(s), computed by gguf-py's SpecialVocab."""
    import gguf

    special = gguf.SpecialVocab(directory, n_vocab=n_tokens)
    scratch = gguf.GGUFWriter(None, "scratch")
    special.add_to_gguf(scratch, quiet=True)
    return [
        Field(key, value.value, value.type, value.sub_type)
        for key, value in scratch.kv_data[0].items()
        if key != "general.architecture"
    ]


def sentencepiece_vocab(checkpoint: Any, hp: HParams) -> Vocab:
    """The ``llama`` (SentencePiece) GGUF vocabulary of a Gemma 1/2/3/3n checkpoint directory."""
    directory = Path(checkpoint.directory)
    tokens, scores, types, processor = spm_token_table(directory, hp.get("vocab_size"))
    fields = [
        string("tokenizer.ggml.model", "llama"),
        string("tokenizer.ggml.pre", "default"),
        Field("tokenizer.ggml.tokens", tokens, GGUFValueType.ARRAY, GGUFValueType.STRING),
        Field("tokenizer.ggml.scores", scores, GGUFValueType.ARRAY, GGUFValueType.FLOAT32),
        Field("tokenizer.ggml.token_type", types, GGUFValueType.ARRAY, GGUFValueType.INT32),
    ]
    fields += special_fields(directory, len(tokens))
    present = {f.key for f in fields}
    for key, spm_id in (
        ("tokenizer.ggml.bos_token_id", processor.bos_id()),
        ("tokenizer.ggml.eos_token_id", processor.eos_id()),
        ("tokenizer.ggml.unknown_token_id", processor.unk_id()),
        ("tokenizer.ggml.padding_token_id", processor.pad_id()),
    ):
        if key not in present and 0 <= spm_id < len(tokens):
            fields.append(u32(key, spm_id))
    fields += end_of_turn_fields(directory, {f.key: f.value for f in fields}, len(tokens))
    fields.append(boolean("tokenizer.ggml.add_space_prefix", False))
    return Vocab(n_tokens=len(tokens), fields=fields)


def end_of_turn_fields(directory: Path, written: dict[str, Any], n_tokens: int) -> list[Field]:
    """``eot_token_id`` from ``generation_config.json``: its ``eos_token_id`` list names the tokens that end a
    reply (Gemma 3: ``[1, 106]``, 106 = ``<end_of_turn>``); the first one that is not the EOS is the EOT."""
    path = directory / "generation_config.json"
    if "tokenizer.ggml.eot_token_id" in written or not path.is_file():
        return []
    ids = _read_json(path).get("eos_token_id")
    if not isinstance(ids, list):
        return []
    eos = written.get("tokenizer.ggml.eos_token_id")
    others = [i for i in ids if isinstance(i, int) and i != eos and 0 <= i < n_tokens]
    return [u32("tokenizer.ggml.eot_token_id", others[0])] if others else []


def sentencepiece_vocab_with_eot(checkpoint: Any, hp: HParams) -> Vocab:
    """Gemma 1: the SentencePiece vocabulary, and ``eot_token_id`` = ``<end_of_turn>``'s id when
    ``generation_config.json`` does not name it (the reference always writes 107 for Gemma 1)."""
    vocab = sentencepiece_vocab(checkpoint, hp)
    tokens = next(f.value for f in vocab.fields if f.key == "tokenizer.ggml.tokens")
    if EOT_TEXT in tokens and not any(f.key == "tokenizer.ggml.eot_token_id" for f in vocab.fields):
        vocab.fields.append(u32("tokenizer.ggml.eot_token_id", tokens.index(EOT_TEXT)))
    return vocab
