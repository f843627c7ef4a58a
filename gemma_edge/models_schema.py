"""The shape of models.yaml as a JSON Schema, and a small validator for it.

The schema is plain data (draft 2020-12 keywords only) so the same dict documents the file, drives
the runtime check of a user-edited registry, and can be fed to any JSON Schema implementation (the
tests cross-check this validator against `jsonschema`). The validator implements just the keywords
the schema uses, to keep `jsonschema` out of the runtime dependencies; it returns every problem as
one line naming where it is (`models[3].sha256: ...`), which is what a user fixing a file needs.
"""
from __future__ import annotations

import re
from collections import Counter

from gemma_edge.generations import GENERATION_NAMES, MODEL_FORMATS

# the `generation` and `format` values: the runtime generation table's names
GENERATIONS = list(GENERATION_NAMES)
FORMATS = list(MODEL_FORMATS)

_NAME = r"^[a-z0-9][a-z0-9._-]*$"
_SHA256 = r"^[0-9a-f]{64}$"
_HF_REPO = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
_GGUF_FILE = r"^[A-Za-z0-9][A-Za-z0-9._/-]*\.gguf$"
_COMMIT = r"^[0-9a-f]{40}$"
_NON_EMPTY = {"type": "string", "minLength": 1}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [{"type": "null"}, schema]}


def _closed(properties: dict, optional: tuple[str, ...] = ()) -> dict:
    """An object with exactly these keys (those in `optional` may be left out)."""
    return {
        "type": "object",
        "properties": properties,
        "required": [key for key in properties if key not in optional],
        "additionalProperties": False,
    }


_HUB_FILE = _closed(
    {
        "repo": {"type": "string", "pattern": _HF_REPO},
        "file": {"type": "string", "pattern": _GGUF_FILE},
        "revision": {"type": "string", "pattern": _COMMIT},
    },
    optional=("revision",),
)

_SOURCE = {
    "oneOf": [
        _closed({"embedded": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]*$"}}),
        _HUB_FILE,
        _closed({"convert": _closed({
            "repo": {"type": "string", "pattern": _HF_REPO},
            "type": {"type": "string", "pattern": r"^[a-z0-9_]+$"},
        })}),
    ]
}

# The multimodal projector GGUF of a model that sees or hears: a hub file (fetched by `pull` beside the
# model), or, for a capable model whose projector no public source names, the reason why there is none.
_PROJECTOR_FILE = _closed(
    {
        "repo": {"type": "string", "pattern": _HF_REPO},
        "file": {"type": "string", "pattern": _GGUF_FILE},
        "revision": {"type": "string", "pattern": _COMMIT},
        "file_size": _nullable({"type": "integer", "minimum": 1}),
        "sha256": _nullable({"type": "string", "pattern": _SHA256}),
    },
    optional=("revision", "file_size"),
)
_NO_PROJECTOR_FILE = _closed({"unavailable": _NON_EMPTY})

_MODEL = _closed({
    "name": {"type": "string", "pattern": _NAME},
    "description": _NON_EMPTY,
    "generation": {"enum": GENERATIONS},
    "format": {"enum": FORMATS},
    "size_class": {"type": "string", "pattern": r"^(e?[0-9]+(\.[0-9]+)?[mb])(-a[0-9]+(\.[0-9]+)?b)?$"},
    "instruct": {"type": "boolean"},
    "source": _SOURCE,
    "file_size": _nullable({"type": "integer", "minimum": 1}),
    "sha256": _nullable({"type": "string", "pattern": _SHA256}),
    "quantization": {"type": "string", "pattern": r"^[A-Z0-9_]+$"},
    "context_length": {"type": "integer", "minimum": 1},
    "license": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9.-]*$"},
    "gated": {"type": "boolean"},
    "capabilities": _closed({key: {"type": "boolean"} for key in ("thinking", "tools", "vision", "audio", "embeds")},
                            optional=("embeds",)),
    "sampling": _closed({
        "temperature": {"type": "number", "minimum": 0},
        "top_k": {"type": "integer", "minimum": 0},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "min_p": {"type": "number", "minimum": 0, "maximum": 1},
        "repeat_penalty": {"type": "number", "exclusiveMinimum": 0},
    }),
    "mmproj": _nullable({"oneOf": [_PROJECTOR_FILE, _NO_PROJECTOR_FILE]}),
}, optional=("sampling",))  # an embedding model samples nothing

MODELS_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "gemma-edge models.yaml",
    **_closed({
        "default": {"type": "string", "pattern": _NAME},
        "models": {"type": "array", "minItems": 1, "items": _MODEL},
    }),
}


def registry_errors(document: object) -> list[str]:
    """Everything wrong with a loaded models.yaml: schema violations, then duplicate names and a
    `default` that names no entry. An empty list means the file is usable."""
    errors = schema_errors(document, MODELS_SCHEMA)
    if errors:
        return errors
    names = [model["name"] for model in document["models"]]
    errors += [f"models: name '{name}' is used {count} times" for name, count in Counter(names).items() if count > 1]
    if document["default"] not in names:
        errors.append(f"default: '{document['default']}' is not the name of any entry in models")
    return errors


def schema_errors(value: object, schema: dict, where: str = "") -> list[str]:
    """Problems of `value` against `schema` (the keyword subset MODELS_SCHEMA uses), one line each."""
    label = where or "(top level)"
    if "anyOf" in schema or "oneOf" in schema:
        return _alternative_errors(value, schema, label, where)
    if "enum" in schema and value not in schema["enum"]:
        return [f"{label}: {value!r} is not one of {', '.join(map(str, schema['enum']))}"]
    if "type" in schema and not _has_type(value, schema["type"]):
        return [f"{label}: expected {schema['type']}, found {_type_name(value)} {value!r}"]
    if isinstance(value, str):
        return _string_errors(value, schema, label)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number_errors(value, schema, label)
    if isinstance(value, dict):
        return _object_errors(value, schema, where)
    if isinstance(value, list):
        return _array_errors(value, schema, label, where)
    return []


def _alternative_errors(value, schema, label, where) -> list[str]:
    options = schema.get("anyOf") or schema["oneOf"]
    matching = [option for option in options if not schema_errors(value, option, where)]
    if "oneOf" in schema and len(matching) > 1:
        return [f"{label}: matches {len(matching)} of the allowed forms, expected exactly one"]
    if matching:
        return []
    concrete = [option for option in options if option.get("type") != "null"]
    if len(concrete) == 1:  # nullable: explain against the one real alternative
        return schema_errors(value, concrete[0], where)
    keys = " | ".join("{" + ", ".join(option.get("required", [])) + "}" for option in concrete)
    return [f"{label}: expected one of the forms {keys}, found {value!r}"]


def _string_errors(value: str, schema: dict, label: str) -> list[str]:
    if len(value) < schema.get("minLength", 0):
        return [f"{label}: must not be empty"]
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return [f"{label}: {value!r} does not match {schema['pattern']}"]
    return []


def _number_errors(value: float, schema: dict, label: str) -> list[str]:
    if "minimum" in schema and value < schema["minimum"]:
        return [f"{label}: {value} is below the minimum {schema['minimum']}"]
    if "maximum" in schema and value > schema["maximum"]:
        return [f"{label}: {value} is above the maximum {schema['maximum']}"]
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return [f"{label}: {value} must be greater than {schema['exclusiveMinimum']}"]
    return []


def _object_errors(value: dict, schema: dict, where: str) -> list[str]:
    prefix = f"{where}." if where else ""
    properties = schema.get("properties", {})
    errors = [f"{prefix}{key}: missing" for key in schema.get("required", []) if key not in value]
    if schema.get("additionalProperties") is False:
        errors += [f"{prefix}{key}: unknown key" for key in value if key not in properties]
    for key, sub_schema in properties.items():
        if key in value:
            errors += schema_errors(value[key], sub_schema, f"{prefix}{key}")
    return errors


def _array_errors(value: list, schema: dict, label: str, where: str) -> list[str]:
    if len(value) < schema.get("minItems", 0):
        return [f"{label}: needs at least {schema['minItems']} item(s)"]
    if "items" not in schema:
        return []
    return [error for i, item in enumerate(value) for error in schema_errors(item, schema["items"], f"{where}[{i}]")]


def _has_type(value: object, expected: str | list[str]) -> bool:
    return any(_is(value, name) for name in ([expected] if isinstance(expected, str) else expected))


def _is(value: object, name: str) -> bool:
    """JSON Schema's types over YAML-loaded Python values (a bool is not a number; 2.0 is an integer)."""
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    kinds = {"string": str, "boolean": bool, "object": dict, "array": list, "null": type(None)}
    return isinstance(value, kinds[name])


def _type_name(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object",
            list: "array", type(None): "null"}.get(type(value), type(value).__name__)
