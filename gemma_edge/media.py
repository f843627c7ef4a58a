"""Images and audio from message parts, validated before they reach llama.cpp.

`load_media(part)` turns one content part into a `Media` value: an image decoded by Pillow to
RGB888 rows (EXIF orientation applied and transparency composited onto white, as transformers'
`load_image` + the Gemma image processors' `convert_to_rgb` do), or an audio file's encoded bytes
(WAV, MP3 or FLAC, recognised by the magic bytes mtmd's decoder checks) for mtmd to decode.

Where a part may come from: a local path, raw bytes, a `data:` URL (strict base64), a `file://`
URL, or — only with `allow_remote=True` — an http(s) URL fetched with a size and time limit. A part
that already carries a decoded `Media` under "media" (the CLI and server validate early) is used as is.
Every failure is a `MediaError`: one line naming the source and the reason.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import stat
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gemma_edge.errors import GemmaEdgeError


class MediaError(GemmaEdgeError):
    """An image or audio input that cannot be used (missing, unreadable, not allowed, too big)."""


@dataclass(frozen=True)
class Media:
    kind: str                # "image" | "audio"
    digest: str              # sha256 hex of the decoded payload (identity for KV-cache reuse)
    width: int = 0
    height: int = 0
    rgb: bytes = b""         # image: RGB888 rows, EXIF orientation applied
    data: bytes = b""        # audio: the validated encoded file bytes (wav/mp3/flac) for mtmd's decoder


@dataclass(frozen=True)
class Limits:
    """How much a single media input may be. Defaults come from the environment (see `from_env`)."""
    max_bytes: int = 20 * 1024 * 1024          # encoded size, before decoding
    max_pixels: int = 50_000_000               # width * height, checked from the header before decoding
    max_audio_seconds: float = 600.0           # WAV and FLAC (their headers state it); MP3 by size only
    fetch_timeout: float = 20.0                # whole remote fetch, seconds

    @classmethod
    def from_env(cls) -> "Limits":
        def number(name, default, kind):
            raw = os.environ.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise MediaError(f"{name}={raw!r} is not a number") from None
            if value <= 0:
                raise MediaError(f"{name}={raw!r} must be positive")
            return value
        base = cls()
        return cls(
            max_bytes=number("GEMMA_EDGE_MEDIA_MAX_BYTES", base.max_bytes, int),
            max_pixels=number("GEMMA_EDGE_MEDIA_MAX_PIXELS", base.max_pixels, int),
            max_audio_seconds=number("GEMMA_EDGE_MEDIA_MAX_AUDIO_SECONDS", base.max_audio_seconds, float),
            fetch_timeout=number("GEMMA_EDGE_MEDIA_FETCH_TIMEOUT", base.fetch_timeout, float),
        )


# Pillow format names we decode; anything else (TIFF, PSD, EPS, ICO, ...) is refused.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
AUDIO_FORMATS = ("wav", "mp3", "flac")
KIND_OF_PART = {"image": "image", "image_url": "image", "audio": "audio", "input_audio": "audio"}


# --- entry points ---------------------------------------------------------------------------------

def load_media(part: Mapping, *, allow_remote: bool = False, limits: Limits | None = None) -> Media:
    """One content part -> Media. See the module docstring for the accepted shapes."""
    limits = limits or Limits.from_env()
    if not isinstance(part, Mapping):
        raise MediaError(f"a media part must be an object, got {type(part).__name__}")
    kind = KIND_OF_PART.get(part.get("type"))
    if kind is None:
        raise MediaError(f"unknown media part type {part.get('type')!r} (expected one of "
                         f"{', '.join(KIND_OF_PART)})")
    decoded = part.get("media")
    if decoded is not None:  # validated already (CLI, server): used as is
        if not isinstance(decoded, Media) or decoded.kind != kind:
            raise MediaError(f"{part['type']} part: 'media' must be a decoded {kind}")
        return decoded
    label, payload = _part_bytes(part, kind, allow_remote, limits)
    return decode(payload, kind, label, limits)


def load_file(path, kind: str, *, limits: Limits | None = None) -> Media:
    """A local file named by the user (CLI --image/--audio, chat's /image and /audio)."""
    if kind not in ("image", "audio"):
        raise MediaError(f"unknown media kind {kind!r} (expected image or audio)")
    limits = limits or Limits.from_env()
    return decode(_read_file(Path(path), limits), kind, str(path), limits)


def decode(payload: bytes, kind: str, label: str, limits: Limits) -> Media:
    """Validated bytes of an image or audio file -> Media."""
    if not payload:
        raise MediaError(f"{label}: empty {kind}")
    if len(payload) > limits.max_bytes:
        raise _too_big(label, len(payload), limits)
    return _decode_image(payload, label, limits) if kind == "image" else _decode_audio(payload, label, limits)


# --- where the bytes come from --------------------------------------------------------------------

def _part_bytes(part: Mapping, kind: str, allow_remote: bool, limits: Limits) -> tuple[str, bytes]:
    ptype = part["type"]
    if ptype == "image_url":
        ref = part.get("image_url")
        url = ref.get("url") if isinstance(ref, Mapping) else ref
        if not isinstance(url, str):
            raise MediaError("image_url part: missing image_url.url")
        return _short(url), _url_bytes(url, kind, allow_remote, limits)
    if ptype == "input_audio":
        return "input_audio part", _input_audio_bytes(part.get("input_audio"), limits)
    sources = [key for key in ("path", "bytes", "url") if part.get(key) is not None]
    if len(sources) != 1:
        raise MediaError(f"{ptype} part: needs exactly one of path, bytes or url "
                         f"(got {', '.join(sources) or 'none'})")
    source = sources[0]
    value = part[source]
    if source == "path":
        if not isinstance(value, (str, os.PathLike)):
            raise MediaError(f"{ptype} part: path must be a string")
        return str(value), _read_file(Path(value), limits)
    if source == "bytes":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise MediaError(f"{ptype} part: bytes must be bytes, got {type(value).__name__}")
        return f"{ptype} part bytes", bytes(value)
    if not isinstance(value, str):
        raise MediaError(f"{ptype} part: url must be a string")
    return _short(value), _url_bytes(value, kind, allow_remote, limits)


def _url_bytes(url: str, kind: str, allow_remote: bool, limits: Limits) -> bytes:
    scheme = urllib.parse.urlsplit(url).scheme.lower() if ":" in url else ""
    if scheme == "data":
        return _data_url_bytes(url, kind, limits)
    if scheme == "file":
        return _read_file(_file_url_path(url), limits)
    if scheme in ("http", "https"):
        if not allow_remote:
            raise MediaError(f"{_short(url)}: remote {kind}s are not fetched "
                             f"(start with --allow-remote-images to allow http(s) URLs)")
        return _fetch(url, limits)
    raise MediaError(f"{_short(url)}: unsupported URL scheme {scheme!r} "
                     f"(use a data: URL, a file:// URL or a path)")


def _data_url_bytes(url: str, kind: str, limits: Limits) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma:
        raise MediaError("data: URL without a comma before its payload")
    params = header[len("data:"):].split(";")
    mime = params[0].strip().lower()
    if "base64" not in (p.strip().lower() for p in params[1:]):
        raise MediaError("data: URL is not base64 (expected data:<mime>;base64,<data>)")
    if mime and not (mime.startswith(kind + "/") or mime == "application/octet-stream"):
        raise MediaError(f"data: URL has type {mime!r}, expected {kind}/*")
    return _b64decode(payload, "data: URL", limits)


def _input_audio_bytes(spec, limits: Limits) -> bytes:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("data"), str):
        raise MediaError("input_audio part: needs input_audio.data (base64) and input_audio.format")
    fmt = spec.get("format")
    if fmt not in AUDIO_FORMATS:
        raise MediaError(f"input_audio part: format {fmt!r} is not one of {', '.join(AUDIO_FORMATS)}")
    payload = _b64decode(spec["data"], "input_audio part", limits)
    found = audio_format(payload)
    if found is not None and found != fmt:
        raise MediaError(f"input_audio part: format says {fmt} but the data is {found}")
    return payload


def _b64decode(text: str, label: str, limits: Limits) -> bytes:
    if len(text) // 4 * 3 > limits.max_bytes + 3:
        raise _too_big(label, len(text) // 4 * 3, limits)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(f"{label}: invalid base64 data") from None


def _file_url_path(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise MediaError(f"{_short(url)}: file:// URLs must name a local file (no host)")
    if parts.query or parts.fragment:
        raise MediaError(f"{_short(url)}: file:// URL with a query or fragment")
    return Path(urllib.request.url2pathname(parts.path))


def _read_file(path: Path, limits: Limits) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MediaError(f"{path}: no such file") from None
    except OSError as exc:
        raise MediaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise MediaError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(f"{path}: not a regular file")
    if info.st_size > limits.max_bytes:
        raise _too_big(str(path), info.st_size, limits)
    try:
        with path.open("rb") as handle:
            payload = handle.read(limits.max_bytes + 1)
    except OSError as exc:
        raise MediaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(payload) > limits.max_bytes:
        raise _too_big(str(path), len(payload), limits)
    return payload


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s) (urllib would also follow ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise MediaError(f"{_short(req.full_url)}: redirect to a non-http(s) URL refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(url: str, limits: Limits) -> bytes:
    deadline = time.monotonic() + limits.fetch_timeout
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    request = urllib.request.Request(url, headers={"User-Agent": "gemma-edge"})
    try:
        with opener.open(request, timeout=limits.fetch_timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limits.max_bytes:
                raise _too_big(_short(url), int(declared), limits)
            chunks, size = [], 0
            while chunk := response.read(64 * 1024):
                size += len(chunk)
                if size > limits.max_bytes:
                    raise _too_big(_short(url), size, limits)
                if time.monotonic() > deadline:
                    raise MediaError(f"{_short(url)}: download took longer than {limits.fetch_timeout:g} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise MediaError(f"{_short(url)}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise MediaError(f"{_short(url)}: cannot fetch ({exc.reason})") from None
    except (OSError, TimeoutError) as exc:
        raise MediaError(f"{_short(url)}: cannot fetch ({exc})") from None


# --- images ---------------------------------------------------------------------------------------

def _bomb_warning_is_an_error() -> None:
    """Pillow only warns for images between MAX_IMAGE_PIXELS and twice that; make it an error.

    The filter is process-wide (warnings.catch_warnings is not thread-safe, and the server decodes
    in worker threads); adding it again only moves it to the front, so a reset cannot lose it.
    """
    from PIL import Image

    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def _decode_image(payload: bytes, label: str, limits: Limits) -> Media:
    _bomb_warning_is_an_error()
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload), formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > limits.max_pixels:
                raise MediaError(f"{label}: {width}x{height} image has more than "
                                 f"{limits.max_pixels:,} pixels")
            image.seek(0)  # animated GIF/WebP: the first frame
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = _to_rgb(upright)
    except UnidentifiedImageError:
        raise MediaError(f"{label}: not an image in a supported format "
                         f"({', '.join(IMAGE_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(f"{label}: image has too many pixels (decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise MediaError(f"{label}: damaged image ({_reason(exc)})") from None
    pixels = rgb.tobytes()
    width, height = rgb.size
    digest = hashlib.sha256(b"%dx%d:" % (width, height) + pixels).hexdigest()
    return Media(kind="image", digest=digest, width=width, height=height, rgb=pixels)


def _to_rgb(image):
    """RGB with any transparency composited onto white (transformers' convert_to_rgb)."""
    from PIL import Image

    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


# --- audio ----------------------------------------------------------------------------------------

def audio_format(payload: bytes) -> str | None:
    """The audio container by its magic bytes, as mtmd's decoder recognises it; None if neither."""
    if len(payload) >= 12 and payload[:4] == b"RIFF" and payload[8:12] == b"WAVE":
        return "wav"
    if payload[:4] == b"fLaC":
        return "flac"
    if payload[:3] == b"ID3" or (len(payload) >= 2 and payload[0] == 0xFF and payload[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def _decode_audio(payload: bytes, label: str, limits: Limits) -> Media:
    fmt = audio_format(payload)
    if fmt is None:
        raise MediaError(f"{label}: not an audio file in a supported format ({', '.join(AUDIO_FORMATS)})")
    seconds = AUDIO_DURATION[fmt](payload, label)
    if seconds is not None and seconds > limits.max_audio_seconds:
        raise MediaError(f"{label}: {seconds:.1f} s of audio is longer than the "
                         f"{limits.max_audio_seconds:g} s limit")
    return Media(kind="audio", digest=hashlib.sha256(payload).hexdigest(), data=payload)


def _wav_seconds(payload: bytes, label: str) -> float:
    """Walk the RIFF chunks: fmt gives the byte rate, data its size (any sample encoding)."""
    offset, byte_rate = 12, None
    while offset + 8 <= len(payload):
        chunk_id, size = struct.unpack_from("<4sI", payload, offset)
        body = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(payload):
                break
            _, channels, rate, byte_rate, align, _ = struct.unpack_from("<HHIIHH", payload, body)
            if not (channels and rate and byte_rate and align):
                raise MediaError(f"{label}: WAV header with zero channels, rate or block size")
        elif chunk_id == b"data":
            if byte_rate is None:
                raise MediaError(f"{label}: WAV data chunk before its fmt chunk")
            if body + size > len(payload):
                raise MediaError(f"{label}: truncated WAV ({len(payload) - body} of {size} data bytes)")
            return size / byte_rate
        offset = body + size + (size & 1)
    raise MediaError(f"{label}: damaged WAV (no complete fmt and data chunks)")


def _flac_seconds(payload: bytes, label: str) -> float | None:
    """STREAMINFO (always the first metadata block) holds the sample rate and total samples."""
    if len(payload) < 8 + 34 or payload[4] & 0x7F != 0:
        raise MediaError(f"{label}: damaged FLAC (no STREAMINFO block)")
    info = int.from_bytes(payload[8 + 10:8 + 18], "big")
    rate, total = info >> 44, info & ((1 << 36) - 1)
    if rate == 0:
        raise MediaError(f"{label}: damaged FLAC (sample rate 0)")
    return total / rate if total else None  # 0 = unknown length: the size cap applies


AUDIO_DURATION = {
    "wav": _wav_seconds,
    "flac": _flac_seconds,
    "mp3": lambda payload, label: None,  # no reliable header length; the size cap applies
}


# --- messages -------------------------------------------------------------------------------------

def _too_big(label: str, size: int, limits: Limits) -> MediaError:
    return MediaError(f"{label}: {size / 1e6:.1f} MB is over the {limits.max_bytes / 1e6:.1f} MB limit "
                      f"(GEMMA_EDGE_MEDIA_MAX_BYTES)")


def _short(text: str, keep: int = 60) -> str:
    if text.startswith("data:"):
        return "data: URL"
    return text if len(text) <= keep else text[:keep] + "..."


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
