"""Pieces every turn format shares: the segment type, the error type, the request a renderer
reads, the writer it emits into, and the content-part helpers that mimic how Jinja prints values.

Renderers never build one big string by concatenation: they write markers (control tokens the
renderer itself emits) and text into a `SegmentWriter`, so the engine can tokenize the two kinds
differently and user text can never turn into a control token.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

BOS = "<bos>"


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of a rendered prompt. `special=True` only for markers the renderer emitted
    (each is exactly one control token); everything else, including user text, is `special=False`.
    A media placeholder is a marker that also carries `part`, the content part it stands for (so
    the k-th placeholder is tied to its part, not found by counting)."""

    text: str
    special: bool
    part: Any = field(default=None, compare=False)

    @property
    def is_media(self) -> bool:
        return self.part is not None


@dataclass(frozen=True, slots=True)
class MediaExpansion:
    """How the model sees one media placeholder, as transformers' processor expands it: `before`,
    the `begin` marker, one position per embedding (the processor writes `soft_token` there), the
    `end` marker, `after`. `begin`/`end` are what llama.cpp's mtmd puts around the same projector's
    embeddings (img_beg/img_end, aud_beg/aud_end). `before`/`after` are text: they join the
    neighbouring text before tokenization, as the processor tokenizes its expanded string."""

    begin: str
    end: str
    soft_token: str
    before: str = ""
    after: str = ""


class TemplateError(Exception):
    """The conversation is one the official template rejects; the message is the template's own."""


@dataclass(frozen=True, slots=True)
class Request:
    """Everything a renderer may read: the arguments of `render_prompt`, `kwargs` being extra
    template variables (e.g. `preserve_thinking`)."""

    messages: Sequence[Mapping[str, Any]]
    tools: Sequence[Mapping[str, Any]] | None
    enable_thinking: bool
    add_generation_prompt: bool
    strict: bool
    variables: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnFormat:
    """One public turn format: its facts (for the engine and the chat loop) and its renderer."""

    name: str
    end_of_turn: str          # the marker that ends a model turn; the engine stops on it
    supports_thinking: bool   # `enable_thinking` changes the prompt
    supports_tools: bool      # `tools` are declared in the prompt
    supports_system: bool     # the template has a native system role (not folded into a user turn)
    render: Callable[[Request, "SegmentWriter"], None] = field(repr=False, compare=False)
    media: tuple[str, ...] = ()  # content-part types the format has a placeholder for
    # Markers after which the runtime, not the model, continues: generation stops there too
    # (Gemma 4's <|tool_response>: the model has called a tool and waits for its result).
    stop_markers: tuple[str, ...] = ()
    # part type -> how its placeholder expands for the model; a placeholder without an entry
    # (Gemma 4's video) renders but cannot be given to the model
    media_expansion: Mapping[str, MediaExpansion] = field(default_factory=dict)

    @property
    def stops(self) -> tuple[str, ...]:
        """Every marker generation stops at besides EOS: `end_of_turn`, then `stop_markers`."""
        return (self.end_of_turn, *self.stop_markers)


class SegmentWriter:
    """Collects the output of a renderer as (text, special) pieces; cheap to append to."""

    __slots__ = ("_pieces",)

    def __init__(self) -> None:
        self._pieces: list[tuple[str, bool, Any]] = []

    def text(self, text: str) -> None:
        if text:
            self._pieces.append((text, False, None))

    def mark(self, marker: str) -> None:
        self._pieces.append((marker, True, None))

    def media(self, marker: str, part: Mapping[str, Any]) -> None:
        """The placeholder `marker` the template prints for the content part `part`."""
        self._pieces.append((marker, True, part))

    def extend(self, other: "SegmentWriter") -> None:
        self._pieces.extend(other._pieces)

    def string(self) -> str:
        return "".join([piece for piece, _, _ in self._pieces])

    def segments(self) -> list[Segment]:
        """Markers one per segment; adjacent text joined, so a text run tokenizes as one piece
        exactly like the whole prompt would between two control tokens."""
        out: list[Segment] = []
        run: list[str] = []
        for piece, special, part in self._pieces:
            if special:
                if run:
                    out.append(Segment("".join(run), False))
                    run = []
                out.append(Segment(piece, True, part))
            else:
                run.append(piece)
        if run:
            out.append(Segment("".join(run), False))
        return out


def expand_media(segments: Sequence[Segment], expansion: Mapping[str, MediaExpansion]) -> list[Segment]:
    """The prompt as the model sees it: each media placeholder replaced by its expansion's text and
    markers around one media segment (still carrying its part), adjacent text joined into one run.
    Raises KeyError for a placeholder whose part type has no expansion."""
    out: list[Segment] = []

    def text(value: str) -> None:
        if not value:
            return
        if out and not out[-1].special:
            out[-1] = Segment(out[-1].text + value, False)
        else:
            out.append(Segment(value, False))

    for segment in segments:
        if segment.is_media:
            rule = expansion[part_type(segment.part)]
            text(rule.before)
            out.append(Segment(rule.begin, True))
            out.append(segment)
            out.append(Segment(rule.end, True))
            text(rule.after)
        elif segment.special:
            out.append(segment)
        else:
            text(segment.text)
    return out


# OpenAI content-part types and the Gemma-template type they stand for.
PART_ALIASES = {"image_url": "image", "input_audio": "audio"}


def part_type(part: Any) -> Any:
    """The type of a content part, OpenAI aliases mapped to the template names; None for a part
    that is not a mapping (the templates skip those)."""
    if not isinstance(part, Mapping):
        return None
    kind = part.get("type")
    return PART_ALIASES.get(kind, kind)


def role_of(message: Mapping[str, Any]) -> str:
    role = message.get("role") if isinstance(message, Mapping) else None
    if not isinstance(role, str):
        raise TemplateError(f"every message needs a string 'role', got {message!r:.80}")
    return role
