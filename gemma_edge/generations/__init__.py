"""The Gemma generations gemma-edge runs, one module each (`gemma3.py` …), listed below oldest first.

Each module holds one `GemmaGeneration` (`base.py`): GGUF architecture and markers -> turn format ->
output syntax -> stop markers, and the projector types of its mmproj files. `model.py` reads a GGUF
through this table, `models_schema` takes its enums from it, and `gemma_edge.parsing` resolves format
names through it. `docs/adding-a-generation.md` walks through adding one.
"""
from __future__ import annotations

from gemma_edge.generations.base import GemmaGeneration, Variant
from gemma_edge.generations.embeddinggemma import EMBEDDINGGEMMA
from gemma_edge.generations.gemma1 import GEMMA1
from gemma_edge.generations.gemma2 import GEMMA2
from gemma_edge.generations.gemma3 import GEMMA3
from gemma_edge.generations.gemma3n import GEMMA3N
from gemma_edge.generations.gemma4 import GEMMA4

GENERATIONS: tuple[GemmaGeneration, ...] = (GEMMA1, GEMMA2, GEMMA3, GEMMA3N, GEMMA4, EMBEDDINGGEMMA)
GENERATION_NAMES: tuple[str, ...] = tuple(g.name for g in GENERATIONS)
_BY_ARCHITECTURE = {arch: g for g in GENERATIONS for arch in g.architectures}
ARCHITECTURES: tuple[str, ...] = tuple(_BY_ARCHITECTURE)
# Every public format name: a variant's turn format, or a generation's name for its fallback variant
# (`parse_response(..., format="gemma4")`); models.yaml's `format` takes the variants' names only.
_VARIANTS = {v.format: v for g in GENERATIONS for v in g.variants}
MODEL_FORMATS: tuple[str, ...] = tuple(_VARIANTS)
_BY_FORMAT = {**{g.name: g.variants[-1] for g in GENERATIONS}, **_VARIANTS}


def generation_of(architecture: str | None) -> GemmaGeneration | None:
    """The generation claiming a GGUF `general.architecture` (None: not a Gemma gemma-edge runs)."""
    return _BY_ARCHITECTURE.get(architecture or "")


def variant_named(format: str) -> Variant | None:
    """The variant of a format name (or of a generation name: its fallback variant)."""
    return _BY_FORMAT.get(format) if isinstance(format, str) else None


__all__ = ["ARCHITECTURES", "GENERATIONS", "GENERATION_NAMES", "GemmaGeneration",
           "MODEL_FORMATS", "Variant", "generation_of", "variant_named"]
