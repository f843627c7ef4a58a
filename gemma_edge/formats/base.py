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
    (each is exactly one control token); everything else, including user text, is `special=False`."""

    text: str
    special: bool


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
    stop_markers: tuple[str, ...] = ()  # besides end_of_turn: where generation must stop (the
    # marker that opens a tool result, which the model writes after its calls)
    # Markers after which the runtime, not the model, continues: generation stops there too
    # (Gemma 4's <|tool_response>: the model has called a tool and waits for its result).
    stop_markers: tuple[str, ...] = ()


class SegmentWriter:
    """Collects the output of a renderer as (text, special) pieces; cheap to append to."""

    __slots__ = ("_pieces",)

    def __init__(self) -> None:
        self._pieces: list[tuple[str, bool]] = []

    def text(self, text: str) -> None:
        if text:
            self._pieces.append((text, False))

    def mark(self, marker: str) -> None:
        self._pieces.append((marker, True))

    def extend(self, other: "SegmentWriter") -> None:
        self._pieces.extend(other._pieces)

    def string(self) -> str:
        return "".join([piece for piece, _ in self._pieces])

    def segments(self) -> list[Segment]:
        """Markers one per segment; adjacent text joined, so a text run tokenizes as one piece
        exactly like the whole prompt would between two control tokens."""
        out: list[Segment] = []
        run: list[str] = []
        for piece, special in self._pieces:
            if special:
                if run:
                    out.append(Segment("".join(run), False))
                    run = []
                out.append(Segment(piece, True))
            else:
                run.append(piece)
        if run:
            out.append(Segment("".join(run), False))
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
