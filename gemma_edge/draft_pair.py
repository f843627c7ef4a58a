"""Which draft model may draft for which target (`--spec draft:MODEL`), decided from the two GGUF headers
before either model is loaded.

The drafter hands the target token ids, so an id must mean the same token in both: every token of the
draft's vocabulary must have the same text bytes and type at the same id in the target's, and BOS, EOS
and EOT must be the same ids. The target may have more tokens after the shared ones (Gemma 3 4B–27B pad
the 262,144-token vocabulary of the 270M and 1B with unused tokens); the draft may not (it could draft
an id the target does not have). Scores are not compared: only the target tokenizes.

Drafting pays only when a drafted token costs much less than a target token; decoding on a CPU reads
every weight once per token, so a draft model whose weights are not smaller than the target's is
refused rather than allowed to make decoding slower.
"""
from __future__ import annotations

from gemma_edge.errors import DraftModelError, InsufficientMemoryError, InvalidModelError, ModelNotFoundError
from gemma_edge.gguf_file import GGUFFile
from gemma_edge.memory import memory_needed
from gemma_edge.model import ModelFacts, read_model_facts

TOKEN_TYPES = {1: "normal", 2: "unknown", 3: "control", 4: "user-defined", 5: "unused", 6: "byte"}
SPECIAL_IDS = ("bos", "eos", "eot")  # tokenizer.ggml.<name>_token_id
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre")


def vocabulary_difference(target: GGUFFile, draft: GGUFFile, target_name: str = "the target") -> str | None:
    """The first way `draft`'s vocabulary differs from `target`'s, as a phrase about the draft's (None:
    the same)."""
    tokens, draft_tokens = (g.string_bytes("tokenizer.ggml.tokens") for g in (target, draft))
    types, draft_types = (g.array("tokenizer.ggml.token_type") or [1] * len(t)
                          for g, t in ((target, tokens), (draft, draft_tokens)))
    shared = min(len(tokens), len(draft_tokens))
    if tokens[:shared] != draft_tokens[:shared] or types[:shared] != draft_types[:shared]:
        i = next(i for i in range(shared) if tokens[i] != draft_tokens[i] or types[i] != draft_types[i])
        return f"token {i} {_token(draft_tokens[i], draft_types[i])} differs from {target_name}'s " \
               f"{_token(tokens[i], types[i])}"
    if len(draft_tokens) > len(tokens):
        return (f"vocabulary has {len(draft_tokens):,} tokens, more than {target_name}'s {len(tokens):,} "
                f"(it could draft token {len(tokens)} {_token(draft_tokens[len(tokens)], draft_types[len(tokens)])})")
    for name in SPECIAL_IDS:
        key = f"tokenizer.ggml.{name}_token_id"
        if target.get(key) != draft.get(key):
            return f"{name.upper()} token id is {draft.get(key)}, {target_name}'s is {target.get(key)}"
    for key in TOKENIZER_KEYS:
        if target.get(key) != draft.get(key):
            return f"{key} is {draft.get(key)!r}, {target_name}'s is {target.get(key)!r}"
    return None


def _token(text: bytes, kind: int) -> str:
    shown = text.decode("utf-8", errors="replace")
    shown = repr(shown if len(shown) <= 40 else shown[:40] + "…")
    return f"{shown} ({TOKEN_TYPES.get(kind, f'type {kind}')})"


def read_draft_model(name: str, target: ModelFacts) -> ModelFacts:
    """The facts of the draft model `name` (a registry name or a GGUF path) after check_draft_pair."""
    from gemma_edge.registry import resolve

    try:
        facts = read_model_facts(resolve(name)[0])
    except InvalidModelError as e:
        raise DraftModelError(f"draft model {e}") from None
    except ModelNotFoundError as e:
        raise ModelNotFoundError(f"draft model {e}") from None
    check_draft_pair(target, facts)
    return facts


def check_draft_pair(target: ModelFacts, draft: ModelFacts) -> None:
    """Refuse a draft model that cannot draft for `target`: an embedding model, one not smaller, one
    of another vocabulary (DraftModelError naming the first difference)."""
    name = f"draft model {draft.path.name}"
    if draft.embeds:
        raise DraftModelError(f"{name} is an embedding model: it cannot draft text")
    if draft.weights_bytes >= target.weights_bytes:
        raise DraftModelError(
            f"{name} ({_mb(draft.weights_bytes)} of weights) is not smaller than the target {target.path.name} "
            f"({_mb(target.weights_bytes)}): drafting with it would make decoding slower; use a smaller draft "
            "model of the same vocabulary")
    target_file, draft_file = GGUFFile(target.path), GGUFFile(draft.path)
    try:
        difference = vocabulary_difference(target_file, draft_file, f"target {target.path.name}")
    finally:
        target_file.close()
        draft_file.close()
    if difference:
        raise DraftModelError(f"{name}'s {difference}: a draft model needs the target's vocabulary")


def check_pair_fits(target: ModelFacts, draft: ModelFacts, n_ctx: int, available: int) -> None:
    """Refuse the pair when both models' memory budgets (gemma_edge.memory: weights, KV caches of `n_ctx`
    tokens each, runtime) need more than `available` bytes (measured before the target was loaded)."""
    parts = [memory_needed(facts, n_ctx) for facts in (target, draft)]
    if sum(parts) > available:
        gb = 1 << 30
        raise InsufficientMemoryError(
            f"{target.path.name} with the draft model {draft.path.name} needs about {sum(parts) / gb:.1f} GB "
            f"({parts[0] / gb:.1f} GB + {parts[1] / gb:.1f} GB for a {n_ctx}-token context) but only "
            f"{available / gb:.1f} GB is available: use a smaller --ctx-size, smaller models, or no draft model")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"
