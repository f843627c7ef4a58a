"""The chat page at `/`: one self-contained HTML file (package data `static/chat.html`, inline CSS and
JS, nothing fetched from elsewhere) that talks to this server's own /v1 API.

The page is served without the API key (it holds no data; every API call it makes carries the key
the user typed). A Content-Security-Policy allows only the page's own inline script and style (by
hash), requests to this origin and data:/blob: media, so even a rendering bug cannot run model text
as script or send anything elsewhere.
"""
from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response

PAGE_PATH = "/"
INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


@lru_cache(maxsize=1)
def page() -> tuple[bytes, str]:
    """The page's bytes and its Content-Security-Policy."""
    html = files("gemma_edge.server").joinpath("static", "chat.html").read_text(encoding="utf-8")
    hashes = {"script": [], "style": []}
    for kind, body in INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    policy = "; ".join([
        "default-src 'none'", f"script-src {' '.join(hashes['script'])}", f"style-src {' '.join(hashes['style'])}",
        "connect-src 'self'", "img-src 'self' data: blob:", "media-src data: blob:", "base-uri 'none'",
        "form-action 'none'", "frame-ancestors 'none'"])
    return html.encode("utf-8"), policy


async def chat_page(request: Request) -> Response:
    body, policy = page()
    return Response(body, media_type="text/html", headers={
        "content-security-policy": policy, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
        "x-frame-options": "DENY", "cache-control": "no-cache"})


def capabilities(model) -> dict:
    """What the page (and any client) may offer for the loaded model: media kinds its projector takes,
    whether thinking and tools change the prompt, the thinking default, whether it is instruction-tuned,
    and whether it is an embedding model (then it chats not at all: /v1/embeddings only)."""
    if model.embeds:
        return {"image": False, "audio": False, "thinking": False, "thinking_default": False, "tools": False,
                "instruct": False, "embeds": True}
    turn_format = model.turn_format
    return {"image": model.engine.supports("image"), "audio": model.engine.supports("audio"),
            "thinking": turn_format.supports_thinking, "thinking_default": model.default_thinking,
            "tools": turn_format.supports_tools, "instruct": bool(model.instruct), "embeds": False}
