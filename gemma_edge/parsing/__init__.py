"""Reading a model's output: thinking, content and tool calls, whole or while it streams.

`parse_response(text, format=…)` returns `{"role", "thinking", "content", "tool_calls",
"errors"}`; `StreamParser(format)` gives the same message incrementally (`feed(delta)` returns
events, `close()` the message). The rules are the output contract in `README.md` next to this
file; each output format family is a table entry (`gemma4.py`, `functiongemma.py`, `plain.py`)
read by the one shared machine in `stream.py`. Which syntax a format name reads is the runtime
generation table's (`gemma_edge.generations`).
"""
from __future__ import annotations

from typing import Any, Iterable

from gemma_edge.generations import GENERATION_NAMES, MODEL_FORMATS, variant_named
from gemma_edge.parsing import stream
from gemma_edge.parsing.declarations import tool_declarations
from gemma_edge.parsing.functiongemma import FUNCTIONGEMMA
from gemma_edge.parsing.gemma4 import GEMMA4
from gemma_edge.parsing.plain import PLAIN
from gemma_edge.parsing.syntax import OutputSyntax

SYNTAXES: dict[str, OutputSyntax] = {s.name: s for s in (PLAIN, FUNCTIONGEMMA, GEMMA4)}
# format (or generation) name -> the syntax its replies are written in, from the generation table
SYNTAX_BY_FORMAT: dict[str, OutputSyntax] = {
    name: SYNTAXES[variant.syntax] for name in (*MODEL_FORMATS, *GENERATION_NAMES)
    if (variant := variant_named(name)).syntax is not None}


def syntax_for(format: str) -> OutputSyntax:
    """The output syntax of a turn-format name; ValueError names the accepted ones."""
    try:
        return SYNTAX_BY_FORMAT[format]
    except (KeyError, TypeError):
        raise ValueError(f"unknown output format {format!r}; expected one of "
                         f"{', '.join(SYNTAX_BY_FORMAT)}") from None


class StreamParser(stream.StreamParser):
    """`StreamParser(format, *, enable_thinking=None, prompt_tail=None, tools=None)`.

    `feed(delta)` returns events `{"type": "thinking"|"content", "text": …}` and
    `{"type": "tool_call", "tool_call": {…}}` (complete calls only); `finish()` returns the
    events only the end of output decides (held-back text, an unclosed call); `close()`
    returns the message, equal to `parse_response` of the concatenated deltas."""

    def __init__(self, format: str, *, enable_thinking: bool | None = None,
                 prompt_tail: str | None = None, tools: Iterable[Any] | None = None):
        super().__init__(syntax_for(format), enable_thinking=enable_thinking,
                         prompt_tail=prompt_tail, decls=tool_declarations(tools))


def parse_response(text: str, *, format: str, enable_thinking: bool | None = None,
                   prompt_tail: str | None = None, tools: Iterable[Any] | None = None) -> dict:
    """The whole output (decoded with special tokens kept, starting after the generation
    prompt) as `{"role", "thinking", "content", "tool_calls", "errors"}`. Never raises on
    model output."""
    parser = StreamParser(format, enable_thinking=enable_thinking, prompt_tail=prompt_tail, tools=tools)
    parser.feed(text)
    return parser.close()


__all__ = ["parse_response", "StreamParser", "SYNTAXES", "SYNTAX_BY_FORMAT", "syntax_for"]
