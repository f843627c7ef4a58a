"""Gemma 2 (GGUF architecture `gemma2`): Gemma 1's turns, plain replies."""
from gemma_edge.generations.base import GemmaGeneration, chat

GEMMA2 = GemmaGeneration("gemma2", ("gemma2",), (chat("gemma2", "plain"),))
