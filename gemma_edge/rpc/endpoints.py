"""Worker addresses: `host:port` lists, and a plain TCP look before ggml-rpc (which aborts the whole
process on a refused connection) is let near them."""
from __future__ import annotations

import socket
import time
from typing import Sequence

from gemma_edge.errors import RpcError

DEFAULT_PORT = 50052
INSECURE = ("the RPC protocol has no authentication and no encryption: anyone who can reach this port "
            "can read and overwrite the worker's memory and make it compute")
CONNECT_TIMEOUT_S = 3.0


def parse_endpoints(value: str | Sequence[str]) -> list[str]:
    """`host:port[,host:port…]` (or a list of them) → normalised `host:port` strings, in order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    endpoints = []
    for item in (i.strip() for i in items):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RpcError(f"{item!r} is not a worker address: expected host:port (e.g. 192.168.1.20:{DEFAULT_PORT})")
        endpoint = f"{host}:{int(port)}"
        if endpoint in endpoints:
            raise RpcError(f"worker {endpoint} is listed twice")
        endpoints.append(endpoint)
    if not endpoints:
        raise RpcError("no worker address given")
    return endpoints


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def reachable(endpoint: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """A plain TCP connect: ggml-rpc aborts the process on a refused connection, so look first."""
    try:
        with socket.create_connection(_host_port(endpoint), timeout=timeout):
            return True
    except OSError:
        return False


def unreachable(endpoints: Sequence[str], timeout: float = CONNECT_TIMEOUT_S) -> list[str]:
    return [e for e in endpoints if not reachable(e, timeout)]


def ensure_reachable(endpoints: Sequence[str]) -> None:
    down = unreachable(endpoints)
    if down:
        raise RpcError(f"cannot reach RPC worker {', '.join(down)}: start `gemma-edge worker --host HOST "
                       f"--port PORT` there (and check the firewall)")


def wait_until_listening(endpoint: str, timeout: float) -> bool:
    """Poll until a worker accepts connections (used by scripts and tests that start workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable(endpoint, timeout=0.5):
            return True
        time.sleep(0.1)
    return False
