"""The request body: JSON only, size- and depth-limited, text that can be encoded."""
from __future__ import annotations

import json
import math

from starlette.requests import Request

from gemma_edge.server import schema
from gemma_edge.server.errors import RequestError

MAX_NESTING = 64


async def read_json(request: Request, limit: int):
    """The request body as JSON, refusing non-JSON content types (a browser cannot send
    application/json cross-origin without a CORS preflight), oversized and malformed bodies."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise RequestError("Content-Type must be application/json", 415, code="unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise RequestError(f"request body is larger than {limit} bytes", 413, code="body_too_large")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise RequestError(f"request body is larger than {limit} bytes", 413, code="body_too_large")
    try:
        value = json.loads(bytes(data), parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise RequestError(f"request body is not valid JSON ({_short(e)})", code="invalid_json") from None
    if schema.nesting_depth(value) > MAX_NESTING:
        raise RequestError(f"request body nests deeper than {MAX_NESTING} levels", code="invalid_json")
    try:  # "\ud800" is valid JSON but no text: refuse it here, not deep in the tokenizer
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError("request body contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)",
                           code="invalid_json") from None
    return value


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value
