"""The `<start_of_turn>role ... <end_of_turn>` family shared by Gemma 1, 2, 3 and 3n.

The generations differ only in what their table says (does a leading system message fold into
the first user turn or is it an error, may content be a list of parts, which marker each media
part becomes); this module holds the one renderer they share.

Strict rendering reproduces the official templates, including their errors. Lenient rendering
is strict rendering whenever the template accepts the conversation; only when it would raise is
the conversation repaired first (see `_repair` and formats/README.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Mapping, Sequence

from gemma_edge.formats.base import BOS, MediaExpansion, Request, SegmentWriter, TemplateError, TurnFormat, part_type, role_of
from gemma_edge.formats.jinja_values import trim

START, END = "<start_of_turn>", "<end_of_turn>"
ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/..."
INVALID_CONTENT = "Invalid content type"
MISSING = object()


@dataclass(frozen=True)
class StartOfTurnTable:
    """What one generation's template does differently."""

    folds_system: bool                 # leading system message -> prefix of first user turn
    content_lists: bool                # content may be a list of parts (else: string only)
    media_markers: Mapping[str, str]   # part type -> marker the template prints for it
    media_expansion: Mapping[str, MediaExpansion] = field(default_factory=dict)  # how the model sees it


@dataclass(slots=True)
class _Turn:
    role: str
    body: list  # (text, None) or (media placeholder, its content part)


def render(table: StartOfTurnTable, request: Request, out: SegmentWriter) -> None:
    try:
        turns = _parse(table, request.messages)
    except TemplateError:
        if request.strict:
            raise
        turns = _repair(table, request.messages)
    out.mark(BOS)
    for turn in turns:
        out.mark(START)
        out.text(turn.role + "\n")
        for piece, part in turn.body:
            out.media(piece, part) if part is not None else out.text(piece)
        out.mark(END)
        out.text("\n")
    if request.add_generation_prompt:
        out.mark(START)
        out.text("model\n")


def _parse(table: StartOfTurnTable, messages: Sequence[Mapping[str, Any]]) -> list[_Turn]:
    """The template, step by step: raises TemplateError with its message where it fails."""
    if not messages:
        raise TemplateError("list object has no element 0")
    prefix = ""
    loop_messages = messages
    if messages[0].get("role") == "system":
        if not table.folds_system:
            raise TemplateError("System role not supported")
        prefix = _system_prefix(messages[0])
        loop_messages = messages[1:]
    turns = []
    for index, message in enumerate(loop_messages):
        if (message.get("role") == "user") != (index % 2 == 0):
            raise TemplateError(ALTERNATE)
        role = role_of(message)
        body = [(prefix, None)] if index == 0 and prefix else []
        body.extend(_content(table, message.get("content", MISSING)))
        turns.append(_Turn("model" if role == "assistant" else role, body))
    return turns


def _system_prefix(message: Mapping[str, Any]) -> str:
    """`messages[0]['content']` (a string) or `messages[0]['content'][0]['text']`, plus a blank line."""
    content = message.get("content", MISSING)
    if isinstance(content, str):
        return content + "\n\n"
    if content is MISSING:
        raise TemplateError("'dict object' has no attribute 'content'")
    if not isinstance(content, (list, tuple)):
        raise TemplateError(f"{content!r} has no element 0")
    if not content:
        raise TemplateError(f"{type(content).__name__} object has no element 0")
    first = content[0]
    if not isinstance(first, Mapping) or "text" not in first:
        raise TemplateError(f"'{_jinja_type(first)} object' has no attribute 'text'")
    if not isinstance(first["text"], str):
        raise TemplateError(
            f"unsupported operand type(s) for +: '{type(first['text']).__name__}' and 'str'")
    return first["text"] + "\n\n"


def _jinja_type(value: Any) -> str:
    return "dict" if isinstance(value, Mapping) else type(value).__name__


def _content(table: StartOfTurnTable, content: Any) -> list:
    if content is MISSING:
        return []
    if isinstance(content, str):
        return [(content.strip(), None)]
    if table.content_lists:
        if isinstance(content, Mapping):
            return []  # Jinja iterates a mapping's keys, which are not parts
        if isinstance(content, (list, tuple)):
            return _parts(table, content)
        raise TemplateError(INVALID_CONTENT)
    if content is None or isinstance(content, (list, tuple, Mapping)):
        # Gemma 1/2 would print Python's repr of the value; we refuse instead (see README).
        raise TemplateError(INVALID_CONTENT)
    return [(trim(content), None)]


def _parts(table: StartOfTurnTable, parts: Sequence[Any]) -> list:
    body = []
    for part in parts:
        kind = part_type(part)
        if kind == "text":
            body.append((trim(part.get("text", "")), None))
        elif kind in table.media_markers:
            body.append((table.media_markers[kind], part))
    return body


# ---- lenient repair -------------------------------------------------------------------------

def _repair(table: StartOfTurnTable, messages: Sequence[Mapping[str, Any]]) -> list[_Turn]:
    """Turn a conversation the template rejects into one it accepts:

    * leading system/developer messages become the first user turn's prefix (text + blank line,
      exactly as Gemma 3's template folds one system message);
    * every other non-assistant message (a later system, developer, tool ...) is a user turn;
    * consecutive turns of the same side are merged, their bodies separated by a blank line;
    * a conversation that starts with the model gets an empty user turn in front;
    * content that is None, or a list where only strings are allowed, is read for its text parts.
    """
    index = 0
    system_texts = []
    while index < len(messages) and role_of(messages[index]) in ("system", "developer"):
        content = messages[index].get("content")
        if isinstance(content, str):
            system_texts.append(content)  # as Gemma 3 folds it: untrimmed
        elif content is not None:
            system_texts.append(_flat_text(content))
        index += 1
    turns: list[_Turn] = []
    for message in messages[index:]:
        role = "model" if role_of(message) == "assistant" else "user"
        body = _lenient_content(table, message.get("content"))
        if turns and turns[-1].role == role:
            previous = turns[-1].body
            if body and any(piece for piece, _ in previous):
                previous.append(("\n\n", None))
            previous.extend(body)
        else:
            turns.append(_Turn(role, body))
    if system_texts or (turns and turns[0].role == "model"):
        if not turns or turns[0].role == "model":
            turns.insert(0, _Turn("user", []))
        if system_texts:
            turns[0].body.insert(0, ("\n\n".join(system_texts) + "\n\n", None))
    return turns


def _flat_text(content: Any) -> str:
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, (list, tuple)):
        return "".join(trim(p.get("text", "")) for p in content if part_type(p) == "text")
    return "" if content is None else trim(content)


def _lenient_content(table: StartOfTurnTable, content: Any) -> list:
    if content is None or content is MISSING:
        return []
    if isinstance(content, (list, tuple)):
        parts = _parts(table, content)
        return parts if table.content_lists else [(_flat_text(content), None)]
    return [(trim(content), None)]


def turn_format(name: str, table: "StartOfTurnTable") -> TurnFormat:
    """A public format of this family: no native system role, thinking or tools; `table` decides the rest."""
    return TurnFormat(
        name=name,
        end_of_turn=END,
        supports_thinking=False,
        supports_tools=False,
        supports_system=False,
        render=partial(render, table),
        media=tuple(table.media_markers),
        media_expansion=table.media_expansion,
    )
