"""Gemma 3 (GGUF architecture `gemma3`): plain replies, or FunctionGemma's tool calls.

FunctionGemma is a Gemma 3 270M with function-calling tokens added to its vocabulary: a GGUF holding
`<start_function_call>` renders and parses FunctionGemma's format."""
from gemma_edge.generations.base import GemmaGeneration, chat, has_token

FUNCTIONGEMMA_MARKER = "<start_function_call>"

GEMMA3 = GemmaGeneration(
    "gemma3", ("gemma3",),
    (chat("functiongemma", "functiongemma", has_token(FUNCTIONGEMMA_MARKER)), chat("gemma3", "plain")),
    projector_types=("gemma3",),
)
