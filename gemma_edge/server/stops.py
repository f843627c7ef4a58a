"""OpenAI `stop` strings, which llama.cpp's engine does not know: cut streamed text at the first
one, and hold back a tail that might be the start of one until the next delta decides."""
from __future__ import annotations


class StopFilter:
    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of `text` (after what was held) that can be emitted now."""
        if self.stopped or not self.stops:
            return "" if self.stopped else text
        buffer = self.held + text
        hit = self._first_hit(buffer)
        # A stop string that starts before the hit (or, with no hit, anywhere in the tail) and is not
        # complete yet may still match earlier than the hit: hold from there until a delta decides.
        pending = self._pending_start(buffer, len(buffer) if hit is None else hit)
        if pending is not None:
            self.held = buffer[pending:]
            return buffer[:pending]
        self.held = ""
        if hit is not None:
            self.stopped = True
            return buffer[:hit]
        return buffer

    def flush(self) -> str:
        """The generation ended: release what was held, cut at a stop string it holds whole."""
        out, self.held = self.held, ""
        hit = self._first_hit(out)
        if hit is not None:
            self.stopped = True
            return out[:hit]
        return out

    def _first_hit(self, buffer: str) -> int | None:
        hits = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        return min(hits) if hits else None

    def _pending_start(self, buffer: str, before: int) -> int | None:
        """The first position before `before` where the rest of `buffer` is an unfinished start of a stop string."""
        longest = max(len(s) for s in self.stops)
        for j in range(max(0, len(buffer) - longest + 1), before):
            tail = buffer[j:]
            if any(len(tail) < len(s) and s.startswith(tail) for s in self.stops):
                return j
        return None
