"""Gemma 4 (GGUF architecture `gemma4`, Unified included): `<|turn>` turns, a thought channel and tool
calls in the replies.

E2B/E4B carry per-layer embeddings and render the small template; the large models (12B, 26B-A4B,
31B) write 0 there and render the large one (it pre-closes an empty thought channel)."""
from gemma_edge.generations.base import GemmaGeneration, chat


def _per_layer_embeddings(gguf) -> bool:
    return (gguf.arch_get("embedding_length_per_layer_input") or 0) > 0


GEMMA4 = GemmaGeneration(
    "gemma4", ("gemma4",),
    (chat("gemma4-small", "gemma4", _per_layer_embeddings), chat("gemma4-large", "gemma4")),
    projector_types=("gemma4v", "gemma4a", "gemma4uv", "gemma4ua"),
)
