"""Images and audio on the command line: the --image/--audio/--mmproj options, the content parts they
become, and the attachments chat's /image and /audio collect for the next message."""
from __future__ import annotations

from pathlib import Path

import click

from gemma_edge.media import Media, MediaError, load_file, load_media

KINDS = ("image", "audio")


def media_options(fn):
    """--image, --audio (repeatable), --mmproj, --allow-remote-images."""
    options = [
        click.option("--image", "images", multiple=True, metavar="FILE",
                     help="An image for the model (PNG, JPEG, WebP, GIF, BMP; repeatable, kept in order, placed "
                          "before the text). A path, a file:// or data: URL, or http(s) with --allow-remote-images."),
        click.option("--audio", "audios", multiple=True, metavar="FILE",
                     help="An audio clip (WAV, MP3, FLAC; repeatable) for models with an audio encoder "
                          "(Gemma 4 E2B/E4B; Gemma 3n audio is not supported by llama.cpp yet); placed after the "
                          "images, before the text."),
        click.option("--mmproj", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="The model's projector GGUF (image/audio encoder). Default: the registry's, or "
                          "mmproj-<model>.gguf beside the model file."),
        click.option("--allow-remote-images", "allow_remote", is_flag=True,
                     help="Let --image (and /image in chat) fetch http(s) URLs (size- and time-limited). "
                          "Off by default: nothing leaves this machine."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def is_url(source: str) -> bool:
    return source.startswith("data:") or "://" in source


def media_part(kind: str, source: str, *, allow_remote: bool = False) -> dict:
    """A validated content part for `source` (a path or URL); MediaError (one line) when unusable."""
    if is_url(source):
        return {"type": kind, "url": source, "media": load_media({"type": kind, "url": source},
                                                                 allow_remote=allow_remote)}
    # The absolute path stays in the part so a saved chat names the file it came from.
    return {"type": kind, "path": str(Path(source).absolute()), "media": load_file(source, kind)}


def media_parts(images, audios, *, allow_remote: bool = False) -> list[dict]:
    """--image values then --audio values, each in the order given."""
    return ([media_part("image", source, allow_remote=allow_remote) for source in images]
            + [media_part("audio", source, allow_remote=allow_remote) for source in audios])


def user_content(parts: list[dict], text: str):
    """A user message's content: the media first, then the text (as Google's examples order them)."""
    return [*parts, {"type": "text", "text": text}] if parts else text


def require_support(model, parts: list[dict]) -> None:
    """A clear error before generating when the loaded model cannot take a part's kind."""
    for kind in dict.fromkeys(part["type"] for part in parts):
        if not model.engine.supports(kind):
            raise MediaError(unsupported_message(model, kind))


def unsupported_message(model, kind: str) -> str:
    if not model.engine.supports("image") and not model.engine.supports("audio"):
        return (f"{model.facts.name} has no projector loaded, so it cannot take {kind} input "
                f"(give --mmproj FILE, or put mmproj-{model.facts.path.stem}.gguf beside the model)")
    return f"{model.facts.name}'s projector has no {kind} encoder"


def describe(media: Media, source: str) -> str:
    """A short confirmation line for an attachment."""
    name = source if is_url(source) and not source.startswith("data:") else (
        "data: URL" if is_url(source) else Path(source).name)
    if media.kind == "image":
        return f"{name}, {media.width}x{media.height}"
    return f"{name}, {len(media.data) / 1024:.0f} KB"


class Attachments:
    """Media waiting for the next user message (chat's --image/--audio, /image and /audio)."""

    def __init__(self, model, parts: list[dict], *, allow_remote: bool = False):
        self.model, self.allow_remote = model, allow_remote
        self.parts = list(parts)

    def attach(self, kind: str, source: str) -> str:
        """Validate and queue one file; the confirmation line. Raises MediaError (one line)."""
        if not self.model.engine.supports(kind):
            raise MediaError(unsupported_message(self.model, kind))
        part = media_part(kind, source, allow_remote=self.allow_remote)
        self.parts.append(part)
        return f"({kind} {describe(part['media'], source)} attached to your next message)"

    def take(self) -> list[dict]:
        parts, self.parts = self.parts, []
        return parts

    def put_back(self, parts: list[dict]) -> None:
        self.parts = parts + self.parts

    def clear(self) -> None:
        self.parts = []
