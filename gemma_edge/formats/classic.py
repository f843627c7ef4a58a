"""Gemma 1 and Gemma 2: `<start_of_turn>user/model`, string content only, no system role
(the official template raises "System role not supported"; lenient mode folds it into the first
user turn the way Gemma 3 does). Both generations ship the same template text."""
from __future__ import annotations

from gemma_edge.formats import start_of_turn

TABLE = start_of_turn.StartOfTurnTable(folds_system=False, content_lists=False, media_markers={})


FORMATS = (start_of_turn.turn_format("gemma1", TABLE), start_of_turn.turn_format("gemma2", TABLE))
