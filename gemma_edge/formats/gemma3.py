"""Gemma 3 and Gemma 3n: `<start_of_turn>` turns, a leading system message's text plus a blank
line folded into the first user turn, content as a string or a list of parts. They differ only
in media placeholders: Gemma 3 prints `<start_of_image>` for an image; Gemma 3n prints
`<image_soft_token>` and `<audio_soft_token>`.

For the model, transformers' Gemma3Processor/Gemma3nProcessor replace an image placeholder by
"\\n\\n<start_of_image>" + one `<image_soft_token>` per embedding + "<end_of_image>\\n\\n"; llama.cpp's
mtmd puts the same begin/end markers around gemma3 and gemma3nv embeddings. Gemma 3n's audio
expands the same way in transformers, but llama.cpp's mtmd has no gemma3na audio encoder, so
Gemma 3n audio has no expansion here (it cannot reach the model)."""
from __future__ import annotations

from gemma_edge.formats import start_of_turn
from gemma_edge.formats.base import MediaExpansion

IMAGE = MediaExpansion(begin="<start_of_image>", end="<end_of_image>", soft_token="<image_soft_token>",
                       before="\n\n", after="\n\n")

GEMMA3 = start_of_turn.StartOfTurnTable(
    folds_system=True, content_lists=True, media_markers={"image": "<start_of_image>"},
    media_expansion={"image": IMAGE})
GEMMA3N = start_of_turn.StartOfTurnTable(
    folds_system=True, content_lists=True,
    media_markers={"image": "<image_soft_token>", "audio": "<audio_soft_token>"},
    media_expansion={"image": IMAGE})


FORMATS = (start_of_turn.turn_format("gemma3", GEMMA3), start_of_turn.turn_format("gemma3n", GEMMA3N))
