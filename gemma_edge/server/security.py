"""The checks every HTTP request passes before any endpoint: a Host-header allowlist (a web page
that rebinds its DNS name to 127.0.0.1 still sends its own name as Host, so it is refused) and,
with an API key, `Authorization: Bearer KEY` compared in constant time. The key is never logged
or echoed."""
from __future__ import annotations

import hmac
import json

from gemma_edge.server.errors import error_body_for

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
OPEN_PATHS = ("/health", "/")  # liveness checks and the chat page need no key and reveal nothing


def host_name(header: str) -> str:
    """The name in a Host header, without the port (`[::1]:8080` -> `::1`)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    name, sep, port = header.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else header


def allowed_hosts(bind_host: str, extra: tuple[str, ...] | list[str] = ()) -> frozenset[str] | None:
    """Host names the server answers to; None means any (`--allow-host '*'`)."""
    if "*" in extra:
        return None
    names = set(LOOPBACK_NAMES) | {h.lower().strip("[]") for h in extra}
    if bind_host not in WILDCARD_HOSTS:
        names.add(bind_host.lower().strip("[]"))
    return frozenset(names)


def key_matches(given: str | None, key: str) -> bool:
    """Constant-time comparison of the presented bearer token with the key."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                     key.encode("utf-8", "surrogateescape"))


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class HostAllowlist:
    """ASGI middleware: refuse requests whose Host header names a host we do not answer to."""

    def __init__(self, app, *, hosts: frozenset[str] | None):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.hosts is not None:
            host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"host"), "")
            if host_name(host) not in self.hosts:
                return await _reply(send, scope, 400, "Host header not allowed (start the server with --allow-host NAME "
                                                "to answer to another name)", code="host_not_allowed")
        return await self.app(scope, receive, send)


class ApiKey:
    """ASGI middleware: require `Authorization: Bearer KEY` (except for OPEN_PATHS). Sits inside
    the CORS middleware, so browsers' preflight requests (which carry no credentials) get answered."""

    def __init__(self, app, *, api_key: str):
        self.app, self._api_key = app, api_key

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path") not in OPEN_PATHS:
            authorization = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                                  if k.lower() == b"authorization"), None)
            if not key_matches(bearer_token(authorization), self._api_key):
                return await _reply(send, scope, 401, "missing or wrong API key (send Authorization: Bearer KEY)",
                                    code="invalid_api_key", extra_headers=[(b"www-authenticate", b"Bearer")])
        return await self.app(scope, receive, send)


async def _reply(send, scope, status: int, message: str, *, code: str, extra_headers=()) -> None:
    body = json.dumps(error_body_for(scope.get("path", ""), message, status, code=code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra_headers]})
    await send({"type": "http.response.body", "body": body})
