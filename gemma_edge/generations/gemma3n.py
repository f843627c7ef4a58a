"""Gemma 3n (GGUF architecture `gemma3n`): Gemma 3's turns, plain replies."""
from gemma_edge.generations.base import GemmaGeneration, chat

GEMMA3N = GemmaGeneration("gemma3n", ("gemma3n",), (chat("gemma3n", "plain"),),
                          projector_types=("gemma3nv",))
