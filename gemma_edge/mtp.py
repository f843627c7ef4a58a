"""Gemma 4 MTP drafters (`--spec mtp[:MODEL]`): which GGUF drafts for a target, and whether it can.

An MTP drafter (`Gemma4AssistantForCausalLM` converted to llama.cpp's `gemma4-assistant` architecture)
is a few decoder layers with no KV cache of their own: they attend to the target's KV cache (its last
sliding and last full layer) and read the target's final hidden state, so a drafter fits exactly one
target shape. `read_drafter` checks that from the two GGUF headers before anything is loaded, naming
the first thing that differs; the runtime half is gemma_edge.llama.mtp.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gemma_edge.errors import GemmaEdgeError, InvalidModelError
from gemma_edge.gguf_file import GGUFFile
from gemma_edge.gguf_keys import check_vocabulary
from gemma_edge.model import _per_layer
from gemma_edge.speculative import mtp_drafter_name

DRAFTER_ARCHITECTURE = "gemma4-assistant"
TARGET_ARCHITECTURE = "gemma4"


class MtpDrafterError(GemmaEdgeError):
    """`--spec mtp` without a drafter, or a drafter that cannot draft for the target."""


@dataclass(frozen=True)
class DrafterFacts:
    path: Path
    name: str
    n_vocab: int
    target_hidden_size: int  # embedding_length_out: the hidden size of the target it was trained with


# What must agree between drafter and target, as (what it is, drafter key, target key): the drafter's
# queries meet the target's keys in its last layer of each kind, and it reads the target's hidden state.
_SHAPE_KEYS = (
    ("hidden size", "embedding_length_out", "embedding_length"),
    ("key length of full-attention layers", "attention.key_length", "attention.key_length"),
    ("key length of sliding-window layers", "attention.key_length_swa", "attention.key_length_swa"),
    ("sliding window", "attention.sliding_window", "attention.sliding_window"),
)


def drafter_name(spec: str, model_path: Path) -> Path:
    """The drafter file a resolved "mtp[:MODEL]" mode names for the model at `model_path`."""
    name = mtp_drafter_name(spec)
    if not name:
        raise MtpDrafterError(f"no MTP drafter is known for {model_path.name}: name one with --spec mtp:DRAFTER.gguf "
                              f"(a {DRAFTER_ARCHITECTURE} GGUF converted from the model's assistant checkpoint)")
    path = Path(name).expanduser()
    if not path.is_file():
        raise MtpDrafterError(f"MTP drafter {name}: no such file")
    return path


def read_drafter(path: str | Path, target: str | Path) -> DrafterFacts:
    """Check that the GGUF at `path` is an MTP drafter for the target GGUF `target` (MtpDrafterError
    naming the first mismatch; InvalidModelError for a file that is not a well-formed GGUF)."""
    drafter = GGUFFile(path)
    try:
        if drafter.architecture != DRAFTER_ARCHITECTURE:
            raise MtpDrafterError(f"{drafter.path} is not an MTP drafter: its architecture is "
                                  f"{drafter.architecture or '?'!r}, not {DRAFTER_ARCHITECTURE!r}")
        n_vocab = drafter.array_length("tokenizer.ggml.tokens")
        if not n_vocab:
            raise InvalidModelError(f"{drafter.path}: GGUF has no tokenizer vocabulary")
        check_vocabulary(drafter)
        model = GGUFFile(target)
        try:
            _check_pair(drafter, model, n_vocab)
        finally:
            model.close()
        return DrafterFacts(path=drafter.path, name=str(drafter.get("general.name") or drafter.path.stem),
                            n_vocab=n_vocab, target_hidden_size=int(drafter.arch_get("embedding_length_out")))
    finally:
        drafter.close()


def _check_pair(drafter: GGUFFile, model: GGUFFile, n_vocab: int) -> None:
    who = f"MTP drafter {drafter.path.name} does not fit {model.path.name}"
    if model.architecture != TARGET_ARCHITECTURE:
        raise MtpDrafterError(f"{who}: MTP drafters draft for Gemma 4 models ({TARGET_ARCHITECTURE!r}), "
                              f"this model is {model.architecture!r}")
    target_vocab = model.array_length("tokenizer.ggml.tokens")
    if n_vocab != target_vocab:
        raise MtpDrafterError(f"{who}: vocabulary of {n_vocab:,} tokens, the model's has {target_vocab:,}")
    for what, drafter_key, model_key in _SHAPE_KEYS:
        mine, theirs = drafter.arch_get(drafter_key), model.arch_get(model_key)
        if mine is None or mine != theirs:
            raise MtpDrafterError(f"{who}: {what} {mine if mine is not None else 'missing'} "
                                  f"({drafter_key}), the model's is {theirs}")
    # llama.cpp shares the target's last layer with the drafter's full-attention layers and the one before
    # it with the sliding-window ones (llama-model.cpp, LLM_ARCH_GEMMA4_ASSISTANT)
    sliding = [bool(x) for x in model.array(f"{model.architecture}.attention.sliding_window_pattern")]
    if len(sliding) < 2 or sliding[-2:] != [True, False]:
        raise MtpDrafterError(f"{who}: llama.cpp's drafter reads the model's last two layers as a sliding-window "
                              "and a full-attention layer, and this model's are not")
    heads = _per_layer(model, "attention.head_count_kv", len(sliding))
    drafter_sliding = [bool(x) for x in drafter.array(f"{drafter.architecture}.attention.sliding_window_pattern")]
    drafter_heads = _per_layer(drafter, "attention.head_count_kv", len(drafter_sliding))
    for is_sliding, n_heads in zip(drafter_sliding, drafter_heads):
        expected = heads[-2] if is_sliding else heads[-1]
        if n_heads != expected:
            kind = "sliding-window" if is_sliding else "full-attention"
            raise MtpDrafterError(f"{who}: {n_heads} KV heads in its {kind} layers, the model's are {expected}")
