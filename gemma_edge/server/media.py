"""Images and audio in chat requests: decoded and validated before the request joins the queue.

`mapping` has already turned OpenAI's `image_url` / `input_audio` parts into gemma-edge parts whose
source is a data: URL (or http(s), when the server allows remote images) or base64 audio. Here each is
decoded with `gemma_edge.media` (size, pixel and duration limits) into `{"type", "media": Media}`; the
model must have an encoder for its kind. Every refusal is a 400 naming the part.
"""
from __future__ import annotations

from typing import Callable

from gemma_edge.media import KIND_OF_PART, Limits, MediaError, load_media
from gemma_edge.server.errors import RequestError

MAX_MEDIA_PARTS = 16  # per request: each image costs a full decode and hundreds of context positions
TEXT_BODY_BYTES = 2 << 20  # request body limit of a text-only model


def default_body_limit(takes_media: bool, limits: Limits) -> int:
    """Text-only: 2 MiB. With a projector: room for one image/clip at the media byte limit as
    base64 (4 characters per 3 bytes) on top, so a 20 MB photo fits and a bigger body still gets 413."""
    return TEXT_BODY_BYTES + (-(-limits.max_bytes // 3) * 4 if takes_media else 0)


def has_media(messages) -> bool:
    return isinstance(messages, list) and any(True for _ in _media_parts(messages))


def decode_media(messages: list[dict], *, supports: Callable[[str], bool], allow_remote: bool,
                 limits: Limits) -> list[dict]:
    """`messages` with every media part replaced by its decoded form (the input is not modified)."""
    found = list(_media_parts(messages))
    if len(found) > MAX_MEDIA_PARTS:
        raise RequestError(f"messages: {len(found)} images/audio clips in one request; at most {MAX_MEDIA_PARTS}",
                           param="messages", code="too_many_media")
    out = [dict(m) for m in messages]
    for i, j, part in found:
        where = f"messages[{i}].content[{j}]"
        kind = KIND_OF_PART[part["type"]]
        if not supports(kind):
            raise RequestError(f"{where}: the loaded model cannot take {kind} input ({_missing(kind, supports)})",
                               param=where, code="unsupported_content")
        try:
            media = load_media(part, allow_remote=allow_remote, limits=limits)
        except MediaError as e:
            raise RequestError(f"{where}: {e}", param=where, code="invalid_media") from None
        if out[i]["content"] is messages[i]["content"]:
            out[i]["content"] = list(messages[i]["content"])
        out[i]["content"][j] = {"type": kind, "media": media}
    return out


def _missing(kind: str, supports: Callable[[str], bool]) -> str:
    if supports("image") or supports("audio"):
        return f"its projector has no {kind} encoder"
    return "no projector loaded: start serve with --mmproj FILE"


def _media_parts(messages: list[dict]):
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part.get("type") in KIND_OF_PART:
                    yield i, j, part
