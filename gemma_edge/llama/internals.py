"""Every private part of llama-cpp-python's `Llama` the runtime relies on, each named once here.

llama-cpp-python (0.3.36) has no public API for the KV-cache surgery, batched scoring and raw
sampling the engine needs, so these functions reach into `Llama._ctx`, `Llama._batch`,
`Llama._input_ids`, `Llama._init_sampler` and `llama_cpp._internals`. A newer llama-cpp-python is
followed here, not across the runtime. Callers hold the engine's lock (none of this is thread-safe).
"""
from __future__ import annotations

import contextlib
from typing import Container, Iterator, Sequence

import numpy as np

from gemma_edge.llama import llama_cpp


def context_pointer(llm):
    """The raw `llama_context *` of a loaded model (for mtmd, raw samplers and C calls)."""
    return llm._ctx.ctx


def flash_attention_type(llm) -> int:
    """The `llama_flash_attn_type` the model's context was made with."""
    return llm.context_params.flash_attn_type


def llama_library():
    """The ctypes handle of the libllama llama-cpp-python loaded (for symbols its bindings lack). Not a
    second dlopen: the wheel ships libllama under several file names, each its own copy."""
    return llama_cpp().llama_cpp._lib


def cached_ids(llm) -> np.ndarray:
    """The token ids the model's KV cache holds, positions 0…n_tokens−1 (a view, not a copy)."""
    return llm._input_ids


def drop_positions(llm, start: int) -> bool:
    """Remove positions `start`… from the KV cache (all sequences). False: llama.cpp could not (a
    partial removal the cache type does not support)."""
    return llm._ctx.kv_cache_seq_rm(-1, start, -1)


def logits(llm, index: int) -> np.ndarray:
    """The logits the last decode computed for its batch row `index` (−1: the last one), as a view of
    llama.cpp's buffer (valid until the next decode: copy it to keep it)."""
    return np.ctypeslib.as_array(llm._ctx.get_logits_ith(index), shape=(llm.n_vocab(),))


@contextlib.contextmanager
def recording_logits(llm) -> Iterator[list]:
    """Inside: after every `llm.eval`, a copy of the logits of its last row is appended to the list this
    yields (the logits each generated token is sampled from)."""
    recorded: list = []
    original = llm.eval

    def eval_and_record(tokens):
        original(tokens)
        recorded.append(logits(llm, -1).copy())

    llm.eval = eval_and_record
    try:
        yield recorded
    finally:
        del llm.eval


def decode_scored(llm, tokens: Sequence[int], start: int, wanted: Sequence[bool] | None = None) -> None:
    """Decode `tokens` at positions `start`… in one batch with logits for every row, or for the rows
    `wanted` marks (the model's own batch: at most `n_batch` tokens)."""
    llm._batch.set_batch(list(tokens), n_past=start, logits_all=True)
    for row, scored in enumerate(wanted or ()):
        llm._batch.batch.logits[row] = scored
    llm._ctx.decode(llm._batch)


def new_sampler(llm, **settings):
    """llama-cpp-python's sampler chain for `settings` (top_k, top_p, min_p, temp, repeat_penalty,
    grammar, …), seeded from `llm.set_seed`."""
    return llm._init_sampler(**settings)


def sample(sampler, llm, index: int) -> int:
    """Let a sampler from `new_sampler` choose from the logits of batch row `index` of the last decode."""
    return sampler.sample(llm._ctx, index)


def sampler_chain(sampler):
    """The raw `llama_sampler *` chain inside a sampler from `new_sampler`."""
    return sampler.sampler


class GreedySampler:
    """llama.cpp's bare greedy sampler (no chain: no penalties, grammar or suppressed tokens), for raw
    baselines. `close()` frees it."""

    def __init__(self):
        self._lc = llama_cpp()
        self._sampler = self._lc.llama_sampler_init_greedy()

    def next_token(self, llm) -> int:
        """The most likely token after the last decode's last row."""
        return self._lc.llama_sampler_sample(self._sampler, llm._ctx.ctx, -1)

    def close(self) -> None:
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            self._lc.llama_sampler_free(sampler)


class TokenBatch:
    """A llama_batch of up to `capacity` tokens of sequence 0, with logits only where asked: decodes a
    long input without llama.cpp keeping a (tokens × vocabulary) logits matrix."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._batch = llama_cpp()._internals.LlamaBatch(n_tokens=capacity, embd=0, n_seq_max=1, verbose=False)

    def decode(self, llm, tokens: Sequence[int], start: int, logits_at: Container[int]) -> None:
        """Decode `tokens` at positions `start`…; row i gets logits when `start + i` is in `logits_at`
        (read them with `logits(llm, i)`)."""
        if len(tokens) > self.capacity:
            raise ValueError(f"{len(tokens)} tokens do not fit a batch of {self.capacity}")
        b = self._batch.batch
        b.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            b.token[i] = token
            b.pos[i] = start + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = (start + i) in logits_at
        llm._ctx.decode(self._batch)
