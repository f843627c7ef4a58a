"""Supervised distributed inference: the one way a model split across RPC workers runs, for the CLI,
the server and the Python API alike.

ggml-rpc aborts the whole process when a worker vanishes (GGML_ABORT in the client), and a registered
worker cannot be unregistered. So the split model is loaded in a child process, and `SupervisedEngine`
is an Engine in the caller's process that tokenizes there (a vocabulary-only llama.cpp model) and
sends each generation to the child: a dead worker kills only the child, the generation raises one
clear RpcError, and the next one starts a fresh child (reconnecting to the workers) once the worker is
back. A generation that gets no answer for `timeout` seconds (a frozen worker) is treated the same
way; loading gets `load_timeout` (the weights cross the network once, minutes for a big model on Wi-Fi).
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from multiprocessing.connection import Connection, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from gemma_edge.errors import GemmaEdgeError, RpcError
from gemma_edge.llama.engine import DecodeRun, Engine, EngineSettings
from gemma_edge.llama.internals import recording_logits
from gemma_edge.llama.loader import open_vocabulary
from gemma_edge.llama.mtmd import MediaChunk
from gemma_edge.llama.tokenizer import SegmentTokenizer
from gemma_edge.model import ModelFacts, read_model_facts
from gemma_edge.rpc.endpoints import ensure_reachable, unreachable
from gemma_edge.rpc.workers import place

STOP = "stop"  # the parent's request to end the generation in progress (its consumer stopped reading)


class SupervisedEngine(Engine):
    """An Engine whose model runs, split across `settings.rpc`, in a child process (see the module).
    `record_logits` (for the tests that compare a split run with one process): after each generation,
    `recorded_logits` holds the logits each token was sampled from."""

    def __init__(self, facts: ModelFacts, settings: EngineSettings, *, stop_markers: Sequence[str] = (),
                 verbose: bool = False, timeout: float = 120.0, load_timeout: float = 1800.0,
                 record_logits: bool = False):
        self.facts, self.settings = facts, settings
        self.stop_markers, self.verbose = tuple(stop_markers), verbose
        self.timeout, self.load_timeout, self.record_logits = timeout, load_timeout, record_logits
        self.llm = open_vocabulary(facts.path)  # tokenization stays in this process
        self.tokenizer = SegmentTokenizer(self.llm)
        self.stop_ids = self._stop_ids(stop_markers)
        self.n_ctx, self.n_threads, self.n_ubatch = settings.n_ctx, settings.n_threads, settings.n_ubatch
        self.exact = settings.exact  # the child's engine decodes in exact batches too
        self.projector = None  # media over RPC is refused when settings are resolved
        self.lock = threading.RLock()
        self.placement = None
        self.recorded_logits: list = []
        self._process: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._log: str | None = None
        try:
            self.start()
        except BaseException:
            self.llm.close()
            raise

    @property
    def workers(self) -> tuple[str, ...]:
        return self.settings.rpc

    @property
    def cached_tokens(self) -> list:
        raise RpcError("the KV cache of a split model lives in its supervised child process")

    def start(self):
        """Start the child (if not running) and return the placement it loaded the model with."""
        if self._process is not None and self._process.poll() is None:
            return self.placement
        ensure_reachable(self.workers)
        # A fresh interpreter (not multiprocessing's spawn, which re-imports the caller's __main__: a
        # script without a main guard would run again), joined by a socket pair; its stderr (ggml's
        # abort message) goes to a log file the parent quotes, never to the user's terminal.
        parent, child = socket.socketpair()
        fd, self._log = tempfile.mkstemp(prefix="gemma-edge-rpc-", suffix=".log")
        with child, os.fdopen(fd, "w") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "gemma_edge.rpc.supervision", str(child.fileno())], pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_child_environment())
        self._conn = Connection(parent.detach())
        self._conn.send((str(self.facts.path), self.settings, self.stop_markers, self.verbose, self.record_logits))
        try:
            kind, payload = self._receive(self.load_timeout)
        except _ChildLost as lost:
            raise self._lost_error(lost, unreachable(self.workers, timeout=1.0), "loading the model") from None
        if kind == "error":
            self._stop_child()
            raise payload
        self.placement = payload
        return payload

    def reset(self) -> None:
        with self.lock:
            if self._conn is not None:
                try:
                    self._conn.send(("reset", None))
                except OSError:  # the child is gone: the next generation starts a fresh one
                    self._stop_child()

    def close(self) -> None:
        with self.lock:
            self._stop_child()
            self.llm.close()

    def _run(self, gen: DecodeRun) -> Iterator[str]:
        """The generation in the child. If the child dies before any output while every worker answers
        again (a worker restarted since the last generation: the child's connection to it was stale),
        start a fresh child and retry once; otherwise raise RpcError."""
        if any(isinstance(item, MediaChunk) for item in gen.prompt_tokens):
            raise RpcError("images and audio are not supported with --rpc yet; run without --rpc for media input")
        request = {"prompt": list(gen.prompt_tokens), "sampling": gen.sampling, "max_tokens": gen.max_tokens,
                   "grammar": gen.grammar, "logprobs": gen.logprobs, "speculation": gen.speculation,
                   "intervene": gen.intervene is not None}
        with self.lock:
            for attempt in (1, 2):
                self.start()
                produced, done = False, False
                try:
                    self._send(("generate", request))
                    while not done:
                        kind, payload = self._receive(self.timeout)
                        if kind == "piece":
                            produced = True
                            yield payload
                        elif kind == "intervene":
                            self._send(gen.intervene(payload))
                        elif kind == "error":
                            done = True
                            raise payload
                        else:
                            done = True
                            self._finish(gen, payload)
                    return
                except _ChildLost as lost:
                    done = True
                    down = unreachable(self.workers, timeout=1.0)
                    if attempt == 1 and not produced and not down and lost.timed_out_after is None:
                        continue
                    raise self._lost_error(lost, down, "generating") from None
                finally:
                    if not done:  # the consumer stopped reading: end the child's generation too
                        self._abandon()

    def _finish(self, gen: DecodeRun, result: dict) -> None:
        gen.tokens, gen.finish_reason = result["tokens"], result["finish_reason"]
        gen.prompt_evaluated, gen.timings = result["prompt_evaluated"], result["timings"]
        gen.token_logprobs, gen.speculation = result["token_logprobs"], result["speculation"]
        self.recorded_logits = result["logits"]

    def _abandon(self) -> None:
        """Tell the child to stop and read what it still sends up to its end; a child that does not
        end in time is stopped (the next generation starts a fresh one)."""
        try:
            self._conn.send((STOP, None))
            while True:
                kind, payload = self._receive(self.timeout)
                if kind == "intervene":
                    self._conn.send(STOP)
                elif kind in ("done", "error"):
                    return
        except (_ChildLost, OSError, AttributeError):
            self._stop_child()

    def _send(self, message) -> None:
        try:
            self._conn.send(message)
        except OSError:  # the child died since its last message
            lost = _ChildLost(None, _last_line(self._log))
            self._stop_child()
            raise lost from None

    def _receive(self, timeout: float):
        ready = wait([self._conn], timeout)  # a dead child closes its end: ready, and recv sees EOF
        if ready:
            try:
                return self._conn.recv()
            except (EOFError, OSError):
                pass
        lost = _ChildLost(None if ready else timeout, _last_line(self._log))
        self._stop_child()
        raise lost

    def _lost_error(self, lost: "_ChildLost", down: list[str], doing: str) -> RpcError:
        detail = f"no answer for {lost.timed_out_after:.0f} s" if lost.timed_out_after else lost.last_log_line
        who = (f"RPC worker {', '.join(down)} is gone" if down else
               f"the distributed-inference process (workers {', '.join(self.workers)}) stopped")
        return RpcError(f"{who} while {doing}" + (f" ({detail})" if detail else "") +
                        "; restart `gemma-edge worker` there — the next request reconnects")

    def _stop_child(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait(5)
            self._process = None
        if self._log:
            Path(self._log).unlink(missing_ok=True)
            self._log = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _child_environment() -> dict:
    """This environment, quiet on abort, with this gemma_edge importable first (however it was found here)."""
    here = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "GGML_NO_BACKTRACE": "1", "PYTHONPATH": path}


@dataclass
class _ChildLost(Exception):
    """The child died (a worker vanished and ggml-rpc aborted it) or stopped answering."""
    timed_out_after: float | None
    last_log_line: str


def _last_line(path: str | None) -> str:
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except (OSError, TypeError):
        return ""
    return lines[-1][:200] if lines else ""


# -- the child -----------------------------------------------------------------------------------------
def _child_main(conn: Connection) -> None:
    """Register the workers, load the model, then serve generations until the parent closes the
    connection. Ctrl-C is the parent's to handle (it stops the generation in progress through the
    connection; the loaded model stays)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    path, settings, stop_markers, verbose, record_logits = conn.recv()
    try:
        facts = read_model_facts(path)
        engine = Engine(facts, place(settings, facts.n_layers), stop_markers=stop_markers, verbose=verbose)
    except GemmaEdgeError as e:
        conn.send(("error", e))
        return
    conn.send(("ready", engine.placement))
    while True:
        try:
            kind, request = conn.recv()
        except (EOFError, OSError):
            return
        if kind == "reset":
            engine.reset()
        elif kind == "generate":
            try:
                conn.send(("done", _generate(engine, conn, request, record_logits)))
            except GemmaEdgeError as e:
                conn.send(("error", e))


class _Parent:
    """The child's side of a generation: the parent's interventions, and whether it asked to stop."""

    def __init__(self, conn):
        self.conn, self.stopped = conn, False

    def intervene(self, generated: list[int]) -> list[int] | None:
        self.conn.send(("intervene", list(generated)))
        answer = self.conn.recv()
        if answer == STOP:
            self.stopped = True
            return None
        return answer

    def asked_to_stop(self) -> bool:
        if not self.stopped and self.conn.poll():
            self.conn.recv()  # only a stop request can arrive while generating
            self.stopped = True
        return self.stopped


def _generate(engine: Engine, conn, request: dict, record_logits: bool) -> dict:
    parent = _Parent(conn)
    with recording_logits(engine.llm) if record_logits else contextlib.nullcontext([]) as recorded:
        gen = engine.generate(request["prompt"], request["sampling"], max_tokens=request["max_tokens"],
                              grammar=request["grammar"], logprobs=request["logprobs"],
                              speculation=request["speculation"],
                              intervene=parent.intervene if request["intervene"] else None)
        for piece in gen:
            if parent.asked_to_stop():
                break
            conn.send(("piece", piece))
    sampled = len(gen.tokens) + (gen.finish_reason == "stop")
    return {"tokens": gen.tokens, "finish_reason": gen.finish_reason, "prompt_evaluated": gen.prompt_evaluated,
            "timings": gen.timings, "token_logprobs": gen.token_logprobs, "speculation": gen.speculation,
            "logits": recorded[:sampled]}


if __name__ == "__main__":
    _child_main(Connection(int(sys.argv[1])))
