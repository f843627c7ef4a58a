"""A local stand-in for the Hugging Face hub's file endpoints, so downloads are tested end to end.

It speaks the protocol huggingface-hub (2.x, `file_download.py`) uses in `hf_hub_download`:

* `HEAD {endpoint}/{repo}/resolve/{revision}/{filename}` gives the file's metadata.
  - A regular (git) file: 200 with `ETag` (the git blob sha1), `Content-Length`, `X-Repo-Commit`.
  - An LFS file (every model file on the real hub): 302 to a CDN on another origin, carrying
    `X-Repo-Commit`, `X-Linked-Etag` (the sha256), `X-Linked-Size` and `Location`. The client
    stops at a redirect to another origin and downloads from `Location` without its token.
* `GET` of the same URL (regular files) or of the CDN URL (LFS files) streams the body and honours
  `Range: bytes=N-` with 206 + `Content-Range`, which is how the client resumes a broken download.
* Errors come as the hub sends them: `X-Error-Code: GatedRepo` with 401 (no token) or 403 (a token
  whose owner has not accepted the licence), `RepoNotFound` 401, `RevisionNotFound` /
  `EntryNotFound` 404. Anything else is a plain 404, recorded like the rest.
* `GET /api/agent-harnesses`, which the client fetches once a day for its user-agent header, gets
  an empty list (no agent recognised); `file_requests()` leaves it out.

It never sends `X-Xet-Hash` or a xet-auth `Link`, so the client never switches to Xet storage.

Switches for failure tests live on each `HubFile` (`cut_after`, `stall_after`, `corrupt`) and on the server
(`gated`); every request is recorded in `requests` so a test can check what the client asked for.
Both listeners run on 127.0.0.1 on free ports in daemon threads; `stop()` (or leaving the `with`
block) shuts them down, and idle keep-alive connections time out by themselves.
"""
from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class HubFile:
    """One file of a repo. `content` is what the hub's metadata describes (size, sha256, etag)."""
    content: bytes
    lfs: bool = True
    cut_after: int | None = None  # the next GET that reaches this byte offset drops the connection there
    cuts: int = 1                 # how many GETs get cut before the switch turns itself off
    corrupt: bool = False         # flip one byte of every body sent (same size; headers describe `content`)
    claimed_size: int | None = None  # an LFS file's size as the metadata states it (default: the real one)
    stall_after: int | None = None  # the next GET that reaches this offset sends up to it and holds the rest
                                    # until release() or stop() (a client killed or waiting mid-download)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def git_sha1(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()

    def body(self) -> bytes:
        if not self.corrupt or not self.content:
            return self.content
        middle = len(self.content) // 2
        return self.content[:middle] + bytes([self.content[middle] ^ 0xFF]) + self.content[middle + 1:]


@dataclass(frozen=True)
class Request:
    """One request as the server saw it (header names lower-cased)."""
    server: str  # "hub" or "cdn"
    method: str
    path: str
    headers: dict
    status: int
    body_bytes: int  # body bytes sent (fewer than announced when the connection was cut)


@dataclass
class HubRepo:
    files: dict[str, HubFile]
    commit: str = ""

    def __post_init__(self):
        if not self.commit:  # a stable fake commit id: the same content gives the same commit
            digest = hashlib.sha1()
            for name in sorted(self.files):
                digest.update(name.encode() + b"\0" + self.files[name].git_sha1.encode())
            self.commit = digest.hexdigest()


class HubServer:
    """Serve `repos` ({"org/name": {"file.gguf": bytes | Path | HubFile}}) the way the hub does."""

    def __init__(self, repos: dict[str, dict[str, bytes | Path | HubFile]], *, timeout: float = 10.0):
        self.repos = {repo_id: HubRepo({name: _as_hub_file(f) for name, f in files.items()})
                      for repo_id, files in repos.items()}
        self.gated: set[str] = set()  # repo ids answered with GatedRepo 401/403
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._timeout = timeout
        self._servers: list[ThreadingHTTPServer] = []
        self._release = threading.Event()  # set by release() or stop(): held GETs go on
        self._connections: set[socket.socket] = set()
        self.endpoint = ""
        self.cdn = ""

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> HubServer:
        hub = self._listen("hub")
        cdn = self._listen("cdn")
        self.endpoint = f"http://127.0.0.1:{hub.server_address[1]}"
        self.cdn = f"http://127.0.0.1:{cdn.server_address[1]}"
        return self

    def release(self) -> None:
        """Let GETs held by `stall_after` finish sending their bodies."""
        self._release.set()

    def stop(self) -> None:
        """Stop listening and hang up on kept-alive clients, so a later server that gets the same port
        never has its requests answered by this one's handler threads."""
        self._release.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()
        with self._lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what tests look at ----------------------------------------------------------------
    def file(self, repo_id: str, filename: str) -> HubFile:
        return self.repos[repo_id].files[filename]

    def file_requests(self, method: str | None = None) -> list[Request]:
        """Requests of the file protocol: resolve URLs on the hub and everything on the CDN."""
        with self._lock:
            return [r for r in self.requests if (r.server == "cdn" or "/resolve/" in r.path)
                    and (method is None or r.method == method)]

    # -- internals -------------------------------------------------------------------------
    def _listen(self, role: str) -> ThreadingHTTPServer:
        owner = self

        class Handler(_Handler):
            hub = owner
            server_role = role
            timeout = owner._timeout

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=f"hub-server-{role}", daemon=True).start()
        self._servers.append(server)
        return server

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_cut(self, hub_file: HubFile) -> int | None:
        """The offset at which to cut this GET, consuming one of the file's cuts."""
        with self._lock:
            if hub_file.cut_after is None or hub_file.cuts <= 0:
                return None
            hub_file.cuts -= 1
            return hub_file.cut_after

    def _take_stall(self, hub_file: HubFile) -> int | None:
        """The offset at which to hold this GET, consuming the file's one stall."""
        with self._lock:
            stall, hub_file.stall_after = hub_file.stall_after, None
            return stall


def _as_hub_file(value: bytes | Path | HubFile) -> HubFile:
    if isinstance(value, HubFile):
        return value
    if isinstance(value, Path):
        return HubFile(value.read_bytes())
    return HubFile(bytes(value))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer
    server_role: str

    def setup(self):
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self):
        with self.hub._lock:
            self.hub._connections.discard(self.connection)
        super().finish()

    def log_message(self, format, *args):  # quiet: tests read `HubServer.requests` instead
        pass

    def do_HEAD(self):
        self._dispatch(send_body=False)

    def do_GET(self):
        self._dispatch(send_body=True)

    # -- routing ---------------------------------------------------------------------------
    def _dispatch(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        if self.server_role == "cdn":
            self._cdn(path, send_body)
        elif path == "/api/agent-harnesses" and send_body:
            body = json.dumps({"standardEnvVars": [], "harnesses": {}}).encode()
            self._send(200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body)
        else:
            self._resolve(path, send_body)

    def _resolve(self, path: str, send_body: bool) -> None:
        repo_id, rest = self._split_repo(path)
        if repo_id is None and "/resolve/" in path:  # the hub does not tell a missing repo from a private one
            return self._error(401, "RepoNotFound", "Repository not found")
        if repo_id is None or not rest.startswith("resolve/"):
            return self._error(404, None, "Not found")
        if repo_id in self.hub.gated:
            if self.headers.get("Authorization"):
                return self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in "
                                   f"the authorized list. Visit https://huggingface.co/{repo_id} to ask for access.")
            return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to "
                               "it and be authenticated to access it. Please log in.")
        repo = self.hub.repos[repo_id]
        revision, _, filename = rest[len("resolve/"):].partition("/")
        revision, filename = unquote(revision), unquote(filename)
        if revision not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        hub_file = repo.files.get(filename)
        if hub_file is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"",
                               {"X-Repo-Commit": repo.commit})
        if hub_file.lfs:
            note = b"Found. Redirecting to the CDN"
            location = f"{self.hub.cdn}/repos/{quote(repo_id)}/{hub_file.sha256}?filename={quote(filename)}"
            size = hub_file.claimed_size or len(hub_file.content)
            return self._send(302, {"Location": location, "X-Repo-Commit": repo.commit,
                                    "X-Linked-Etag": f'"{hub_file.sha256}"', "X-Linked-Size": str(size),
                                    "ETag": f'"{hub_file.git_sha1}"', "Content-Type": "text/plain; charset=utf-8",
                                    "Content-Length": str(len(note))}, note if send_body else b"")
        self._file(hub_file, send_body, {"X-Repo-Commit": repo.commit, "ETag": f'"{hub_file.git_sha1}"'})

    def _cdn(self, path: str, send_body: bool) -> None:
        match = re.fullmatch(r"/repos/(.+)/([0-9a-f]{64})", path)
        repo = self.hub.repos.get(unquote(match.group(1))) if match else None
        name, hub_file = next(((n, f) for n, f in (repo.files.items() if repo else ()) if f.sha256 == match.group(2)),
                              (None, None))
        if hub_file is None:
            return self._error(404, None, "NoSuchKey")
        base = name.rsplit("/", 1)[-1]
        self._file(hub_file, send_body, {"ETag": f'"{hub_file.sha256}"', "Content-Disposition":
                                         f"inline; filename*=UTF-8''{quote(base)}; filename=\"{base}\";"})

    def _split_repo(self, path: str) -> tuple[str | None, str]:
        for repo_id in self.hub.repos:
            prefix = f"/{repo_id}/"
            if path.startswith(prefix):
                return repo_id, path[len(prefix):]
        return None, path.lstrip("/")

    # -- responses -------------------------------------------------------------------------
    def _file(self, hub_file: HubFile, send_body: bool, headers: dict) -> None:
        body = hub_file.body()
        total = len(body)
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if wanted:
            match = _RANGE.match(wanted.strip())
            if not match or int(match.group(1)) >= total:
                return self._error(416, None, "Requested Range Not Satisfiable",
                                   {"Content-Range": f"bytes */{total}"})
            start = int(match.group(1))
            end = min(int(match.group(2)), total - 1) if match.group(2) else total - 1
            body, status = body[start:end + 1], 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end}/{total}"}
        headers = {**headers, "Content-Length": str(len(body)), "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if not send_body:
            return self._send(status, headers, b"")
        cut = self.hub._take_cut(hub_file)
        if cut is not None and start <= cut < start + len(body):
            return self._send(status, headers, body[:cut - start], cut_connection=True)
        stall = self.hub._take_stall(hub_file)
        if stall is not None and start <= stall < start + len(body):
            self._send(status, headers, body[:stall - start], rest=body[stall - start:])
            return
        self._send(status, headers, body)

    def _error(self, status: int, code: str | None, message: str, extra: dict | None = None) -> None:
        body = message.encode()
        headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)),
                   "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, body if self.command != "HEAD" else b"")

    def _send(self, status: int, headers: dict, body: bytes, cut_connection: bool = False,
              rest: bytes | None = None) -> None:
        """Send `body`; with `rest`, hold on after it until the server releases held GETs, then send `rest`."""
        # Recorded before the first byte goes out: the client may act on the answer (and the test
        # look at `requests`) before this thread runs again.
        self.hub._record(Request(self.server_role, self.command, self.path,
                                 {k.lower(): v for k, v in self.headers.items()}, status, len(body)))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(body)
            self.wfile.flush()
            if rest is not None:
                self.hub._release.wait(self.hub._timeout * 6)
                self.wfile.write(rest)
                self.wfile.flush()
            if cut_connection:  # announce the whole length, send part of it, hang up: a broken download
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            self.close_connection = True
