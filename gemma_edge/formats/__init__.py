"""Gemma turn formats rendered by our own code, byte-exact with the official chat templates.

`render_prompt` gives the prompt string; `render_segments` gives the same string cut into
`Segment`s so the engine can tokenize renderer-emitted markers as control tokens and everything
else as plain text (see `gemma_edge.llama.tokenizer`). One module per format family holds everything that
differs between generations; `FORMAT_NAMES` lists the public names.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from gemma_edge.formats import classic, functiongemma, gemma3, gemma4
from gemma_edge.formats.base import (
    MediaExpansion, Request, Segment, SegmentWriter, TemplateError, TurnFormat, expand_media,
)

__all__ = [
    "FORMAT_NAMES", "MediaExpansion", "Segment", "TemplateError", "TurnFormat", "expand_media", "get_format",
    "render_prompt", "render_segments",
]

_FORMATS: dict[str, TurnFormat] = {f.name: f for f in (*classic.FORMATS, *gemma3.FORMATS, *gemma4.FORMATS, *functiongemma.FORMATS)}
FORMAT_NAMES: tuple[str, ...] = tuple(_FORMATS)


def get_format(name: str) -> TurnFormat:
    try:
        return _FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown turn format {name!r}; valid formats: {', '.join(FORMAT_NAMES)}") from None


def _render(messages, format, tools, enable_thinking, add_generation_prompt, strict, kwargs):
    turn_format = get_format(format)
    if isinstance(messages, (str, bytes)) or not all(isinstance(m, Mapping) for m in messages):
        raise TypeError("messages must be a list of dicts with 'role' and 'content'")
    request = Request(list(messages), tools, bool(enable_thinking), bool(add_generation_prompt),
                      bool(strict), kwargs)
    out = SegmentWriter()
    turn_format.render(request, out)
    return out


def render_prompt(
    messages: Sequence[Mapping[str, Any]], *, format: str, tools: Sequence[Mapping[str, Any]] | None = None,
    enable_thinking: bool = False, add_generation_prompt: bool = True, strict: bool = False, **kwargs: Any,
) -> str:
    """The prompt the official template of `format` renders (bos_token="<bos>"), as one string.

    `strict=True` raises `TemplateError` wherever the template raises; the default (lenient)
    renders the same string whenever the template succeeds and repairs what it would reject."""
    return _render(messages, format, tools, enable_thinking, add_generation_prompt, strict, kwargs).string()


def render_segments(
    messages: Sequence[Mapping[str, Any]], *, format: str, tools: Sequence[Mapping[str, Any]] | None = None,
    enable_thinking: bool = False, add_generation_prompt: bool = True, strict: bool = False, **kwargs: Any,
) -> list[Segment]:
    """`render_prompt` cut into segments: markers (special=True, one control token each) and
    text runs (special=False) whose texts concatenate to the prompt. A media placeholder is a
    marker carrying its content part (`Segment.part`); `expand_media` gives the model's view."""
    return _render(messages, format, tools, enable_thinking, add_generation_prompt, strict, kwargs).segments()
