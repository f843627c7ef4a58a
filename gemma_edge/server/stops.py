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
        hits = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self.held = True, ""
            return buffer[:min(hits)]
        keep = self._partial_match(buffer)
        self.held = buffer[len(buffer) - keep:]
        return buffer[:len(buffer) - keep]

    def flush(self) -> str:
        """The generation ended without a stop string: release what was held."""
        out, self.held = self.held, ""
        return out

    def _partial_match(self, buffer: str) -> int:
        """Length of the longest tail of `buffer` that begins some stop string."""
        longest = min(len(buffer), max(len(s) for s in self.stops) - 1)
        for k in range(longest, 0, -1):
            tail = buffer[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0
