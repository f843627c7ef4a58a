"""Registry of the Gemma generations' conversion tables, keyed by the Hugging Face architecture name
(``architectures[0]``).

Add a generation by writing ``convert/generations/<name>.py`` (see ``base.py``'s docstring) and listing
its :class:`~convert.generations.base.ConversionTable` in ``_GENERATIONS`` below. Modules are imported
lazily, in order, until one claims the architecture: a generation module that does not exist (yet) is
skipped, and converting Gemma 2 never imports the Gemma 4 module.
"""
from __future__ import annotations

from collections.abc import Iterator

from convert.generations.base import ConversionTable
from convert.lazy import listed

# (module, attribute) of every generation's conversion table, oldest first.
_GENERATIONS = (
    ("convert.generations.gemma1", "GEMMA1"),
    ("convert.generations.gemma2", "GEMMA2"),
    ("convert.generations.gemma3", "GEMMA3"),
    ("convert.generations.gemma3n", "GEMMA3N"),
    ("convert.generations.gemma4", "GEMMA4"),
    ("convert.generations.gemma4", "GEMMA4_UNIFIED"),
    ("convert.generations.gemma4_assistant", "GEMMA4_ASSISTANT"),
    ("convert.generations.gemma4_assistant", "GEMMA4_UNIFIED_ASSISTANT"),
    ("convert.generations.embeddinggemma", "EMBEDDINGGEMMA"),
)


class UnsupportedArchitecture(ValueError):
    pass


def generations() -> Iterator[ConversionTable]:
    return listed(_GENERATIONS)


def supported_architectures() -> list[str]:
    return sorted(a for g in generations() for a in g.hf_architectures)


def generation_for(architecture: str | None) -> ConversionTable:
    """The generation converting ``architecture``, or a refusal naming the supported ones."""
    for generation in generations():
        if architecture in generation.hf_architectures:
            return generation
    raise UnsupportedArchitecture(
        f"unsupported architecture {architecture!r}; supported: {', '.join(supported_architectures())}"
    )
