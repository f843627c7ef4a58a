"""Gemma 1 (GGUF architecture `gemma`): `<start_of_turn>` turns, plain replies."""
from gemma_edge.generations.base import GemmaGeneration, chat

GEMMA1 = GemmaGeneration("gemma1", ("gemma",), (chat("gemma1", "plain"),))
