"""Gemma 1 and Gemma 2: `<start_of_turn>user/model`, string content only, no system role
(the official template raises "System role not supported"; lenient mode folds it into the first
user turn the way Gemma 3 does). Both generations ship the same template text."""
from __future__ import annotations

from functools import partial

from gemma_edge.formats import start_of_turn
from gemma_edge.formats.base import TurnFormat

TABLE = start_of_turn.StartOfTurnTable(folds_system=False, content_lists=False, media_markers={})


def _format(name: str) -> TurnFormat:
    return TurnFormat(
        name=name,
        end_of_turn=start_of_turn.END,
        supports_thinking=False,
        supports_tools=False,
        supports_system=False,
        render=partial(start_of_turn.render, TABLE),
    )


FORMATS = (_format("gemma1"), _format("gemma2"))
