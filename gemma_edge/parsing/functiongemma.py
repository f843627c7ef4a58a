"""FunctionGemma output (format `functiongemma`): Gemma 3 turns, tool calls
`<start_function_call>call:NAME{…}<end_function_call>` whose strings are `<escape>`-delimited,
`<start_function_response>` as the model's request for a tool result, and no thinking."""
from __future__ import annotations

from gemma_edge.parsing.syntax import OutputSyntax

FUNCTIONGEMMA = OutputSyntax(
    name="functiongemma",
    end_markers=("<end_of_turn>", "<eos>"),
    call_open="<start_function_call>",
    call_close="<end_function_call>",
    string_delim="<escape>",
    response_open="<start_function_response>",
    other_markers=("<end_function_response>", "<start_of_turn>"),
)
