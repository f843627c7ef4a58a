"""RPC workers for the tests: real `gemma-edge worker` processes on loopback, each with a lifetime so
they stop by themselves even if the test run is killed."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

WORKER_LIFETIME_S = 600  # a module of split tests takes minutes on a loaded machine
LAUNCH = ("import threading, os; t = threading.Timer({lifetime}, os._exit, (0,)); t.daemon = True; t.start(); "
          "from gemma_edge.cli import main; main({argv!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_worker(port: int, *extra: str) -> subprocess.Popen:
    argv = ["worker", "--port", str(port), "--threads", "1", *extra]
    return subprocess.Popen([sys.executable, "-c", LAUNCH.format(lifetime=WORKER_LIFETIME_S, argv=argv)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Workers:
    """Two loopback workers; a test may kill one and bring it back on the same port."""

    def __init__(self, count: int):
        self.ports = [free_port() for _ in range(count)]
        self.processes = [None] * count
        for i in range(count):
            self.start(i)

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def start(self, i: int) -> None:
        from gemma_edge.rpc.endpoints import wait_until_listening

        self.processes[i] = launch_worker(self.ports[i])
        if not wait_until_listening(self.endpoints[i], timeout=20):
            self.processes[i].kill()
            raise RuntimeError(f"worker {i} did not start: {self.processes[i].stderr.read().decode()[-500:]}")

    def kill(self, i: int) -> None:
        self.processes[i].kill()
        self.processes[i].wait(10)

    def stop(self) -> None:
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture(scope="module")
def workers():
    pool = Workers(2)
    yield pool
    pool.stop()
