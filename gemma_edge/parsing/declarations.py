"""What the request's `tools` say about each tool's parameters, for schema-guided repairs.

Accepts what a chat request accepts: OpenAI-style `{"type": "function", "function": {...}}`
dicts, bare function dicts (`{"name", "parameters"}`) and Python callables."""
from __future__ import annotations

from typing import Any, Iterable

from gemma_edge.parsing.calls import ToolDecl


def tool_declarations(tools: Iterable[Any] | None) -> dict[str, ToolDecl] | None:
    if not tools:
        return None
    out: dict[str, ToolDecl] = {}
    for tool in tools:
        if callable(tool) and not isinstance(tool, dict):
            from gemma_edge.tools import function_schema

            tool = function_schema(tool)
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function", tool)
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        params = fn.get("parameters") or {}
        props = params.get("properties") if isinstance(params, dict) else None
        props = props if isinstance(props, dict) else {}
        strings = frozenset(k for k, v in props.items() if _is_string_schema(v))
        out[fn["name"]] = ToolDecl(frozenset(props), strings)
    return out


def _is_string_schema(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    named = [k.lower() for k in kinds if isinstance(k, str) and k.lower() != "null"]
    return named == ["string"]
