"""A draft model (`--spec draft:MODEL`): a second, smaller llama.cpp model of the target's vocabulary
that drafts greedily (gemma_edge.speculative.ModelDrafter); the target verifies its drafts as any.

It keeps its own KV cache across rounds and replies: each round it keeps the longest prefix of what it
evaluated that the context still starts with (the accepted drafts among it), removes the rest from the
cache's tail, and evaluates only what is new. Its cache is full-size in every layer (`swa_full`,
llama.cpp's default, asked for explicitly): a smaller sliding-window cache reuses the cells of positions
that fell out of the window of the newest position drafted, which a rejected draft's rollback needs again.
"""
from __future__ import annotations

from typing import Sequence

from gemma_edge.draft_pair import check_pair_fits
from gemma_edge.errors import InvalidModelError
from gemma_edge.llama import internals
from gemma_edge.llama.engine import common_prefix
from gemma_edge.llama.loader import load_llama
from gemma_edge.llama.logs import silence_llama_logs
from gemma_edge.model import ModelFacts


class DraftModel:
    """A loaded draft model (gemma_edge.speculative.DraftingModel) for a target with an `n_ctx`-token
    context. Used under the target engine's lock."""

    def __init__(self, facts: ModelFacts, target: ModelFacts, *, n_ctx: int, n_threads: int, available: int,
                 n_batch: int = 512):
        """`available`: the memory available before the target was loaded (the pair must fit in it)."""
        self.facts = facts
        self.n_ctx = min(n_ctx, facts.context_length)
        check_pair_fits(target, facts, self.n_ctx, available)
        silence_llama_logs()
        try:
            self.llm = load_llama(str(facts.path), n_ctx=self.n_ctx, n_batch=min(n_batch, self.n_ctx),
                                  n_ubatch=min(n_batch, self.n_ctx), n_threads=n_threads,
                                  n_threads_batch=n_threads, swa_full=True, use_mmap=True, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise InvalidModelError(f"{facts.path}: llama.cpp could not load it as a draft model ({e})") from None

    def follow(self, context: Sequence[int], ahead: int) -> bool:
        llm = self.llm
        if not context or len(context) + ahead > self.n_ctx:
            return False
        # the last context token is evaluated again when cached: its logits give the first draft
        keep = min(common_prefix(internals.cached_ids(llm).tolist(), context), len(context) - 1)
        llm.n_tokens = keep  # eval() removes the cache's tail from here
        llm.eval(list(context[keep:]))
        return True

    def best(self) -> tuple[int, float]:
        import numpy as np

        logits = internals.logits(self.llm, -1)
        token = int(np.argmax(logits))
        return token, float(1.0 / np.exp(logits - logits[token]).sum())

    def push(self, token: int) -> None:
        self.llm.eval([token])

    def reset(self) -> None:
        self.llm.reset()
        internals.drop_positions(self.llm, 0)

    def close(self) -> None:
        self.llm.close()
