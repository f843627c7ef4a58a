"""One model, many clients: requests wait in a fair FIFO queue and run one at a time on a single
generation thread; events cross back to the event loop through an asyncio queue.

The generation thread owns each generation from its first token to its `close()` (the engine's
lock is held by whichever thread iterates, so one thread must do it all). Cancellation (client
gone, timeout, stop string) is a flag the thread checks between tokens.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator, Callable

from gemma_edge.errors import ContextOverflowError, GemmaEdgeError
from gemma_edge.formats import TemplateError

from gemma_edge.server.errors import RequestError
from gemma_edge.server.mapping import Outcome
from gemma_edge.server.stops import StopFilter

EVENT, DONE, FAILED = "event", "done", "failed"


class GenerationTimeout(Exception):
    """The per-request time limit ran out while generating."""


class Cancelled(Exception):
    """The client went away; nobody reads the result."""


class Job:
    """One generation. `start()` runs on the generation thread and returns a ResponseStream."""

    def __init__(self, start: Callable, *, stops: list[str], deadline: float, loop: asyncio.AbstractEventLoop,
                 max_calls: int | None = None):
        self.start, self.deadline, self.loop, self.max_calls = start, deadline, loop, max_calls
        self.stops = StopFilter(stops)
        self.cancelled = threading.Event()
        self.messages: asyncio.Queue = asyncio.Queue()

    def cancel(self) -> None:
        self.cancelled.set()

    # -- generation thread ----------------------------------------------------------------------
    def run(self) -> None:
        try:
            outcome = self._generate()
        except BaseException as e:  # noqa: BLE001 - every failure must reach the waiting request
            self._send(FAILED, e)
            return
        self._send(DONE, outcome)

    def _send(self, kind: str, item) -> None:
        self.loop.call_soon_threadsafe(self.messages.put_nowait, (kind, item))

    def _generate(self) -> Outcome:
        if self.cancelled.is_set():
            raise Cancelled()
        stream = self.start()
        events = iter(stream)
        self.content, self.thinking, self.calls, self.raw_content = [], [], [], []
        ended = None  # why the job ended the generation early, if it did
        try:
            for event in events:
                if self.cancelled.is_set():
                    raise Cancelled()
                if time.monotonic() > self.deadline:
                    raise GenerationTimeout()
                if self._take(event):
                    ended = "stop"  # a stop string
                elif self.max_calls is not None and len(self.calls) >= self.max_calls:
                    ended = "tool_calls"
                if ended:
                    break
        finally:
            events.close()  # cancels a generation stopped early; a no-op after the last token
        if ended:
            return self._outcome(ended, stream.decode_run)
        response = stream.response
        self._reconcile(response)
        if self._take({"type": "content", "text": self.stops.flush()}, raw=False):
            return self._outcome("stop", stream.decode_run)
        return self._outcome(response.finish_reason, stream.decode_run)

    def _take(self, event: dict, raw: bool = True) -> bool:
        """Forward one parser event; True when a stop string ended the content."""
        kind = event.get("type")
        if kind == "content":
            if raw:
                self.raw_content.append(event["text"])
            text = self.stops.feed(event["text"]) if raw else event["text"]
            if text:
                self.content.append(text)
                self._send(EVENT, {"type": "content", "text": text})
            return self.stops.stopped
        if kind == "thinking" and event["text"]:
            self.thinking.append(event["text"])
            self._send(EVENT, event)
        elif kind == "tool_call":
            self.calls.append(event["tool_call"])
            self._send(EVENT, event)
        return False

    def _reconcile(self, response) -> None:
        """Forward what only the end of the output decided (text a parser held back, an unclosed
        call): the parsed Response is the truth, the events streamed so far are a prefix of it."""
        streamed = "".join(self.thinking)
        if response.thinking and response.thinking.startswith(streamed):
            self._take({"type": "thinking", "text": response.thinking[len(streamed):]})
        streamed = "".join(self.raw_content)
        if response.content.startswith(streamed):
            self._take({"type": "content", "text": response.content[len(streamed):]})
        for call in response.tool_calls[len(self.calls):self.max_calls]:
            self._take({"type": "tool_call", "tool_call": call})

    def _outcome(self, finish_reason: str, generation) -> Outcome:
        timings = generation.timings.as_dict(generation.prompt_evaluated, len(generation.tokens))
        return Outcome("".join(self.content), "".join(self.thinking) or None, self.calls, finish_reason,
                       generation.usage, timings,
                       generation.logprob_records() if generation.logprobs is not None else None)

    # -- event loop -----------------------------------------------------------------------------
    async def next_message(self) -> tuple[str, object]:
        return await self.messages.get()

    async def outcome(self) -> Outcome:
        """Wait for the end, dropping the streamed events; re-raises the generation's failure."""
        while True:
            kind, item = await self.messages.get()
            if kind == DONE:
                return item
            if kind == FAILED:
                raise item


class Scheduler:
    """First come, first served access to the one model, with a bounded waiting line."""

    def __init__(self, max_waiting: int):
        self.max_waiting = max_waiting
        self.waiting = 0
        self.running: Job | None = None
        self._slot = asyncio.Lock()  # asyncio.Lock wakes its waiters in FIFO order
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gemma-edge-generation")

    @property
    def busy(self) -> bool:
        return self._slot.locked()

    async def submit(self, job: Job) -> None:
        """Wait for the model (until the job's deadline), then start the job on the generation
        thread. The slot is released when the thread finishes, whatever happens to the request."""
        if self._slot.locked() and self.waiting >= self.max_waiting:
            raise RequestError(f"server busy: {self.waiting} requests are already waiting; retry later",
                               503, code="queue_full")
        self.waiting += 1
        acquire = asyncio.ensure_future(self._slot.acquire())
        try:
            await asyncio.wait_for(asyncio.shield(acquire), max(0.0, job.deadline - time.monotonic()))
        except BaseException as e:
            # Timed out or the request was cancelled: give the slot back if it was granted meanwhile
            # (a cancelled waiter hands its turn to the next one itself).
            if not acquire.cancel():
                self._slot.release()
            if isinstance(e, asyncio.TimeoutError):
                raise RequestError("timed out waiting for the model (the per-request timeout covers queueing)",
                                   504, code="timeout") from None
            raise
        finally:
            self.waiting -= 1
        self.running = job
        future = asyncio.get_running_loop().run_in_executor(self._thread, job.run)
        future.add_done_callback(lambda _: self._finished())

    def _finished(self) -> None:
        self.running = None
        self._slot.release()

    def shutdown(self) -> None:
        """Stop the generation in progress (the process cannot exit while its thread runs)."""
        if self.running is not None:
            self.running.cancel()
        self._thread.shutdown(wait=False, cancel_futures=True)


async def job_messages(job: Job, first) -> AsyncIterator[tuple[str, object]]:
    """The job's messages from `first` on; the generation is cancelled if the response stops early
    (the client went away: Starlette cancels the streaming task)."""
    try:
        message = first
        while True:
            yield message
            if message[0] != "event":
                return
            message = await job.next_message()
    finally:
        job.cancel()


def as_request_error(error: BaseException) -> RequestError:
    """What a failed generation answers: model/template errors are the request's fault (400)."""
    if isinstance(error, RequestError):
        return error
    if isinstance(error, GenerationTimeout):
        return RequestError("the request timed out while generating", 504, code="timeout")
    if isinstance(error, ContextOverflowError):
        return RequestError(str(error), 400, code="context_length_exceeded")
    if isinstance(error, Cancelled):
        return RequestError("cancelled", 400, code="cancelled")
    if isinstance(error, (GemmaEdgeError, TemplateError)):
        return RequestError(str(error), 400)
    raise error
