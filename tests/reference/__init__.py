"""The reference material the oracle tests read, vendored here (SOURCES.md says where each file
comes from): the official Gemma chat templates (`templates/`) and the real Gemma 4 vocabulary
(`vocab/`). `GEMMA_EDGE_REFERENCE` may point at another copy with the same layout."""
from __future__ import annotations

import os
from pathlib import Path

VENDORED = Path(__file__).resolve().parent
# public turn-format name -> newest official template of its generation (in `templates/`)
NEWEST_TEMPLATES = {
    "gemma1": "gemma1-it.jinja",
    "gemma2": "gemma2-it.jinja",
    "gemma3": "gemma3-it.jinja",
    "gemma3n": "gemma3n-it.jinja",
    "gemma4-small": "gemma4-e2b-it.jinja",
    "gemma4-large": "gemma4-31b-it.jinja",
}


def reference_dir() -> Path:
    override = os.environ.get("GEMMA_EDGE_REFERENCE")
    return Path(override) if override else VENDORED


def gemma4_vocab_path() -> Path:
    return reference_dir() / "vocab" / "ggml-vocab-gemma-4.gguf"
