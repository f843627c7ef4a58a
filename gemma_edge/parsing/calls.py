"""One tool-call block body (`call:NAME{ARGS}`, the text between the call markers) to a call.

Pure functions over a finished block. The grammar is contract rule 3: bare keys; values are
delimiter strings taken verbatim, JSON double-quoted strings (JSON-decoded), JSON numbers (int
when there is no fraction or exponent, exact at any size), true/false/null, nested objects and
arrays; whitespace between tokens is insignificant.

Repairs, each applied only where the reading is unambiguous and recorded by name:
  missing_close_brace      the block ends while objects/arrays are still open
  unclosed_string          a delimiter string runs to the end of the block (a `}` right before
                           the end closes the object instead of belonging to the string)
  equals_separator         `key=value` instead of `key:value`
  quoted_key               `"key":`, `'key':` or delimiter-quoted keys
  single_quoted_value      `'value'` (a dangling string delimiter right after it is dropped)
  bare_string_value        an unquoted, possibly multi-line value for a parameter the request's
                           tool declares as a string, kept verbatim from the separator on
  duplicated_name          `call:NAME:NAME{…}` (or `call:call:NAME{…}`)
Anything else is a `CallError`: the caller reports the raw block and returns no call.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_WS = " \t\r\n\f\v"
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_BARE_KEY = re.compile(r"[^:=\{\}\[\],\"'<\s]+(?:[ \t]+[^:=\{\}\[\],\"'<\s]+)*")
_LITERALS = (("true", True), ("false", False), ("null", None))
_JSON = json.JSONDecoder(strict=False)
_INT_CHUNK = 4000  # below CPython's int<->str digit limit
MAX_DEPTH = 200    # deeper nesting is not a call a model means; also keeps recursion bounded


class CallError(ValueError):
    """A block that is not a call even after the repairs; the message says where it broke."""


@dataclass(frozen=True)
class ToolDecl:
    """What the request declared about one tool: its parameters and which of them are strings."""

    params: frozenset[str]
    string_params: frozenset[str]


@dataclass
class ParsedCall:
    name: str
    arguments: dict
    repairs: list[str] = field(default_factory=list)
    trailing: str = ""  # text after the arguments of a block with no close marker: content


def exact_int(digits: str) -> int:
    """int(digits) for any length (CPython refuses > 4300 digits in one conversion): halves
    converted separately and combined, so long numbers cost about one big multiplication."""
    if digits.startswith("-"):
        return -exact_int(digits[1:])
    if len(digits) <= _INT_CHUNK:
        return int(digits)
    half = len(digits) // 2
    return exact_int(digits[:half]) * 10 ** (len(digits) - half) + exact_int(digits[half:])


def parse_call(body: str, *, delim: str, prefix: str, closed: bool,
               decls: dict[str, ToolDecl] | None) -> ParsedCall:
    """Parse a block body. `closed` says whether the block ended with its close marker: then
    nothing but whitespace may follow the arguments; otherwise what follows is returned as
    `trailing` (the model went on talking after an unclosed call)."""
    repairs: list[str] = []
    start = len(body) - len(body.lstrip(_WS))
    if not body.startswith(prefix, start):
        raise CallError(f"expected {prefix!r} at the start of the call")
    brace = body.find("{", start)
    if brace < 0:
        raise CallError("no '{' opening the arguments")
    name = _call_name(body[start + len(prefix):brace].strip(), repairs)
    decl = (decls or {}).get(name)
    reader = _ArgsReader(body, delim, decl, repairs)
    arguments, end = reader.read_object(brace, top=True)
    rest = body[end:]
    if closed:
        if rest.strip(_WS):
            raise CallError(f"unexpected text after the arguments: {rest.strip()[:40]!r}")
        rest = ""
    return ParsedCall(name, arguments, repairs, rest)


def _call_name(name: str, repairs: list[str]) -> str:
    if not name:
        raise CallError("empty function name")
    if any(c in name for c in "\n\r{}"):
        raise CallError(f"not a function name: {name[:40]!r}")
    if ":" in name:
        parts = [p.strip() for p in name.split(":")]
        rest = parts[1:] if parts[0] == "call" else parts
        if rest and rest[0] and all(p == rest[0] for p in rest):
            repairs.append("duplicated_name")
            return rest[0]
    return name


class _ArgsReader:
    """Recursive descent over the argument text; positions are indexes into the block body."""

    def __init__(self, text: str, delim: str, decl: ToolDecl | None, repairs: list[str]):
        self.s = text
        self.n = len(text)
        self.delim = delim
        self.decl = decl
        self.repairs = repairs
        self.open: list[str] = []  # closers expected, innermost last

    def _repair(self, name: str) -> None:
        if name not in self.repairs:
            self.repairs.append(name)

    def _ws(self, i: int) -> int:
        s, n = self.s, self.n
        while i < n and s[i] in _WS:
            i += 1
        return i

    # containers -----------------------------------------------------------------------------
    def _enter(self, closer: str) -> None:
        if len(self.open) >= MAX_DEPTH:
            raise CallError(f"arguments nested deeper than {MAX_DEPTH} levels")
        self.open.append(closer)

    def read_object(self, i: int, top: bool = False) -> tuple[dict, int]:
        self._enter("}")
        out: dict = {}
        i = self._ws(i + 1)
        if i < self.n and self.s[i] == "}":
            self.open.pop()
            return out, i + 1
        while True:
            if i >= self.n:
                return self._missing_close(out)
            key, i = self._read_key(i)
            i = self._ws(i)
            if i < self.n and self.s[i] == "=":
                self._repair("equals_separator")
            elif i >= self.n or self.s[i] != ":":
                raise CallError(f"expected ':' after key {key!r}")
            if top and self.decl is not None and key in self.decl.string_params:
                value, i = self._read_string_param(i + 1, key)
            else:
                value, i = self._read_value(self._ws(i + 1))
            out[key] = value
            i = self._ws(i)
            if i >= self.n:
                return self._missing_close(out)
            c = self.s[i]
            if c == "}":
                self.open.pop()
                return out, i + 1
            if c != ",":
                raise CallError(f"expected ',' or '}}' after the value of {key!r}, got {c!r}")
            i = self._ws(i + 1)

    def _read_array(self, i: int) -> tuple[list, int]:
        self._enter("]")
        out: list = []
        i = self._ws(i + 1)
        if i < self.n and self.s[i] == "]":
            self.open.pop()
            return out, i + 1
        while True:
            if i >= self.n:
                return self._missing_close(out)
            value, i = self._read_value(i)
            out.append(value)
            i = self._ws(i)
            if i >= self.n:
                return self._missing_close(out)
            c = self.s[i]
            if c == "]":
                self.open.pop()
                return out, i + 1
            if c != ",":
                raise CallError(f"expected ',' or ']' in an array, got {c!r}")
            i = self._ws(i + 1)

    def _missing_close(self, value: Any) -> tuple[Any, int]:
        self._repair("missing_close_brace")
        self.open.pop()
        return value, self.n

    # keys -----------------------------------------------------------------------------------
    def _read_key(self, i: int) -> tuple[str, int]:
        s = self.s
        if self.delim and s.startswith(self.delim, i):
            end = s.find(self.delim, i + len(self.delim))
            if end < 0:
                raise CallError("unclosed quoted key")
            self._repair("quoted_key")
            return s[i + len(self.delim):end], end + len(self.delim)
        if s[i] == '"':
            key, end = self._json_string(i)
            self._repair("quoted_key")
            return key, end
        if s[i] == "'":
            end = s.find("'", i + 1)
            if end < 0:
                raise CallError("unclosed quoted key")
            self._repair("quoted_key")
            return s[i + 1:end], end + 1
        m = _BARE_KEY.match(s, i)
        if not m:
            raise CallError(f"expected a key at {s[i:i + 20]!r}")
        return m.group(), m.end()

    # values ---------------------------------------------------------------------------------
    def _read_value(self, i: int) -> tuple[Any, int]:
        s = self.s
        if i >= self.n:
            raise CallError("missing value")
        if self.delim and s.startswith(self.delim, i):
            return self._delim_string(i)
        c = s[i]
        if c == "{":
            return self.read_object(i)
        if c == "[":
            return self._read_array(i)
        if c == '"':
            return self._json_string(i)
        if c == "'":
            return self._single_quoted(i)
        m = _NUMBER.match(s, i)
        if m and self._at_boundary(m.end()):
            text = m.group()
            if m.group(1) is None and m.group(2) is None:
                return exact_int(text), m.end()
            return float(text), m.end()
        for word, value in _LITERALS:
            if s.startswith(word, i) and self._at_boundary(i + len(word)):
                return value, i + len(word)
        raise CallError(f"not a value: {s[i:i + 30]!r}")

    def _at_boundary(self, i: int) -> bool:
        j = self._ws(i)
        return j >= self.n or self.s[j] in ",}]"

    def _delim_string(self, i: int) -> tuple[str, int]:
        d = self.delim
        start = i + len(d)
        end = self.s.find(d, start)
        if end >= 0:
            return self.s[start:end], end + len(d)
        # Unclosed: the string runs to the end of the block, except for the closers of the
        # containers still open, if the block ends with them.
        self._repair("unclosed_string")
        tail = self.s[start:].rstrip(_WS)
        closers = "".join(reversed(self.open))  # innermost first, as they would be written
        k = next(k for k in range(len(closers), -1, -1) if tail.endswith(closers[:k]))
        stop = len(tail) - k
        return tail[:stop], start + stop

    def _json_string(self, i: int) -> tuple[str, int]:
        try:
            value, end = _JSON.raw_decode(self.s, i)
        except ValueError as exc:
            raise CallError(f"bad JSON string: {exc}") from None
        return value, end

    def _single_quoted(self, i: int) -> tuple[str, int]:
        s, d = self.s, self.delim
        j = s.find("'", i + 1)
        while j >= 0:
            after = j + 1
            if d and s.startswith(d, after):
                self._repair("single_quoted_value")
                return s[i + 1:j], after + len(d)
            if self._at_boundary(after):
                self._repair("single_quoted_value")
                return s[i + 1:j], after
            j = s.find("'", j + 1)
        raise CallError("unclosed single-quoted value")

    def _read_string_param(self, i: int, key: str) -> tuple[Any, int]:
        """A value for a parameter declared as a string (`i`: right after the separator): parsed
        normally when it is a well-formed value, else taken bare, verbatim from the separator up to
        the next declared key or the end of the arguments."""
        try:
            saved = (list(self.repairs), list(self.open))
            value, end = self._read_value(self._ws(i))
            if self._at_boundary(end):
                return value, end
        except CallError:
            pass
        self.repairs[:], self.open[:] = saved
        return self._bare_value(i, key)

    def _bare_value(self, i: int, key: str) -> tuple[str, int]:
        s = self.s
        others = [re.escape(p) for p in self.decl.params if p != key] if self.decl else []
        stop = None
        if others:
            pattern = re.compile(r",[ \t\r\n]*(?:" + "|".join(others) + r")[ \t\r\n]*[:=]")
            m = pattern.search(s, i)
            if m:
                stop = m.start()
        if stop is None:
            tail = s[i:].rstrip(_WS)
            stop = i + len(tail) - 1 if tail.endswith("}") and len(self.open) == 1 else self.n
        value = s[i:stop]  # verbatim, leading newlines included (what Ollama's repair keeps)
        if not value.strip(_WS):
            raise CallError(f"missing value for {key!r}")
        if self.delim and self.delim in value:
            raise CallError(f"cannot tell where the value of {key!r} ends")
        self._repair("bare_string_value")
        return value, stop
