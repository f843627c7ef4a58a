"""Gemma 4's own value notation, as its chat template writes it: tool declarations
(`declaration:NAME{description:<|"|>…<|"|>,parameters:{…}}`), tool-call arguments and tool
responses. Strings are wrapped in the `<|"|>` token instead of quotes, keys are sorted
case-insensitively, object keys are bare in calls/responses and quoted elsewhere, and JSON-Schema
properties get their own compact form (description, enum, items, nullable, nested properties,
required, upper-cased type). Each function mirrors one macro of the template.
"""
from __future__ import annotations

from typing import Any, Mapping

from gemma_edge.formats.base import SegmentWriter
from gemma_edge.formats.jinja_values import UNDEFINED, dictsort, is_sequence, item, printed, upper

QUOTE = '<|"|>'
STANDARD_KEYS = ("description", "type", "properties", "required", "nullable")


def quoted(out: SegmentWriter, text: Any) -> None:
    out.mark(QUOTE)
    out.text(printed(text))
    out.mark(QUOTE)


def argument(out: SegmentWriter, value: Any, escape_keys: bool = True) -> None:
    """Macro `format_argument`: any JSON value."""
    if value is None:
        out.text("null")
    elif isinstance(value, str):
        quoted(out, value)
    elif isinstance(value, bool):
        out.text("true" if value else "false")
    elif isinstance(value, Mapping):
        out.text("{")
        for index, (key, entry) in enumerate(dictsort(value)):
            if index:
                out.text(",")
            quoted(out, key) if escape_keys else out.text(printed(key))
            out.text(":")
            argument(out, entry, escape_keys)
        out.text("}")
    elif is_sequence(value):
        out.text("[")
        for index, entry in enumerate(value):
            if index:
                out.text(",")
            argument(out, entry, escape_keys)
        out.text("]")
    else:
        out.text(printed(value))


def bare_object(out: SegmentWriter, mapping: Mapping[str, Any]) -> None:
    """`key:value,…` with bare keys (the inside of a tool call or a mapping tool response)."""
    for index, (key, value) in enumerate(dictsort(mapping)):
        if index:
            out.text(",")
        out.text(printed(key) + ":")
        argument(out, value, escape_keys=False)


def tool_response(out: SegmentWriter, name: Any, response: Any) -> None:
    """Macro `format_tool_response_block`."""
    out.mark("<|tool_response>")
    if isinstance(response, Mapping):
        out.text("response:" + name + "{")
        bare_object(out, response)
    else:
        out.text("response:" + name + "{value:")
        argument(out, response, escape_keys=False)
    out.text("}")
    out.mark("<tool_response|>")


def _required_list(out: SegmentWriter, names: Any) -> None:
    out.text("required:[")
    for index, name in enumerate(names):
        if index:
            out.text(",")
        quoted(out, name)
    out.text("]")


def parameters(out: SegmentWriter, properties: Mapping[str, Any], filter_keys: bool = False) -> None:
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
            quoted(out, value["description"])
            comma.needed = True
        kind = upper(item(value, "type"))
        if kind == "STRING":
            if item(value, "enum"):
                comma()
                out.text("enum:")
                argument(out, value["enum"])
        elif kind == "ARRAY":
            items = item(value, "items")
            if isinstance(items, Mapping) and items:
                comma()
                out.text("items:{")
                _array_items(out, items)
                out.text("}")
        if item(value, "nullable"):
            comma()
            out.text("nullable:true")
        if kind == "OBJECT":
            nested = item(value, "properties")
            if isinstance(nested, Mapping):
                comma()
                out.text("properties:{")
                parameters(out, nested)
                out.text("}")
            elif isinstance(value, Mapping):
                comma()
                out.text("properties:{")
                parameters(out, value, filter_keys=True)
                out.text("}")
            if item(value, "required"):
                comma()
                _required_list(out, value["required"])
        comma()
        out.text("type:")
        out.mark(QUOTE)
        out.text(kind)
        out.mark(QUOTE)
        out.text("}")


def _array_items(out: SegmentWriter, items: Mapping[str, Any]) -> None:
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
                parameters(out, value)
            out.text("}")
        elif key == "required":
            _required_list(out, value)
        elif key == "type":
            out.text("type:")
            argument(out, upper(value) if isinstance(value, str) else [upper(v) for v in value])
        else:
            out.text(printed(key) + ":")
            argument(out, value)


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


def declaration(out: SegmentWriter, tool: Mapping[str, Any]) -> None:
    """Macro `format_function_declaration` (its output is `| trim`med, which never changes it:
    it starts with "declaration:" and ends with "}")."""
    function = item(tool, "function")
    out.text("declaration:" + printed(item(function, "name")) + "{description:")
    quoted(out, item(function, "description"))
    params = item(function, "parameters")
    if params:
        out.text(",parameters:{")
        if item(params, "properties"):
            out.text("properties:{")
            parameters(out, params["properties"])
            out.text("},")
        if item(params, "required"):
            _required_list(out, params["required"])
            out.text(",")
        if item(params, "type"):
            out.text("type:")
            out.mark(QUOTE)
            out.text(upper(params["type"]))
            out.mark(QUOTE)
            out.text("}")
    if isinstance(function, Mapping) and "response" in function:
        response = function["response"]
        out.text(",response:{")
        if item(response, "description"):
            out.text("description:")
            quoted(out, response["description"])
            out.text(",")
        if upper(item(response, "type")) == "OBJECT":
            out.text("type:")
            out.mark(QUOTE)
            out.text(upper(response["type"]))
            out.mark(QUOTE)
            out.text("}")
    out.text("}")


__all__ = ["QUOTE", "UNDEFINED", "argument", "bare_object", "declaration", "tool_response"]
