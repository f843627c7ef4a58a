"""Registries of optional modules: the values a list of ``(module, attribute)`` names, imported on
first use and in order, skipping a module that does not exist (yet) — so converting Gemma 2 never
imports the Gemma 4 modules, and a registry may list a module before it is written."""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any


@cache
def _load(module_name: str, attribute: str) -> Any | None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            return None
        raise
    return getattr(module, attribute)


def listed(entries: Sequence[tuple[str, str]]) -> Iterator[Any]:
    """The attribute of every listed module that exists, in list order."""
    for module_name, attribute in entries:
        value = _load(module_name, attribute)
        if value is not None:
            yield value
