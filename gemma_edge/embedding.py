"""Text embeddings with EmbeddingGemma (GGUF architecture ``gemma-embedding``) through llama.cpp.

Task prompts: EmbeddingGemma is trained with a task prefix on every input. The strings are the model
card's "Prompt instructions" (https://ai.google.dev/gemma/docs/embeddinggemma/model_card#prompt-instructions)
and the ``prompts`` of google/embeddinggemma-300m's ``config_sentence_transformers.json``
(``query`` / ``document`` are what sentence-transformers' ``encode_query`` / ``encode_document`` use).

Matryoshka: the first 512, 256 or 128 of the 768 values are themselves an embedding (the model card:
"truncate the output embedding of size 768 to their desired size and then re-normalize").

llama.cpp: the model attends bidirectionally, so every input must be decoded in one micro-batch, and
llama-cpp-python 0.3.36 aborts the process (``GGML_ASSERT(ggml_can_mul_mat(a, b))``) on this model when
``n_ubatch`` is not a multiple of 256. The context is therefore sized once at load: batch = micro-batch
= context = the model's context length rounded up to a multiple of 256, and an input longer than the
model's context length is refused before anything is decoded.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gemma_edge.errors import ContextOverflowError, GemmaEdgeError, InvalidModelError
from gemma_edge.memory import check_fits

TASK_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "question_answering": "task: question answering | query: ",
    "fact_checking": "task: fact checking | query: ",
    "classification": "task: classification | query: ",
    "clustering": "task: clustering | query: ",
    "similarity": "task: sentence similarity | query: ",
    "code_retrieval": "task: code retrieval | query: ",
    "summarization": "task: summarization | query: ",
    "none": "",  # the text as given (it already carries a prompt, or another model's convention)
}
DEFAULT_TASK = "query"
MATRYOSHKA_DIMENSIONS = (768, 512, 256, 128)  # EmbeddingGemma's trained sizes
UBATCH_MULTIPLE = 256


class EmbeddingError(GemmaEdgeError):
    """An embedding request this model cannot serve (unknown task, bad dimensions, empty input...)."""


@dataclass
class Embeddings:
    """One row per input (float32), and the number of tokens the inputs took (prompts included)."""
    vectors: np.ndarray
    prompt_tokens: int


def task_prompt(task: str) -> str:
    try:
        return TASK_PROMPTS[task]
    except KeyError:
        raise EmbeddingError(f"unknown embedding task {task!r}; use one of: {', '.join(TASK_PROMPTS)}") from None


def prompted(texts: Sequence[str], task: str) -> list[str]:
    prefix = task_prompt(task)
    return [prefix + text for text in texts]


def matryoshka(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """The first `dimensions` values of each row, L2-normalised when `normalize`."""
    width = vectors.shape[1]
    if dimensions is not None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= width:
            raise EmbeddingError(f"dimensions must be an integer from 1 to {width} (this model's size; "
                                 f"EmbeddingGemma is trained for {', '.join(map(str, MATRYOSHKA_DIMENSIONS))})")
        vectors = vectors[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def context_size(context_length: int) -> int:
    """Context, batch and micro-batch size: `context_length` rounded up to a multiple of 256."""
    return -(-max(context_length, 1) // UBATCH_MULTIPLE) * UBATCH_MULTIPLE


class Embedder:
    """llama.cpp's embedding context for one model; `embed` is serialised on `lock`."""

    def __init__(self, facts, *, n_threads: int, n_ctx: int | None = None):
        """`n_threads`: resolved by the loader (gemma_edge.runtime.default_threads). `n_ctx`: the longest
        input in tokens (default and maximum: the model's context length)."""
        from gemma_edge.llama.loader import load_llama
        from gemma_edge.llama.logs import silence_llama_logs

        self.facts = facts
        self.max_tokens = min(int(n_ctx or facts.context_length), facts.context_length)
        if self.max_tokens < 16:
            raise GemmaEdgeError(f"context size {self.max_tokens} is too small (at least 16 tokens)")
        size = context_size(self.max_tokens)
        check_fits(facts, 0)
        silence_llama_logs()
        try:
            self.llm = load_llama(str(facts.path), embedding=True, n_ctx=size, n_batch=size, n_ubatch=size,
                                  n_threads=int(n_threads), n_threads_batch=int(n_threads), use_mmap=True,
                                  verbose=False)
        except (ValueError, RuntimeError) as e:
            raise InvalidModelError(f"{facts.path}: llama.cpp could not load it ({e})") from None
        self.lock = threading.RLock()

    @property
    def dimensions(self) -> int:
        return int(self.llm.n_embd())

    def tokenize(self, text: str) -> list[int]:
        """The ids llama.cpp embeds for `text`: <bos>, the text as plain text (never control tokens), and
        <eos> when the vocabulary says so (EmbeddingGemma's does)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def embed(self, texts: Sequence[str]) -> Embeddings:
        """Pooled (and projected) embeddings of `texts` as given, batched through llama.cpp."""
        texts = list(texts)
        if not texts:
            raise EmbeddingError("nothing to embed: the input list is empty")
        with self.lock:
            counts = [len(self.tokenize(text)) for text in texts]
            for index, count in enumerate(counts):
                if count > self.max_tokens:
                    raise ContextOverflowError(
                        f"input {index} is {count} tokens but {self.facts.name} embeds at most {self.max_tokens}; "
                        "shorten or split it")
            rows = self.llm.embed(texts, normalize=False, truncate=False)
        return Embeddings(np.asarray(rows, dtype=np.float32).reshape(len(texts), -1), sum(counts))

    def close(self) -> None:
        with self.lock:
            self.llm.close()

