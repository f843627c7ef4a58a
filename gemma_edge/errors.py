"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""
from __future__ import annotations


class GemmaEdgeError(Exception):
    """Base class: bad input or an environment problem, explained in one line."""


class ModelNotFoundError(GemmaEdgeError):
    """A registry name or path that names no model."""


class InvalidModelError(GemmaEdgeError):
    """A file that is not a (complete) GGUF of a Gemma model."""


class InsufficientMemoryError(GemmaEdgeError):
    """Weights plus KV cache would not fit in the memory available."""


class ContextOverflowError(GemmaEdgeError):
    """A prompt that does not fit in the context window."""


class DownloadError(GemmaEdgeError):
    """A model could not be fetched or verified."""


class NotAChatModelError(GemmaEdgeError):
    """Chat or completion asked of an embedding model."""


class NotAnEmbeddingModelError(GemmaEdgeError):
    """Embeddings asked of a chat model."""


class DraftModelError(GemmaEdgeError):
    """A draft model that cannot draft for the target (another vocabulary, not smaller, not a chat model)."""


class RpcError(GemmaEdgeError):
    """An RPC worker that cannot be reached or was lost, or a llama.cpp build without the RPC backend."""
