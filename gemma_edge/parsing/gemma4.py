"""Gemma 4 output (formats `gemma4`, `gemma4-small`, `gemma4-large`): a thought channel
`<|channel>thought\\n … <channel|>`, tool calls `<|tool_call>call:NAME{…}<tool_call|>` whose
strings are `<|"|>`-delimited, and `<|tool_response>` as the model's request for a tool result.

Small and large models differ only in their generation prompt (the large ones pre-close an empty
thought channel when thinking is off); the caller tells the parser through `prompt_tail`.
"""
from __future__ import annotations

from gemma_edge.parsing.syntax import OutputSyntax

GEMMA4 = OutputSyntax(
    name="gemma4",
    end_markers=("<turn|>", "<eos>"),
    channel_open="<|channel>",
    channel_close="<channel|>",
    channel_label="thought\n",
    call_open="<|tool_call>",
    call_close="<tool_call|>",
    string_delim='<|"|>',
    response_open="<|tool_response>",
    other_markers=("<tool_response|>", "<|turn>"),
)
