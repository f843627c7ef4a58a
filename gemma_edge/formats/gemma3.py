"""Gemma 3 and Gemma 3n: `<start_of_turn>` turns, a leading system message's text plus a blank
line folded into the first user turn, content as a string or a list of parts. They differ only
in media placeholders: Gemma 3 prints `<start_of_image>` for an image; Gemma 3n prints
`<image_soft_token>` and `<audio_soft_token>`."""
from __future__ import annotations

from gemma_edge.formats import start_of_turn

GEMMA3 = start_of_turn.StartOfTurnTable(
    folds_system=True, content_lists=True, media_markers={"image": "<start_of_image>"})
GEMMA3N = start_of_turn.StartOfTurnTable(
    folds_system=True, content_lists=True,
    media_markers={"image": "<image_soft_token>", "audio": "<audio_soft_token>"})


FORMATS = (start_of_turn.turn_format("gemma3", GEMMA3), start_of_turn.turn_format("gemma3n", GEMMA3N))
