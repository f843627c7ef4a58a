"""Gemma 4's own value notation, as its chat template writes it (FunctionGemma, its ancestor,
uses the same notation with other tokens): tool declarations
(`declaration:NAME{description:<|"|>…<|"|>,parameters:{…}}`), tool-call arguments and tool
responses. Strings are wrapped in a quote token (`<|"|>`, FunctionGemma's `<escape>`) instead of
quotes, keys are sorted case-insensitively, object keys are bare in calls/responses and quoted
elsewhere, and JSON-Schema properties get their own compact form (description, enum, items,
nullable, nested properties, required, upper-cased type). Each function mirrors one macro of the
template; `Notation` holds the tokens and the one spacing difference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from gemma_edge.formats.base import SegmentWriter
from gemma_edge.formats.jinja_values import dictsort, is_sequence, item, printed, upper

STANDARD_KEYS = ("description", "type", "properties", "required", "nullable")


@dataclass(frozen=True)
class Notation:
    quote: str                 # the token around every string
    response_open: str         # around one tool response
    response_close: str
    spaced_declaration: bool   # FunctionGemma: " }" closes the top-level properties and declaration


GEMMA4 = Notation('<|"|>', "<|tool_response>", "<tool_response|>", spaced_declaration=False)


def quoted(out: SegmentWriter, text: Any, n: Notation) -> None:
    out.mark(n.quote)
    out.text(printed(text))
    out.mark(n.quote)


def argument(out: SegmentWriter, value: Any, n: Notation, escape_keys: bool = True) -> None:
    """Macro `format_argument`: any JSON value."""
    if value is None:
        out.text("null")
    elif isinstance(value, str):
        quoted(out, value, n)
    elif isinstance(value, bool):
        out.text("true" if value else "false")
    elif isinstance(value, Mapping):
        out.text("{")
        for index, (key, entry) in enumerate(dictsort(value)):
            if index:
                out.text(",")
            quoted(out, key, n) if escape_keys else out.text(printed(key))
            out.text(":")
            argument(out, entry, n, escape_keys)
        out.text("}")
    elif is_sequence(value):
        out.text("[")
        for index, entry in enumerate(value):
            if index:
                out.text(",")
            argument(out, entry, n, escape_keys)
        out.text("]")
    else:
        out.text(printed(value))


def bare_object(out: SegmentWriter, mapping: Mapping[str, Any], n: Notation) -> None:
    """`key:value,…` with bare keys (the inside of a tool call or a mapping tool response)."""
    for index, (key, value) in enumerate(dictsort(mapping)):
        if index:
            out.text(",")
        out.text(printed(key) + ":")
        argument(out, value, n, escape_keys=False)


def tool_response(out: SegmentWriter, name: Any, response: Any, n: Notation) -> None:
    """Macro `format_tool_response_block`."""
    out.mark(n.response_open)
    if isinstance(response, Mapping):
        out.text("response:" + name + "{")
        bare_object(out, response, n)
    else:
        out.text("response:" + name + "{value:")
        argument(out, response, n, escape_keys=False)
    out.text("}")
    out.mark(n.response_close)


def _required_list(out: SegmentWriter, names: Any, n: Notation) -> None:
    out.text("required:[")
    for index, name in enumerate(names):
        if index:
            out.text(",")
        quoted(out, name, n)
    out.text("]")


def parameters(out: SegmentWriter, properties: Mapping[str, Any], n: Notation, filter_keys: bool = False) -> None:
    """Macro `format_parameters`: the properties of an object schema, `name:{…}` each."""
    first = True
    for key, value in dictsort(properties):
        if filter_keys and key in STANDARD_KEYS:
            continue
        if not first:
            out.text(",")
        first = False
        out.text(printed(key) + ":{")
        comma = _Comma(out)
        if item(value, "description"):
            out.text("description:")
            quoted(out, value["description"], n)
            comma.needed = True
        kind = upper(item(value, "type"))
        if kind == "STRING":
            if item(value, "enum"):
                comma()
                out.text("enum:")
                argument(out, value["enum"], n)
        elif kind == "ARRAY":
            items = item(value, "items")
            if isinstance(items, Mapping) and items:
                comma()
                out.text("items:{")
                _array_items(out, items, n)
                out.text("}")
        if item(value, "nullable"):
            comma()
            out.text("nullable:true")
        if kind == "OBJECT":
            nested = item(value, "properties")
            if isinstance(nested, Mapping):
                comma()
                out.text("properties:{")
                parameters(out, nested, n)
                out.text("}")
            elif isinstance(value, Mapping):
                comma()
                out.text("properties:{")
                parameters(out, value, n, filter_keys=True)
                out.text("}")
            if item(value, "required"):
                comma()
                _required_list(out, value["required"], n)
        comma()
        out.text("type:")
        quoted(out, kind, n)
        out.text("}")


def _array_items(out: SegmentWriter, items: Mapping[str, Any], n: Notation) -> None:
    first = True
    for key, value in dictsort(items):
        if value is None:
            continue
        if not first:
            out.text(",")
        first = False
        if key == "properties":
            out.text("properties:{")
            if isinstance(value, Mapping):
                parameters(out, value, n)
            out.text("}")
        elif key == "required":
            _required_list(out, value, n)
        elif key == "type":
            out.text("type:")
            argument(out, upper(value) if isinstance(value, str) else [upper(v) for v in value], n)
        else:
            out.text(printed(key) + ":")
            argument(out, value, n)


class _Comma:
    """The template's `add_comma` flag: a comma before every field of a property but the first."""

    __slots__ = ("out", "needed")

    def __init__(self, out: SegmentWriter) -> None:
        self.out = out
        self.needed = False

    def __call__(self) -> None:
        if self.needed:
            self.out.text(",")
        self.needed = True


def declaration(out: SegmentWriter, tool: Mapping[str, Any], n: Notation) -> None:
    """Macro `format_function_declaration` (its output is `| trim`med, which never changes it:
    it starts with "declaration:" and ends with "}")."""
    function = item(tool, "function")
    close = " }" if n.spaced_declaration else "}"
    out.text("declaration:" + printed(item(function, "name")) + "{description:")
    quoted(out, item(function, "description"), n)
    params = item(function, "parameters")
    if params:
        out.text(",parameters:{")
        if item(params, "properties"):
            out.text("properties:{")
            parameters(out, params["properties"], n)
            out.text(close + ",")
        if item(params, "required"):
            _required_list(out, params["required"], n)
            out.text(",")
        if item(params, "type"):
            out.text("type:")
            quoted(out, upper(params["type"]), n)
            out.text("}")
    if isinstance(function, Mapping) and "response" in function:
        response = function["response"]
        out.text(",response:{")
        if item(response, "description"):
            out.text("description:")
            quoted(out, response["description"], n)
            out.text(",")
        if upper(item(response, "type")) == "OBJECT":
            out.text("type:")
            quoted(out, upper(response["type"]), n)
            out.text("}")
    out.text(close if params else "}")


__all__ = ["GEMMA4", "Notation", "argument", "bare_object", "declaration", "tool_response"]
