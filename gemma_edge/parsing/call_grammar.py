"""A llama.cpp GBNF grammar that forces tool calls in a format family's own syntax (the inverse of
`calls.py`): `CALL_OPEN call:NAME{key:value,…} CALL_CLOSE`, one block or several, with arguments that
match each tool's JSON Schema written in the call notation (bare keys in the template's order,
strings between the family's string delimiter, JSON numbers, true/false/null, nested objects and
arrays).

Markers that are single special tokens are named by id (`<[id]>`): text rules cannot produce a
control token. End-of-generation tokens cannot be named in a grammar; llama.cpp allows them once the
grammar is complete, so the grammar ends with the last call and the model's next token ends the turn.

Supported schema keywords: type (also a list), properties, required, items, minItems, maxItems,
maxLength, enum, const, anyOf / oneOf, nullable. Optional properties may be left out; objects without
`properties` are `{}`; arrays and strings are bounded (256 items / characters at most, so a call
always ends); minLength and numeric ranges are not enforced.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from gemma_edge.formats.jinja_values import dictsort
from gemma_edge.parsing.syntax import OutputSyntax

MAX_DIGITS = 16  # a bound, so a number cannot run on until max_tokens
PRIMITIVES = {
    "integer": '"-"? ([0-9] | [1-9] [0-9]{1,%d})' % (MAX_DIGITS - 1),
    "boolean": '"true" | "false"',
    "null": '"null"',
}
PRIMITIVES["number"] = PRIMITIVES["integer"].join("()") + ' ("." [0-9]{1,%d})? ([eE] [-+]? [0-9]{1,2})?' % MAX_DIGITS
MAX_STRING = 256  # characters of a string, items of an array: bounded, so every call ends
MAX_CALLS = 16     # calls in one reply when parallel calls are allowed
KEY = "[A-Za-z_] [A-Za-z0-9_]{0,63}"


class SchemaError(ValueError):
    """A tool's schema uses something this grammar cannot express."""


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal (other control characters as \\xHH)."""
    return '"' + "".join(_ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 32 else c) for c in text) + '"'



def tool_call_grammar(syntax: OutputSyntax, tools: list[dict], *, parallel: bool,
                      token_id: Callable[[str], int | None]) -> str:
    """The grammar for one call (or, with `parallel`, one or more) to any of `tools` (OpenAI-shaped:
    `{"type": "function", "function": {"name", "parameters"}}`). `token_id(marker)`: the marker's
    special-token id, or None when it is plain text in this vocabulary."""
    if not syntax.supports_calls:
        raise SchemaError(f"the {syntax.name} output format has no tool-call syntax")
    builder = _Builder(syntax, token_id)
    names = []
    for tool in tools:
        function = tool["function"]
        rule = builder.rule(f"call-{len(names)}",
                            f'{gbnf_literal(function["name"])} {builder.object(function.get("parameters") or {})}')
        names.append(rule)
    marker = builder.marker
    call = f'{marker(syntax.call_open)} {gbnf_literal(syntax.call_prefix)} ({" | ".join(names)}) ' \
           f'{marker(syntax.call_close)}'
    rules = [f"root ::= call{{1,{MAX_CALLS if parallel else 1}}}", f"call ::= {call}", *builder.rules]
    return "\n".join(rules) + "\n"


def _count(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


class _Builder:
    def __init__(self, syntax: OutputSyntax, token_id: Callable[[str], int | None]):
        self.token_id = token_id
        self.rules: list[str] = []
        self.quote = quote = self.marker(syntax.string_delim)
        # A string may hold "<" but never the start of a marker's text: the parser reads markers in the
        # text whether or not they came as special tokens (every Gemma marker starts with "<").
        after = "".join(f"\\x{ord(c):02x}" for c in sorted({m[1] for m in syntax.all_markers() if len(m) > 1} | {"<"}))
        self.rules += [f"string ::= {quote} string-char{{0,{MAX_STRING}}} {quote}",
                       f'string-char ::= [^<] | "<" [^{after}]',
                       *(f"{name} ::= {body}" for name, body in PRIMITIVES.items()),
                       "value ::= string | number | boolean | null | any-array | any-object",
                       'any-array ::= "[" (value ("," value){0,%d})? "]"' % (MAX_STRING - 1),
                       f'any-object ::= "{{" ({KEY} ":" value ("," {KEY} ":" value)*)? "}}"']
        self.count = 0

    def marker(self, text: str) -> str:
        token = self.token_id(text)
        return f"<[{token}]>" if token is not None else gbnf_literal(text)

    def rule(self, hint: str, body: str) -> str:
        self.count += 1
        name = f"{hint}-{self.count}"
        self.rules.append(f"{name} ::= {body}")
        return name

    def value(self, schema: Any) -> str:
        if schema is True or schema == {}:
            return "value"
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema must be an object, not {schema!r}")
        if "$ref" in schema:
            raise SchemaError("$ref in tool parameters is not supported by forced tool calls")
        if "const" in schema:
            return self.rule("const", self.literal(schema["const"]))
        if "enum" in schema:
            if not schema["enum"]:
                raise SchemaError("an empty enum allows no value")
            return self.rule("enum", " | ".join(self.literal(v) for v in schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.rule("any", " | ".join(self.value(option) for option in schema[key]))
        types = schema.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if schema.get("nullable") and "null" not in types:
            types.append("null")
        if not types:
            return "value"
        return self.rule("value", " | ".join(self.typed(t, schema) for t in types))

    def typed(self, kind: str, schema: dict) -> str:
        if kind == "string":
            return f"{self.quote} string-char{{0,{min(_count(schema.get('maxLength'), MAX_STRING), MAX_STRING)}}} " \
                   f"{self.quote}"
        if kind in PRIMITIVES:
            return kind
        if kind == "array":
            return self.array(schema)
        if kind == "object":
            return self.object(schema)
        raise SchemaError(f"unknown type {kind!r}")

    def array(self, schema: dict) -> str:
        """`[item,…]` with minItems and maxItems (each up to MAX_STRING) enforced."""
        least = min(_count(schema.get("minItems"), 0), MAX_STRING)
        most = min(_count(schema.get("maxItems"), MAX_STRING), MAX_STRING)
        if most < least:
            raise SchemaError("maxItems is below minItems")
        if most == 0:
            return '"[]"'
        item = self.value(schema.get("items", {}))
        items = f'{item} ("," {item}){{{max(least - 1, 0)},{most - 1}}}'
        return f'"[" {items if least else f"({items})?"} "]"'

    def object(self, schema: dict) -> str:
        """`{key:value,…}`: the properties in the template's key order, the required ones always."""
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise SchemaError("properties must be an object")
        required = set(schema.get("required") or [])
        items = [(f'{gbnf_literal(f"{key}:")} {self.value(sub)}', key in required)
                 for key, sub in dictsort(properties)]
        # after_first[i] / first[i]: the rest from property i on, after something was written / before
        first, after_first = '""', '""'
        for pair, needed in reversed(items):
            with_pair_first = f"{pair} {after_first}"
            with_pair_after = f'"," {pair} {after_first}'
            if needed:
                first, after_first = with_pair_first, with_pair_after
            else:
                first = f"({with_pair_first}) | ({first})"
                after_first = f"({with_pair_after}) | ({after_first})"
            first = self.rule("props", first)
            after_first = self.rule("props", after_first)
        return f'"{{" {first} "}}"'

    def literal(self, value: Any) -> str:
        """A JSON value in the call notation, as a grammar sequence."""
        if isinstance(value, str):
            return f"{self.quote} {gbnf_literal(value)} {self.quote}"
        if value is None or isinstance(value, (bool, int, float)):
            return gbnf_literal(json.dumps(value))
        if isinstance(value, list):
            return '"[" ' + ' "," '.join(self.literal(v) for v in value) + ' "]"' if value else '"[]"'
        if isinstance(value, dict):
            inner = ' "," '.join(f'{gbnf_literal(f"{k}:")} {self.literal(v)}' for k, v in dictsort(value))
            return f'"{{" {inner} "}}"' if value else '"{}"'
        raise SchemaError(f"cannot write {value!r} as a call argument")
