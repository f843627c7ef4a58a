"""The streaming state machine shared by every output format family.

Fed text deltas, it emits thinking/content text as soon as it is decided and each tool call when
its block is complete; `close()` returns the whole message. The whole-output parse is this
machine run to the end, so the two can never disagree.

Work is linear in the output: text is scanned for markers once (a held-back tail shorter than
the longest marker is rescanned), and a tool-call block is parsed once, when it ends.

States: CONTENT, THINKING (inside a channel block), CALL (inside a call block), DONE (after an
end marker; everything else is ignored).
"""
from __future__ import annotations

import re
from typing import Iterable

from gemma_edge.parsing.calls import CallError, ToolDecl, parse_call
from gemma_edge.parsing.syntax import OutputSyntax

CONTENT, THINKING, CALL, DONE = "content", "thinking", "call", "done"


class _TextSink:
    """Accumulates one stripped text field from pieces without ever un-emitting anything.

    Leading whitespace is dropped; trailing whitespace (and any `droppable` marker, e.g. a
    trailing `<|tool_response>`) is held until more real text proves it is not trailing. So the
    concatenated emitted pieces are exactly the final field, already stripped."""

    __slots__ = ("started", "held", "parts")

    def __init__(self) -> None:
        self.started = False
        self.held = ""
        self.parts: list[str] = []

    def add(self, text: str) -> str:
        """Take raw text; return the part that can be emitted now."""
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
        body = text.rstrip()
        if not body:
            self.held += text
            return ""
        out = self.held + body if self.held else body
        self.held = text[len(body):]
        self.started = True
        self.parts.append(out)
        return out

    def hold_marker(self, marker: str) -> None:
        """A marker that is dropped if nothing but whitespace follows it in this field."""
        self.held += marker
        self.started = True

    def end_block(self) -> None:
        """The field (or one block of it) ends: what is held was trailing, drop it."""
        self.held = ""
        self.started = False

    def value(self) -> str:
        return "".join(self.parts)


class StreamParser:
    """Incremental parser of one model message. See `gemma_edge.parsing` for the contract."""

    def __init__(self, syntax: OutputSyntax, *, enable_thinking: bool | None = None,
                 prompt_tail: str | None = None, decls: dict[str, ToolDecl] | None = None):
        self._syn = syntax
        self._keep_thinking = enable_thinking is not False and syntax.supports_thinking
        self._decls = decls
        self._content = _TextSink()
        self._thinking = _TextSink()
        self._calls: list[dict] = []
        self._errors: list[dict] = []
        self._events: list[dict] = []
        self._pending = ""        # undecided tail (a possible partial marker)
        self._region: list[str] = []  # CALL: the block body so far
        self._after_call = False  # CONTENT: nothing but whitespace since the last call block
        self._label = ""          # THINKING: start of a block, until the label is decided
        self._label_open = False
        self._label_given = 0     # how much of self._label the prompt wrote (never output)
        self._state = CONTENT
        markers = syntax.all_markers()
        self._text_re = _alternation(markers)
        # What ends a call block: its close marker, or (when the model left it out) the next
        # call, the model's request for the result, or the end of the message.
        call_ends = [m for m in (syntax.call_close, syntax.call_open, syntax.response_open,
                                 *syntax.end_markers) if m]
        self._call_re = _alternation(call_ends)
        self._text_prefixes = _Prefixes(markers)
        self._call_prefixes = _Prefixes(call_ends)
        self._first_chars = "".join(sorted({m[0] for m in markers}))
        self._closed: dict | None = None
        prefill = syntax.open_channel_prefill(prompt_tail)
        if prefill is not None:
            self._open_channel(prefill)

    # public ---------------------------------------------------------------------------------
    def feed(self, delta: str) -> list[dict]:
        """Take the next piece of output; return the events it decides."""
        state = self._state
        if state is DONE or not delta:
            return []
        if not self._pending and not self._may_hold_marker(delta):
            # Fast paths: a delta that cannot contain (the start of) a marker.
            if state is CONTENT and not self._after_call:
                out = self._content.add(delta)
                return [{"type": "content", "text": out}] if out else []
            if state is THINKING and not self._label_open:
                self._emit_thinking(delta)
                return self._take_events()
            if state is CALL:
                self._region.append(delta)
                return []
        self._process(delta, final=False)
        return self._take_events()

    @property
    def state(self) -> str:
        """Where the output is now: "content", "thinking" (inside a thought block: what a
        thinking budget counts), "call" (inside a call block) or "done" (after an end marker)."""
        return self._state

    def _may_hold_marker(self, delta: str) -> bool:
        first = self._first_chars
        return first in delta if len(first) == 1 else any(c in delta for c in first)

    def finish(self) -> list[dict]:
        """End of output: return the events only the end can decide (text held back as a
        possible marker, a call block left without its close marker). Idempotent; `close()`
        calls it, so a consumer that shows the stream calls `finish()` first."""
        if self._state is not DONE:
            self._process("", final=True)
            if self._state is THINKING:
                self._end_channel()
            self._state = DONE
        return self._take_events()

    def close(self) -> dict:
        """End of output: the whole message (what `parse_response` returns)."""
        if self._closed is None:
            self.finish()
            thinking = self._thinking.value() if self._keep_thinking else ""
            self._closed = {
                "role": "assistant",
                "thinking": thinking or None,
                "content": self._content.value(),
                "tool_calls": self._calls,
                "errors": self._errors,
            }
        return self._closed

    # machine --------------------------------------------------------------------------------
    def _take_events(self) -> list[dict]:
        events, self._events = self._events, []
        if len(events) < 2:
            return events
        merged: list[dict] = []
        for ev in events:
            if merged and ev["type"] != "tool_call" and merged[-1]["type"] == ev["type"]:
                merged[-1] = {"type": ev["type"], "text": merged[-1]["text"] + ev["text"]}
            else:
                merged.append(ev)
        return merged

    def _process(self, text: str, final: bool) -> None:
        if self._pending:
            text, self._pending = self._pending + text, ""
        i, n = 0, len(text)
        while self._state is not DONE:
            if self._state is CALL:
                m = self._call_re.search(text, i)
                if m is None:
                    keep = 0 if final else self._call_prefixes.held(text, i)
                    self._region.append(text[i:n - keep])
                    self._pending = text[n - keep:]
                    if final:
                        self._end_call(None)
                    return
                self._region.append(text[i:m.start()])
                i = m.end()
                self._end_call(m.group())
            else:
                if i >= n:
                    return
                m = self._text_re.search(text, i)
                if m is None:
                    keep = 0 if final else self._text_prefixes.held(text, i)
                    self._text(text[i:n - keep])
                    self._pending = text[n - keep:]
                    return
                self._text(text[i:m.start()])
                i = m.end()
                self._marker(m.group())

    def _text(self, text: str) -> None:
        if not text:
            return
        if self._state is THINKING:
            self._thought_text(text)
            return
        if self._after_call and not text.isspace():
            self._after_call = False
        self._emit_content(text)

    def _emit_content(self, text: str) -> None:
        out = self._content.add(text)
        if out:
            self._events.append({"type": "content", "text": out})

    def _marker(self, marker: str) -> None:
        syn = self._syn
        if marker in syn.end_markers:
            if self._state is THINKING:
                self._end_channel()
            self._state = DONE
            return
        if self._state is THINKING:
            if marker == syn.channel_close:
                self._end_channel()
                self._state = CONTENT
            elif marker == syn.channel_open:
                self._end_channel()  # a repeated opener: the block ends, a new one starts
                self._open_channel("")
            else:
                self._thought_text(marker)
            return
        if marker == syn.channel_open:
            self._after_call = False
            self._open_channel("")
        elif marker == syn.channel_close:
            pass  # a close with no block open: nothing to close, never text
        elif marker == syn.call_open:
            self._state = CALL
            self._region = []
        elif self._after_call and marker in (syn.response_open, syn.call_close):
            pass  # the model's own end of the call, or its request for the result: dropped
        elif marker == syn.response_open:
            self._content.hold_marker(marker)
        else:
            self._after_call = False
            self._emit_content(marker)

    # thinking -------------------------------------------------------------------------------
    def _open_channel(self, prefill: str) -> None:
        """Enter a channel block; `prefill` is its start as the prompt already wrote it."""
        self._state = THINKING
        label = self._syn.channel_label
        self._label = ""
        self._label_given = 0
        self._label_open = bool(label)
        if prefill:
            if label.startswith(prefill) and len(prefill) < len(label):
                self._label, self._label_given = prefill, len(prefill)
            else:
                self._label_open = False  # decided by the prompt; none of it is output

    def _thought_text(self, text: str) -> None:
        if self._label_open:
            label = self._syn.channel_label
            self._label += text
            if len(self._label) < len(label) and label.startswith(self._label):
                return
            self._label_open = False
            held, self._label = self._label, ""
            text = held[len(label):] if held.startswith(label) else held[self._label_given:]
        self._emit_thinking(text)

    def _emit_thinking(self, text: str) -> None:
        out = self._thinking.add(text)
        if out and self._keep_thinking:
            self._events.append({"type": "thinking", "text": out})

    def _end_channel(self) -> None:
        if self._label_open:
            # The block ends while its start may still be the label: the label's name alone
            # (`<|channel>thought<channel|>`) is the label, anything else is thought text.
            self._label_open = False
            held, self._label = self._label, ""
            if held != self._syn.channel_name:
                self._emit_thinking(held[self._label_given:])
        self._thinking.end_block()

    # tool calls -----------------------------------------------------------------------------
    def _end_call(self, marker: str | None) -> None:
        """The block body is complete (`marker` ended it; None: end of output)."""
        syn = self._syn
        body = "".join(self._region)
        self._region = []
        self._state = CONTENT
        self._after_call = True
        closed = marker == syn.call_close
        raw = syn.call_open + body + (marker if closed else "")
        try:
            call = parse_call(body, delim=syn.string_delim, prefix=syn.call_prefix, closed=closed,
                              decls=self._decls)
        except CallError as exc:
            self._errors.append({"kind": "invalid_tool_call", "message": str(exc), "raw": raw})
            call = None
        if call is not None:
            tool_call = {"type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            self._calls.append(tool_call)
            self._events.append({"type": "tool_call", "tool_call": tool_call})
            if call.repairs:
                self._errors.append({"kind": "repaired_tool_call", "repairs": call.repairs,
                                     "name": call.name, "raw": raw[:len(raw) - len(call.trailing)]})
            if call.trailing:
                # The unclosed call ended before this text: it is ordinary output again, and so
                # is the marker that ended the block.
                self._process(call.trailing + (marker or ""), final=marker is None)
                return
        if marker is not None and not closed:
            self._marker(marker)


def _alternation(markers: Iterable[str]) -> "re.Pattern[str]":
    ordered = sorted(markers, key=len, reverse=True)
    return re.compile("|".join(re.escape(m) for m in ordered))


class _Prefixes:
    """The proper prefixes of a set of markers, to find a marker cut off at the end of text."""

    __slots__ = ("prefixes", "first_chars", "window")

    def __init__(self, markers: Iterable[str]):
        markers = tuple(markers)
        self.prefixes = frozenset(m[:k] for m in markers for k in range(1, len(m)))
        self.first_chars = "".join(sorted({m[0] for m in markers}))
        self.window = max(len(m) for m in markers) - 1

    def held(self, text: str, start: int) -> int:
        """Length of the longest suffix of text[start:] that is a proper prefix of a marker."""
        n = len(text)
        low = max(start, n - self.window)
        best = 0
        for c in self.first_chars:
            pos = text.find(c, low)
            while pos >= 0:
                if text[pos:] in self.prefixes:
                    best = max(best, n - pos)
                    break
                pos = text.find(c, pos + 1)
        return best
