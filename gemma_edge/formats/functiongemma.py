"""FunctionGemma (google/functiongemma-270m-it): Gemma 3 270M tuned for function calling.

No official chat template could be obtained, so this format is built from Google's published
FunctionGemma documentation (sources and every assumption in formats/README.md). What the
documents show is the Gemma 4 turn structure — FunctionGemma's template is its ancestor — with
`<start_of_turn>`/`<end_of_turn>` turns, a `developer` turn holding the system text and the tool
declarations, tool calls and responses inside the model turn, and `<escape>` around strings.
There is no thinking and no media input. As the documents show, a tool message may carry
`{"name", "response"}` (or a list of them) as its content, one response block each.

The one byte the documents' machine-rendered prompts show that Gemma 4 does not: " }" (with a
space) closes the top-level `properties:{…}` and the declaration that has parameters.
"""
from __future__ import annotations

from gemma_edge.formats import gemma4_values as values
from gemma_edge.formats.gemma4 import ToolTurnTable, turn_format

NOTATION = values.Notation(
    quote="<escape>", response_open="<start_function_response>", response_close="<end_function_response>",
    spaced_declaration=True)

TABLE = ToolTurnTable(
    turn="<start_of_turn>", end_turn="<end_of_turn>", system_role="developer",
    tool="<start_function_declaration>", end_tool="<end_function_declaration>",
    tool_call="<start_function_call>", end_tool_call="<end_function_call>",
    notation=NOTATION, media_markers={}, media_expansion={}, thinking=False, named_tool_content=True,
    empty_thought_when_not_thinking=False)

FORMATS = (turn_format("functiongemma", TABLE),)
