"""EmbeddingGemma (GGUF architecture `gemma-embedding`): an embedding model, no turn format, no chat."""
from gemma_edge.generations.base import GemmaGeneration, Variant

EMBEDDINGGEMMA = GemmaGeneration("embeddinggemma", ("gemma-embedding",), (Variant(None, None),))
