"""The one table shape every output format family fills in: which marker strings mean what.

Shared machinery (`stream.py`, `calls.py`) reads only this table, so a format family is a data
entry, never a branch on a generation name.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputSyntax:
    """The markers of one output format family. Empty strings mean "this format has none"."""

    name: str
    end_markers: tuple[str, ...]        # the message ends at the first of these (rule 1)
    channel_open: str = ""              # opens a thought channel
    channel_close: str = ""             # closes it
    channel_label: str = ""             # leading label of a channel block, removed (e.g. "thought\n")
    call_open: str = ""                 # opens a tool-call block
    call_close: str = ""                # closes it
    call_prefix: str = "call:"          # what a call body starts with, before NAME
    string_delim: str = ""              # delimiter of verbatim strings inside call arguments
    response_open: str = ""             # opens a tool response (the model's "stop, run the tool")
    other_markers: tuple[str, ...] = () # markers with no meaning here, kept atomic in text deltas

    @property
    def supports_thinking(self) -> bool:
        return bool(self.channel_open)

    @property
    def supports_calls(self) -> bool:
        return bool(self.call_open)

    @property
    def channel_name(self) -> str:
        """The label without its line break (`thought`): a block holding only this is empty (what
        a thinking budget of 0 writes)."""
        return self.channel_label.rstrip("\n")

    def open_channel_prefill(self, prompt_tail: str | None) -> str | None:
        """What the prompt already wrote inside a channel block it left open (normally `thought\n`),
        or None when the prompt does not end inside one."""
        if not (self.supports_thinking and prompt_tail):
            return None
        opened = prompt_tail.rfind(self.channel_open)
        if opened < 0 or prompt_tail.find(self.channel_close, opened) >= 0:
            return None
        return prompt_tail[opened + len(self.channel_open):]

    def all_markers(self) -> tuple[str, ...]:
        """Every marker string of the family, so no text delta ever carries a piece of one."""
        found = [*self.end_markers, self.channel_open, self.channel_close, self.call_open,
                 self.call_close, self.string_delim, self.response_open, *self.other_markers]
        return tuple(dict.fromkeys(m for m in found if m))
