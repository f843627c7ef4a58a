"""Perplexity (and KL divergence from a reference model) of a token sequence, window by window.

Memory stays small: a window is decoded in batches of the engine's `n_batch`, logits are requested
only for the positions being scored, and each logits row is turned into a log-probability and
dropped at once — never a (tokens × vocabulary) matrix, which for Gemma's 262k vocabulary would be
~1 MB per token.

Windows (`windows()`): every token after the first is scored exactly once. Each window is fed as
BOS + a slice of the text (Gemma needs BOS), holds at most `n_ctx` tokens, and scores only targets
with at least half a window of context, except at the very start of the text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gemma_edge.llama import internals


@dataclass(frozen=True)
class Window:
    """Feed `[tokens[0]] + tokens[start:end]`; score targets `score_from <= t < end`."""
    start: int
    end: int
    score_from: int

    def input_ids(self, tokens) -> list[int]:
        return [tokens[0]] + list(tokens[self.start:self.end])

    def output_index(self, target: int) -> int:
        """Index in the window input whose logits predict `tokens[target]`."""
        return target - self.start


def windows(n_tokens: int, n_ctx: int) -> list[Window]:
    if n_ctx < 4:
        raise ValueError("windows need n_ctx >= 4")
    span = n_ctx - 1  # room for the BOS every window starts with
    stride = max(1, span // 2)
    if n_tokens < 2:
        return []
    result = [Window(1, min(n_tokens, 1 + span), 1)]
    scored_until = result[0].end
    while scored_until < n_tokens:
        end = min(scored_until + stride, n_tokens)
        result.append(Window(max(1, end - span), end, scored_until))
        scored_until = end
    return result


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    shifted = x - x.max()
    return shifted - math.log(np.exp(shifted).sum())


@dataclass
class PerplexityResult:
    nll: list[float]                # per scored token, in text order
    n_windows: int
    kl: list[float] | None = None   # per scored token: KL(reference || model)
    top1_same: int = 0

    @property
    def n_scored(self) -> int:
        return len(self.nll)

    @property
    def perplexity(self) -> float:
        return math.exp(sum(self.nll) / len(self.nll)) if self.nll else float("nan")

    @property
    def kl_mean(self) -> float | None:
        return sum(self.kl) / len(self.kl) if self.kl else None

    @property
    def kl_p99(self) -> float | None:
        return float(np.percentile(self.kl, 99)) if self.kl else None

    @property
    def top1_agreement(self) -> float | None:
        return self.top1_same / len(self.kl) if self.kl else None

    def as_dict(self) -> dict:
        mean_nll = sum(self.nll) / len(self.nll) if self.nll else None
        return {"perplexity": self.perplexity, "mean_nll": mean_nll, "n_scored": self.n_scored,
                "n_windows": self.n_windows, "kl_mean": self.kl_mean, "kl_p99": self.kl_p99,
                "top1_agreement": self.top1_agreement}


class _WindowDecoder:
    """Decode one window on an engine's llama context in `n_batch` batches, yielding (output index,
    logits row) for the requested outputs only."""

    def __init__(self, engine):
        self.engine, self.llm = engine, engine.llm
        self.n_batch = self.llm.n_batch
        self.batch = internals.TokenBatch(self.n_batch)
        self.n_vocab = self.llm.n_vocab()

    def rows(self, ids: list[int], wanted: range):
        self.engine.reset()
        for offset in range(0, len(ids), self.n_batch):
            chunk = ids[offset:offset + self.n_batch]
            self.batch.decode(self.llm, chunk, offset, wanted)
            for i in range(len(chunk)):
                if (offset + i) in wanted:
                    yield offset + i, internals.logits(self.llm, i).copy()
        self.engine.reset()


def evaluate(engine, tokens: list[int], n_ctx: int, reference=None) -> PerplexityResult:
    """Perplexity of `tokens` (starting with BOS) under `engine`; with a `reference` engine (same
    vocabulary), also the per-token KL divergence and how often both pick the same top token."""
    if n_ctx > engine.n_ctx:
        raise ValueError(f"window {n_ctx} is larger than the engine's context {engine.n_ctx}")
    decoder = _WindowDecoder(engine)
    ref_decoder = _WindowDecoder(reference) if reference is not None else None
    if ref_decoder is not None and ref_decoder.n_vocab != decoder.n_vocab:
        from gemma_edge.errors import GemmaEdgeError

        raise GemmaEdgeError(f"the reference model's vocabulary ({ref_decoder.n_vocab} tokens) differs from the "
                             f"model's ({decoder.n_vocab}): KL divergence needs the same tokenizer")
    plan = windows(len(tokens), n_ctx)
    result = PerplexityResult([], len(plan), [] if reference is not None else None)
    with engine.lock:
        for window in plan:
            ids = window.input_ids(tokens)
            wanted = range(window.output_index(window.score_from), window.output_index(window.end))
            ref_rows = ref_decoder.rows(ids, wanted) if ref_decoder else None
            for index, logits in decoder.rows(ids, wanted):
                logp = log_softmax(logits)
                target = tokens[window.start + index]
                result.nll.append(float(-logp[target]))
                if ref_rows is not None:
                    _, ref_logits = next(ref_rows)
                    ref_logp = log_softmax(ref_logits)
                    result.kl.append(float(np.sum(np.exp(ref_logp) * (ref_logp - logp))))
                    result.top1_same += int(np.argmax(ref_logp) == np.argmax(logp))
    return result


# A user turn that asks for the text, so the text is scored as the model's own reply.
CHAT_REQUEST = "Write a short piece of prose."


def text_tokens(model, text: str, chat: bool = False) -> list[int]:
    """The token ids to score: BOS + the text, or (`chat`) the text as the model's reply in the
    model's turn format (instruct models have meaningless perplexity on raw prose)."""
    if not chat:
        return model.tokenize_raw(text)
    messages = [{"role": "user", "content": CHAT_REQUEST}, {"role": "assistant", "content": text}]
    tokens, _ = model.tokenize_messages(messages, add_generation_prompt=False)
    return tokens
