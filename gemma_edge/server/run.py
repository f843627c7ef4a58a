"""Running the app: bind the socket first (so the real port is known, also for port 0), announce
it on stderr, then hand the socket to uvicorn."""
from __future__ import annotations

import socket
import sys


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound socket on host:port (port 0: a free one). Raises OSError."""
    family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def serve_app(app, sock: socket.socket, *, model_id: str, max_connections: int = 256, on_listening=None) -> None:
    """Serve until interrupted. The first stderr line names the URL (tests and scripts read it).
    `on_listening(url)` runs once the socket accepts connections (they wait until uvicorn takes them)."""
    import uvicorn

    url = url_of(sock)
    print(f"gemma-edge: serving {model_id} on {url}/v1 (chat page: {url}/)", file=sys.stderr, flush=True)
    sock.listen(max_connections)
    if on_listening is not None:
        on_listening(url + "/")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                            limit_concurrency=max_connections, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])
