"""Registry of Gemma generations, keyed by the Hugging Face architecture name (``architectures[0]``).

Add a generation by writing ``convert/generations/<name>.py`` (see ``base.py``'s docstring) and listing
its :class:`~convert.generations.base.Generation` in ``_GENERATIONS`` below. Modules that are not
present yet (work in progress elsewhere) are skipped, so the registry always imports.
"""
from __future__ import annotations

import importlib

from convert.generations.base import Generation

# (module, attribute) of every generation, oldest first.
_GENERATIONS = (
    ("convert.generations.gemma", "GEMMA"),
    ("convert.generations.gemma2", "GEMMA2"),
    ("convert.generations.gemma3", "GEMMA3"),
    ("convert.generations.gemma3n", "GEMMA3N"),
    ("convert.generations.gemma4", "GEMMA4"),
)


class UnsupportedArchitecture(ValueError):
    pass


def _load() -> dict[str, Generation]:
    registry: dict[str, Generation] = {}
    for module_name, attribute in _GENERATIONS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue
            raise
        generation: Generation = getattr(module, attribute)
        for architecture in generation.hf_architectures:
            registry[architecture] = generation
    return registry


REGISTRY: dict[str, Generation] = _load()


def supported_architectures() -> list[str]:
    return sorted(REGISTRY)


def generation_for(architecture: str | None) -> Generation:
    """The generation converting ``architecture``, or a refusal naming the supported ones."""
    if architecture in REGISTRY:
        return REGISTRY[architecture]
    raise UnsupportedArchitecture(
        f"unsupported architecture {architecture!r}; supported: {', '.join(supported_architectures())}"
    )
