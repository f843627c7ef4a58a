"""Tools for the Python API's tool loop: JSON schemas from Python functions, and running a
model's tool call into the `role: tool` message that goes back to the model.

Pure helpers: no model, no I/O. `run_tool_call` never raises: an unknown tool, bad arguments or
a tool that fails become an error result the model can read and react to.
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import types
import typing
from typing import Any, Callable, Iterable, Mapping

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
_ARRAYS = (list, tuple, set, frozenset, typing.Sequence, typing.MutableSequence, typing.Iterable,
           typing.Collection, typing.AbstractSet, typing.MutableSet)
_OBJECTS = (dict, typing.Mapping, typing.MutableMapping)


def function_schema(fn: Callable) -> dict:
    """OpenAI-style `{"type": "function", "function": {name, description, parameters}}` for a
    Python callable, from its signature, type hints and docstring (Google, NumPy or reST style
    argument docs). Parameters without a default are required; `Optional[X]`/`X | None` is
    X with `nullable: true`; `Literal[...]` and Enum classes become `enum`."""
    name = getattr(fn, "__name__", None) or type(fn).__name__
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to none
        hints = {}
    description, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
    properties: dict[str, dict] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.name in ("self", "cls") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name in hints:
            schema = type_schema(hints[param.name])
        elif param.default is not inspect.Parameter.empty and param.default is not None:
            schema = type_schema(type(param.default))
        else:
            schema = {"type": "string"}
        if param.name in arg_docs:
            schema = {**schema, "description": arg_docs[param.name]}
        properties[param.name] = schema
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def type_schema(hint: Any) -> dict:
    """JSON Schema of one type hint."""
    if hint is Any or hint is inspect.Parameter.empty:
        return {}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return type_schema(args[0])
    if origin is typing.Union or isinstance(hint, types.UnionType):
        members = [a for a in args if a is not type(None)]
        nullable = len(members) < len(args)
        if len(members) == 1:
            schema = type_schema(members[0])
        else:
            subs = [type_schema(m) for m in members]
            simple = all(set(s) == {"type"} and isinstance(s["type"], str) for s in subs)
            schema = {"type": [s["type"] for s in subs]} if simple else {"anyOf": subs}
        return {**schema, "nullable": True} if nullable else schema
    if origin is typing.Literal:
        return _enum_schema(list(args))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_schema([member.value for member in hint])
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    base = origin or hint
    if base in _ARRAYS:
        schema: dict[str, Any] = {"type": "array"}
        if base is tuple and args and args[-1] is not Ellipsis:
            schema["prefixItems"] = [type_schema(a) for a in args]
        elif args:
            schema["items"] = type_schema(args[0])
        return schema
    if base in _OBJECTS:
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = type_schema(args[1])
        return schema
    if dataclasses.is_dataclass(hint) or typing.is_typeddict(hint):
        fields = typing.get_type_hints(hint)
        return {"type": "object", "properties": {k: type_schema(v) for k, v in fields.items()}}
    return {"type": "object"}


def _enum_schema(values: list) -> dict:
    kinds = {_SCALARS.get(type(v)) for v in values}
    schema: dict[str, Any] = {"enum": values}
    if len(kinds) == 1 and None not in kinds:
        schema = {"type": kinds.pop(), "enum": values}
    return schema


# docstrings ---------------------------------------------------------------------------------
_GOOGLE_HEADER = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments)\s*:\s*$")
_GOOGLE_ITEM = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_HEADER = re.compile(r"^(Parameters|Other Parameters)\s*$")
_NUMPY_ITEM = re.compile(r"^(\w+)\s*(:.*)?$")
_REST_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_ANY_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?|"
                          r"Keyword Args|Keyword Arguments|Other Parameters|See Also|Attributes)\s*:?\s*$")
_REST_FIELD = re.compile(r"^:(param|type|returns?|rtype|raises?)\b")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {argument: its description}) from a cleaned docstring."""
    lines = doc.splitlines()
    description: list[str] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if _ANY_SECTION.match(stripped) or _REST_FIELD.match(stripped):
            break
        if i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"} and stripped:
            break  # a NumPy section title underlined with dashes
        description.append(line)
    args: dict[str, str] = {}
    args.update(_google_args(lines))
    args.update(_numpy_args(lines))
    args.update(_rest_args(lines))
    return "\n".join(description).strip(), args


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _google_args(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(lines):
        if not _GOOGLE_HEADER.match(lines[i].strip()):
            i += 1
            continue
        base = _indent(lines[i])
        i += 1
        current = None
        item_indent = None
        while i < len(lines):
            line = lines[i]
            if line.strip() and _indent(line) <= base:
                break
            m = _GOOGLE_ITEM.match(line.strip())
            if line.strip() and m and (item_indent is None or _indent(line) <= item_indent):
                item_indent = _indent(line)
                current = m.group(1).lstrip("*")
                out[current] = m.group(3).strip()
            elif current and line.strip():
                out[current] = (out[current] + " " + line.strip()).strip()
            i += 1
    return out


def _numpy_args(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        if not (_NUMPY_HEADER.match(line.strip()) and i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}):
            continue
        base = _indent(line)
        current = None
        for item in lines[i + 2:]:
            if not item.strip():
                continue
            if _indent(item) <= base:
                m = _NUMPY_ITEM.match(item.strip())
                if not m or _ANY_SECTION.match(item.strip()):
                    break
                current = m.group(1)
                out[current] = ""
            elif current:
                out[current] = (out[current] + " " + item.strip()).strip()
    return out


def _rest_args(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    current = None
    for line in lines:
        m = _REST_PARAM.match(line.strip())
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.strip() and not line.strip().startswith(":") and _indent(line) > 0:
            out[current] += " " + line.strip()
        else:
            current = None
    return out


# the tool loop ------------------------------------------------------------------------------
def prompt_declarations(tools: Iterable[Any] | None) -> list[dict] | None:
    """The declarations `tools` put in a prompt (None: no tools)."""
    return normalize_tools(tools)[0] if tools else None


def normalize_tools(tools: Iterable[Any] | None) -> tuple[list[dict], dict[str, Callable]]:
    """(declarations for the prompt, {name: callable}) from Python callables and JSON-schema
    declarations (`{"type": "function", "function": {...}}` or a bare `{"name", ...}`), mixed.
    A declaration without a callable is declared to the model but cannot be run."""
    declarations: list[dict] = []
    callables: dict[str, Callable] = {}
    for tool in tools or ():
        if isinstance(tool, Mapping):
            decl = dict(tool) if "function" in tool else {"type": "function", "function": dict(tool)}
            name = decl["function"].get("name") if isinstance(decl.get("function"), Mapping) else None
            if not isinstance(name, str) or not name:
                raise ValueError(f"a tool declaration needs a function name: {dict(tool)!r:.80}")
        elif callable(tool):
            decl = function_schema(tool)
            name = decl["function"]["name"]
            callables[name] = tool
        else:
            raise TypeError(f"a tool must be a callable or a JSON-schema dict, got {type(tool).__name__}")
        if any(d["function"]["name"] == name for d in declarations):
            raise ValueError(f"two tools are named {name!r}")
        declarations.append(decl)
    return declarations, callables


def run_tool_call(call: Mapping[str, Any], callables: Mapping[str, Callable]) -> dict:
    """Run one parsed tool call; return the `{"role": "tool", "name", "tool_call_id"?, "content"}`
    message to send back. Never raises: failures are reported in `content` as
    `{"error": "..."}` so the model can correct itself."""
    fn_part = call.get("function", call) if isinstance(call, Mapping) else {}
    name = fn_part.get("name") if isinstance(fn_part, Mapping) else None
    message: dict[str, Any] = {"role": "tool", "name": name if isinstance(name, str) else ""}
    if isinstance(call, Mapping) and call.get("id"):
        message["tool_call_id"] = call["id"]
    arguments = fn_part.get("arguments", {}) if isinstance(fn_part, Mapping) else {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            return {**message, "content": _error(f"arguments are not valid JSON: {exc}")}
    if arguments is None:
        arguments = {}
    fn = callables.get(name) if isinstance(name, str) else None
    if fn is None:
        known = ", ".join(sorted(callables)) or "none"
        return {**message, "content": _error(f"unknown tool {name!r}; available tools: {known}")}
    if not isinstance(arguments, Mapping):
        return {**message, "content": _error("arguments must be an object")}
    try:
        inspect.signature(fn).bind(**arguments)
    except TypeError as exc:
        return {**message, "content": _error(f"bad arguments for {name}: {exc}")}
    except ValueError:
        pass  # builtins without a signature: let the call itself decide
    try:
        result = fn(**arguments)
    except Exception as exc:  # noqa: BLE001 - a failing tool is reported to the model
        return {**message, "content": _error(f"{type(exc).__name__}: {exc}")}
    return {**message, "content": result_text(result)}


def result_text(result: Any) -> str:
    """A tool's return value as message content: strings as they are, anything else as JSON."""
    if isinstance(result, str):
        return result
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        result = dataclasses.asdict(result)
    return json.dumps(result, ensure_ascii=False, default=str)


def _error(text: str) -> str:
    return json.dumps({"error": text}, ensure_ascii=False)
