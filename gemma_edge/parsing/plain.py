"""Gemma 1, 2, 3 and 3n output (formats `gemma1`, `gemma2`, `gemma3`, `gemma3n`): content only;
the message ends at `<end_of_turn>` (or `<eos>`)."""
from __future__ import annotations

from gemma_edge.parsing.syntax import OutputSyntax

PLAIN = OutputSyntax(
    name="plain",
    end_markers=("<end_of_turn>", "<eos>"),
    other_markers=("<start_of_turn>",),
)
