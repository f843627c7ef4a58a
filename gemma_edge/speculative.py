"""Speculative decoding's pure parts: where drafts come from, how long they are, and the acceptance rule.

A drafter proposes up to k tokens that may follow the context (prompt lookup: NgramDrafter; a draft
model of the target's vocabulary: ModelDrafter over gemma_edge.llama.draft_model, the pair checked by
gemma_edge.draft_pair); the engine evaluates them all in one batch and keeps the longest prefix the target itself would have produced, plus the target's own next
token (gemma_edge.llama.engine). Output is unchanged by speculation: only how many tokens one decode yields.

The acceptance rule for sampled decoding is `speculative_accept`: keep draft token x (drawn from the
drafter's q) with probability min(1, p(x)/q(x)), otherwise draw from norm(max(p - q, 0)); the result is
distributed as p. Every drafter here is deterministic (q is a point mass on x), and then the rule reduces
to "draw y from p; keep x if y == x, else the output is y" (P(x) = p(x), P(y) = p(y) for y != x), which is
exactly drawing the target's token with its own sampler and comparing it to the draft: that is what the
engine does, row by row, so greedy and sampled decoding (with a seed) give the same tokens as without
speculation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

from gemma_edge.errors import GemmaEdgeError

if TYPE_CHECKING:
    import numpy as np

SPEC_MODES = ("auto", "off", "ngram")
DRAFT_PREFIX = "draft:"  # "draft:MODEL": a draft model (registry name or GGUF path) drafts
DRAFT_CONFIDENCE = 0.75  # a draft model drafts while its top token is this likely (llama.cpp's p_min)
MTP_MODE = "mtp"  # "mtp" or "mtp:MODEL": a Gemma 4 MTP drafter (gemma_edge.mtp) drafts


def speculative_accept(p: np.ndarray, q: np.ndarray, draft: int, rng: np.random.Generator) -> tuple[bool, int]:
    """One step of speculative sampling: the target's distribution `p`, the drafter's `q` and the token
    `draft` drawn from q. Returns (accepted, token): the draft itself, or a token drawn from the residual."""
    import numpy as np

    if rng.random() * q[draft] < p[draft]:  # probability min(1, p/q)
        return True, draft
    residual = np.maximum(p - q, 0.0)
    return False, int(rng.choice(len(p), p=residual / residual.sum()))


class Drafter(Protocol):
    def propose(self, context: Sequence[int], limit: int) -> list[int]:
        """Up to `limit` tokens that may follow `context` (the prompt's tokens and those generated so far;
        it only grows between calls of one reply)."""


class NgramDrafter:
    """Prompt lookup: the longest n-gram (n from `max_n` down to 1) ending the context that occurred
    earlier in it, and the tokens that followed its latest earlier occurrence. No model needed."""

    def __init__(self, max_n: int = 3):
        self.max_n = max_n
        self._seen: list[dict[tuple[int, ...], int]] = [{} for _ in range(max_n + 1)]
        self._indexed = 0  # context[:_indexed] has its n-grams (each followed by a token) indexed

    def _index(self, context: Sequence[int]) -> None:
        # An n-gram ending at e (exclusive) is indexed once context[e] exists: it has a continuation.
        for end in range(max(self._indexed, 1), len(context)):
            for n in range(1, min(self.max_n, end) + 1):
                self._seen[n][tuple(context[end - n:end])] = end
        self._indexed = max(self._indexed, len(context))

    def propose(self, context: Sequence[int], limit: int) -> list[int]:
        self._index(context)
        for n in range(min(self.max_n, len(context)), 0, -1):
            end = self._seen[n].get(tuple(context[len(context) - n:]))
            if end is not None:
                return list(context[end:end + limit])
        return []


class DraftingModel(Protocol):
    """A loaded draft model, one position at a time (gemma_edge.llama.draft_model.DraftModel)."""

    def follow(self, context: Sequence[int], ahead: int) -> bool:
        """Bring the model to the end of `context` (reusing what it already evaluated); False when
        `context` and `ahead` more tokens do not fit its context window."""

    def best(self) -> tuple[int, float]:
        """The most likely next token and its probability."""

    def push(self, token: int) -> None:
        """Append `token` (the next `best()` follows it)."""


class ModelDrafter:
    """A draft model's greedy continuation of the context, token by token while the model is at least
    `confidence` sure of its next token (a doubtful token is likely rejected, and each costs a step)."""

    def __init__(self, model: DraftingModel, confidence: float = DRAFT_CONFIDENCE):
        self.model, self.confidence = model, confidence

    def propose(self, context: Sequence[int], limit: int) -> list[int]:
        draft: list[int] = []
        if limit <= 0 or not self.model.follow(context, limit):
            return draft
        while True:
            token, probability = self.model.best()
            if probability < self.confidence:
                return draft
            draft.append(token)
            if len(draft) == limit:
                return draft
            self.model.push(token)


@dataclass
class DraftLength:
    """How many tokens to draft next, from the acceptance measured in this reply; off for the rest of the
    reply once verifying stops paying (a rejected batch costs more than the one token decoded instead)."""
    length: int = 8
    maximum: int = 16
    minimum: int = 2
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    probation: int = 8     # rounds measured before deciding it does not pay
    pays_from: float = 0.5  # mean tokens gained per verification round below which speculation stops
    enabled: bool = True

    def record(self, drafted: int, accepted: int) -> None:
        self.rounds += 1
        self.drafted += drafted
        self.accepted += accepted
        if accepted == drafted:
            self.length = min(self.length * 2, self.maximum)
        else:
            self.length = max(self.minimum, accepted + 1)
        if self.rounds >= self.probation and self.accepted < self.pays_from * self.rounds:
            self.enabled = False


@dataclass
class Speculation:
    """One reply's speculation: its drafter, its draft length and the counts reported in `usage`."""
    drafter: Drafter
    budget: DraftLength

    def propose(self, context: Sequence[int], limit: int) -> list[int]:
        if not self.budget.enabled:
            return []
        return self.drafter.propose(context, min(limit, self.budget.length))

    def counts(self) -> dict:
        return {"drafted_tokens": self.budget.drafted, "accepted_tokens": self.budget.accepted}


def parse_spec(value: str | None) -> str:
    """Validate a --spec / `speculative=` value: one of SPEC_MODES, "draft:MODEL" or "mtp[:MODEL]" (MODEL kept
    as given)."""
    text = (value or "off").strip()
    mode = text.lower()
    if mode.startswith(DRAFT_PREFIX):
        name = text[len(DRAFT_PREFIX):].strip()
        if not name:
            raise GemmaEdgeError("speculative mode 'draft:' names no draft model: use draft:MODEL (a registry "
                                 "name or a GGUF path)")
        return DRAFT_PREFIX + name
    if mode == MTP_MODE or mode.startswith(MTP_MODE + ":"):
        name = text[len(MTP_MODE) + 1:].strip()
        return f"{MTP_MODE}:{name}" if name else MTP_MODE
    if mode not in SPEC_MODES:
        raise GemmaEdgeError(f"unknown speculative mode {value!r}: use one of {', '.join(SPEC_MODES)}, "
                             f"{DRAFT_PREFIX}MODEL, {MTP_MODE} or {MTP_MODE}:MODEL")
    return mode


def draft_model_name(mode: str) -> str | None:
    """The MODEL of a parsed "draft:MODEL" mode (None for the other modes)."""
    return mode[len(DRAFT_PREFIX):] if mode.startswith(DRAFT_PREFIX) else None


def mtp_drafter_name(mode: str) -> str | None:
    """For a parsed "mtp[:MODEL]" mode the MODEL ("" for plain "mtp"); None for the other modes."""
    if mode == MTP_MODE:
        return ""
    return mode[len(MTP_MODE) + 1:] if mode.startswith(MTP_MODE + ":") else None


def make_speculation(mode: str, draft_model: DraftingModel | None = None,
                     mtp_drafter: Drafter | None = None) -> Speculation | None:
    """The speculation for one reply in `mode` (already resolved: "ngram", "draft:MODEL" with that
    model loaded as `draft_model`, "mtp[:MODEL]" with the loaded drafter as `mtp_drafter`, or "off")."""
    if mode == "ngram":
        return Speculation(NgramDrafter(), DraftLength())
    if draft_model_name(mode) is not None:
        if draft_model is None:
            raise GemmaEdgeError(f"speculative mode {mode!r} needs its draft model loaded")
        return Speculation(ModelDrafter(draft_model), DraftLength())
    if mtp_drafter_name(mode) is not None:
        if mtp_drafter is None:
            raise GemmaEdgeError(f"speculative mode {mode!r} needs an MTP drafter loaded with the model")
        return Speculation(mtp_drafter, DraftLength())
    return None
