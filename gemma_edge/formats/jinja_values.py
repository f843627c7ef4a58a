"""How a Jinja template sees Python values, for renderers that reproduce templates by hand:
missing keys are `UNDEFINED` (prints as "", iterates as nothing), `dictsort` sorts keys
case-insensitively and stably, `is sequence` is true for anything with a length and items."""
from __future__ import annotations

from typing import Any, Mapping


class _Undefined:
    """Jinja's Undefined: falsy, prints as "", iterates as nothing."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return ""

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __iter__(self):
        return iter(())


UNDEFINED = _Undefined()


def item(obj: Any, key: str) -> Any:
    """`obj[key]` in a template: UNDEFINED where the key (or the mapping) is missing."""
    if isinstance(obj, Mapping):
        return obj.get(key, UNDEFINED)
    return UNDEFINED


def printed(value: Any) -> str:
    """`{{ value }}`."""
    return value if isinstance(value, str) else str(value)


def trim(value: Any) -> str:
    """`value | trim`: str.strip() (any Unicode whitespace) of the printed value."""
    return printed(value).strip()


def upper(value: Any) -> str:
    """`value | upper`."""
    return printed(value).upper()


def dictsort(mapping: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """`mapping | dictsort`: by key, case-insensitive, ties in insertion order."""
    return sorted(mapping.items(), key=lambda kv: kv[0].lower() if isinstance(kv[0], str) else kv[0])


def is_sequence(value: Any) -> bool:
    """Jinja's `is sequence` (true for strings and mappings too, and for Undefined)."""
    return value is UNDEFINED or (hasattr(value, "__len__") and hasattr(value, "__getitem__"))
