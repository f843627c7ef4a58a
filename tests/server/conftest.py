"""Real server processes on 127.0.0.1 (a free port, bounded start-up, always killed in teardown)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT

START_TIMEOUT_S = 60
URL_LINE = re.compile(r"serving \S+ on (http://127\.0\.0\.1:\d+)/v1")


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.url + path, timeout=120, **kw)


def start_server(argv: list[str], env: dict | None = None) -> RunningServer:
    """Start `python <argv>` (a server that prints the `serving … on URL` line) and wait for it."""
    log = tempfile.NamedTemporaryFile(prefix="gemma-edge-server-", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                               env={**os.environ, **(env or {})})
    server = RunningServer("", process, Path(log.name))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        match = URL_LINE.search(server.log())
        if match:
            server.url = match.group(1)
            break
        if process.poll() is not None:
            log = server.log()
            stop_server(server)
            pytest.fail(f"server exited with {process.returncode}:\n{log[-3000:]}")
        time.sleep(0.1)
    else:
        log = server.log()
        stop_server(server)
        pytest.fail(f"server did not start within {START_TIMEOUT_S} s:\n{log[-3000:]}")
    while time.monotonic() < deadline:  # the URL is printed just before uvicorn accepts
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.05)
    stop_server(server)
    pytest.fail("server never answered /health")


def start_forced_server(model_path: Path, output: str, directory: Path) -> RunningServer:
    """A server (tests/server/forced_server.py) whose every reply is `output`, forced by a grammar."""
    from gemma_edge.parsing.call_grammar import gbnf_literal

    grammar = directory / "forced.gbnf"
    grammar.write_text(f"root ::= {gbnf_literal(output)}\n")
    return start_server(["-m", "tests.server.forced_server", str(model_path), str(grammar)])


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
    server.log_path.unlink(missing_ok=True)


def serve_argv(model_path: Path, *options: str) -> list[str]:
    return ["-m", "gemma_edge", "serve", str(model_path), "--host", "127.0.0.1", "--port", "0",
            "--ctx-size", "1024", "--threads", "1", *options]


@pytest.fixture(scope="session")
def server(embedded_model_path):
    """The 270M behind `gemma-edge serve`, every prompt evaluated from scratch (`--no-prompt-cache`), so
    its greedy outputs can be compared exactly with the library's and with each other."""
    running = start_server(serve_argv(embedded_model_path, "--no-prompt-cache"))
    yield running
    stop_server(running)


@pytest.fixture(scope="session")
def library_model(embedded_model_path):
    """The same model in-process: the oracle for what the server must answer."""
    from gemma_edge.api import Model

    return Model(embedded_model_path, n_ctx=1024, n_threads=1)


def library_answer(model, prompt, **kw):
    """What the library answers, from an empty KV cache (like the `--no-prompt-cache` server)."""
    model.engine.reset()
    return model.generate(prompt, **kw)
