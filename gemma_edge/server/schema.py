"""The request schemas of the HTTP API, the one place that says what a valid request looks like.

The same dictionaries are served in /openapi.json (so fuzzers generate requests from exactly what
the server checks) and checked by `validate`, a small JSON Schema validator for the subset used
here. A node may carry `x-error`: the message given when that node fails, instead of a generic one.
"""
from __future__ import annotations

import re
from typing import Any

from gemma_edge.server.errors import RequestError

INT64 = 1 << 63
MAX_TEXT = 1 << 22  # per string; the body-size limit is the real bound

_STRING = {"type": "string", "maxLength": MAX_TEXT}
_NAME = {"type": "string", "maxLength": 256}
_OBJECT = {"type": "object"}


_NULL = {"type": "null"}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, _NULL]}


def _number(minimum=None, maximum=None, exclusive_minimum=None, integer=False) -> dict:
    node: dict = {"type": "integer" if integer else "number"}
    if minimum is not None:
        node["minimum"] = minimum
    if maximum is not None:
        node["maximum"] = maximum
    if exclusive_minimum is not None:
        node["exclusiveMinimum"] = exclusive_minimum
    return _nullable(node)


_ZERO_ONLY = {"anyOf": [{"type": "number", "minimum": 0, "maximum": 0}, {"type": "null"}],
              "x-error": "is not supported (only 0)"}

SAMPLING = {
    "temperature": _number(0, 2),
    "top_p": _number(maximum=1, exclusive_minimum=0),
    "top_k": _number(0, 1 << 20, integer=True),
    "min_p": _number(0, 1),
    "repeat_penalty": _number(maximum=10, exclusive_minimum=0),
    "seed": _number(-INT64, INT64 - 1, integer=True),
    "presence_penalty": _ZERO_ONLY,
    "frequency_penalty": _ZERO_ONLY,
}

MAX_STOPS = 16
_STOP_STRING = {"type": "string", "minLength": 1, "maxLength": 256}
_STOP_LIST = {"type": "array", "maxItems": MAX_STOPS, "items": _STOP_STRING}
STOP = {"anyOf": [_STOP_STRING, _STOP_LIST, {"type": "null"}],
        "x-error": f"must be a non-empty string or a list of at most {MAX_STOPS} (each at most 256 characters)"}

MAX_TOKENS = _number(1, 1 << 24, integer=True)
MAX_CHOICES = 8
MAX_TOP_LOGPROBS = 20

COMMON = {
    "model": _NAME,
    "stream": _nullable({"type": "boolean"}),
    "stream_options": _nullable({"type": "object", "properties": {"include_usage": {"type": "boolean"}},
                                 "additionalProperties": False}),
    "max_tokens": MAX_TOKENS,
    "stop": STOP,
    "n": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_CHOICES}, {"type": "null"}],
          "x-error": f"must be an integer from 1 to {MAX_CHOICES} (the choices are generated one after another)"},
    "user": _NAME,
    "speculative": {"anyOf": [{"enum": ["auto", "off", "ngram", None]},
                              {"type": "string", "pattern": "^draft:.", "maxLength": 4096},
                              {"type": "string", "pattern": "^mtp(:.+)?$", "maxLength": 4096}],
                    "x-error": "must be 'auto', 'off', 'ngram', 'draft:MODEL' (the server's draft model) or 'mtp' "
                               "(the server's MTP drafter)"},
    **SAMPLING,
}

CONTENT_PART = {
    "type": "object", "required": ["type"],
    "properties": {"type": {"type": "string", "maxLength": 64}, "text": _STRING, "image_url": {},
                   "input_audio": {}, "file": {}, "video_url": {}},
    "additionalProperties": False,
}

CONTENT = {"anyOf": [_STRING, {"type": "array", "maxItems": 256, "items": CONTENT_PART}, {"type": "null"}],
           "x-error": "must be a string, a list of content parts or null"}

TOOL_CALL = {
    "type": "object", "required": ["function"],
    "properties": {
        "id": _NAME, "type": {"enum": ["function"]}, "index": {"type": "integer", "minimum": 0, "maximum": 1024},
        "function": {"type": "object", "required": ["name", "arguments"],
                     "properties": {"name": _NAME, "arguments": _STRING}, "additionalProperties": False},
    },
    "additionalProperties": False,
}

MESSAGE = {
    "type": "object", "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": CONTENT,
        "name": _NAME,
        "tool_calls": _nullable({"type": "array", "maxItems": 128, "items": TOOL_CALL}),
        "tool_call_id": _NAME,
        "reasoning_content": _nullable(_STRING),
        "refusal": _nullable(_STRING),
    },
    "additionalProperties": False,
}

TOOL = {
    "type": "object", "required": ["type", "function"],
    "properties": {
        "type": {"enum": ["function"]},
        "function": {
            "type": "object", "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$",
                         "x-error": "must be 1-64 letters, digits, '_', '.' or '-'"},
                "description": _STRING,
                "parameters": _OBJECT,
                "strict": _nullable({"type": "boolean"}),
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

RESPONSE_FORMAT = {"anyOf": [
    {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "json_object"]}},
     "additionalProperties": False},
    {"type": "object", "required": ["type", "json_schema"],
     "properties": {"type": {"enum": ["json_schema"]},
                    "json_schema": {"type": "object", "required": ["name"],
                                    "properties": {"name": _NAME, "description": _STRING, "schema": _OBJECT,
                                                   "strict": _nullable({"type": "boolean"})},
                                    "additionalProperties": False}},
     "additionalProperties": False},
    {"type": "null"},
], "x-error": 'must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {...}}'}

CHAT_REQUEST = {
    "type": "object", "required": ["messages"],
    "properties": {
        **COMMON,
        "messages": {"type": "array", "minItems": 1, "maxItems": 4096, "items": MESSAGE},
        "max_completion_tokens": MAX_TOKENS,
        "tools": _nullable({"type": "array", "maxItems": 128, "items": TOOL}),
        "tool_choice": {"anyOf": [
            {"enum": ["auto", "none", "required"]},
            {"type": "object", "required": ["type", "function"],
             "properties": {"type": {"enum": ["function"]},
                            "function": {"type": "object", "required": ["name"], "properties": {"name": _NAME},
                                         "additionalProperties": False}},
             "additionalProperties": False},
            {"type": "null"}],
            "x-error": "must be 'auto', 'none', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}"},
        "parallel_tool_calls": _nullable({"type": "boolean"}),
        "response_format": RESPONSE_FORMAT,
        "reasoning_effort": {"enum": ["none", "minimal", "low", "medium", "high", None]},
        "chat_template_kwargs": _nullable({
            "type": "object",
            "properties": {"enable_thinking": {"type": "boolean"}, "preserve_thinking": {"type": "boolean"}},
            "additionalProperties": False}),
        "thinking_budget": _number(0, 1 << 24, integer=True),
        "logprobs": _nullable({"type": "boolean"}),
        "top_logprobs": _number(0, MAX_TOP_LOGPROBS, integer=True),
        "metadata": _nullable(_OBJECT),
        "store": _nullable({"type": "boolean"}),
    },
    "additionalProperties": False,
}

COMPLETION_REQUEST = {
    "type": "object", "required": ["prompt"],
    "properties": {
        **COMMON,
        "prompt": {"anyOf": [_STRING, {"type": "array", "minItems": 1, "maxItems": 1, "items": _STRING}],
                   "x-error": "must be a string (or a list holding one string)"},
        "echo": {"enum": [False, None], "x-error": "is not supported"},
        "suffix": {"type": "null", "x-error": "is not supported"},
        "logprobs": _number(0, 5, integer=True),
    },
    "additionalProperties": False,
}

# -- Ollama's API (/api/*) ------------------------------------------------------------------------
def _only(value: int) -> dict:
    """An option accepted only at its neutral value (anything else would change the output silently)."""
    return {"anyOf": [{"enum": [value, float(value)]}, {"type": "null"}],
            "x-error": f"is not supported yet (only {value})"}


_NOOP = {}  # options about loading/hardware: accepted, the server's own settings apply

OLLAMA_OPTIONS = _nullable({
    "type": "object",
    "properties": {
        **{k: v for k, v in SAMPLING.items() if k not in ("presence_penalty", "frequency_penalty")},
        "num_predict": _number(-2, 1 << 24, integer=True),
        "num_ctx": _number(1, 1 << 24, integer=True),
        "stop": _nullable(_STOP_LIST),
        "presence_penalty": _ZERO_ONLY, "frequency_penalty": _ZERO_ONLY,
        "mirostat": _only(0), "typical_p": _only(1), "tfs_z": _only(1),
        "repeat_last_n": _only(64), "penalize_newline": _nullable({"type": "boolean"}),
        **{k: _NOOP for k in ("num_keep", "num_batch", "num_gpu", "main_gpu", "num_thread", "numa", "low_vram",
                              "f16_kv", "vocab_only", "use_mmap", "use_mlock", "logits_all", "embedding_only")},
    },
    "additionalProperties": False,
})

_OLLAMA_IMAGES = _nullable({"type": "array", "maxItems": 16, "items": _STRING})
_OLLAMA_FORMAT = {"anyOf": [{"enum": ["", "json"]}, _OBJECT, {"type": "null"}],
                  "x-error": 'must be "json" or a JSON schema object'}
_OLLAMA_THINK = {"anyOf": [{"type": "boolean"}, {"enum": ["low", "medium", "high"]}, {"type": "null"}],
                 "x-error": 'must be true, false, "low", "medium" or "high"'}
_KEEP_ALIVE = {"anyOf": [{"type": "string", "maxLength": 64}, {"type": "number"}, {"type": "null"}],
               "x-error": 'must be a duration ("5m") or a number of seconds'}

OLLAMA_TOOL_CALL = {
    "type": "object", "required": ["function"],
    "properties": {
        "id": _NAME, "type": {"enum": ["function"]},
        "function": {"type": "object", "required": ["name"],
                     "properties": {"name": _NAME, "arguments": _nullable(_OBJECT),
                                    "index": {"type": "integer", "minimum": 0, "maximum": 1024}},
                     "additionalProperties": False},
    },
    "additionalProperties": False,
}

OLLAMA_MESSAGE = {
    "type": "object", "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool"]},
        "content": _nullable(_STRING),
        "images": _OLLAMA_IMAGES,
        "thinking": _nullable(_STRING),
        "tool_calls": _nullable({"type": "array", "maxItems": 128, "items": OLLAMA_TOOL_CALL}),
        "tool_name": _NAME,
        "tool_call_id": _NAME,
    },
    "additionalProperties": False,
}

_OLLAMA_COMMON = {
    "model": _NAME,
    "stream": _nullable({"type": "boolean"}),
    "format": _OLLAMA_FORMAT,
    "options": OLLAMA_OPTIONS,
    "keep_alive": _KEEP_ALIVE,
    "think": _OLLAMA_THINK,
    "logprobs": _nullable({"type": "boolean"}),
    "top_logprobs": _number(0, MAX_TOP_LOGPROBS, integer=True),
}

OLLAMA_CHAT_REQUEST = {
    "type": "object", "required": ["model"],
    "properties": {
        **_OLLAMA_COMMON,
        "messages": _nullable({"type": "array", "maxItems": 4096, "items": OLLAMA_MESSAGE}),
        "tools": _nullable({"type": "array", "maxItems": 128, "items": TOOL}),
    },
    "additionalProperties": False,
}

OLLAMA_GENERATE_REQUEST = {
    "type": "object", "required": ["model"],
    "properties": {
        **_OLLAMA_COMMON,
        "prompt": _nullable(_STRING),
        "system": _nullable(_STRING),
        "raw": _nullable({"type": "boolean"}),
        "images": _OLLAMA_IMAGES,
        "suffix": {"anyOf": [{"enum": [""]}, {"type": "null"}], "x-error": "is not supported yet"},
        "template": {"anyOf": [{"enum": [""]}, {"type": "null"}],
                     "x-error": "is not supported (the model's own turn format is always used)"},
        "context": {"anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}],
                    "x-error": "is not supported (deprecated by Ollama: send the conversation to /api/chat)"},
    },
    "additionalProperties": False,
}

OLLAMA_SHOW_REQUEST = {
    "type": "object",
    "properties": {"model": _NAME, "name": _NAME, "verbose": _nullable({"type": "boolean"})},
    "additionalProperties": False,
}


OLLAMA_EMBED_REQUEST = {
    "type": "object", "required": ["model", "input"],
    "properties": {
        "model": _NAME,
        "input": {"anyOf": [_STRING, {"type": "array", "minItems": 1, "maxItems": 2048, "items": _STRING}],
                  "x-error": "must be a string or a non-empty list of at most 2048 strings"},
        "truncate": _nullable({"type": "boolean"}),  # either way an input longer than the context is refused
        "dimensions": _number(1, 1 << 16, integer=True),
        "keep_alive": _KEEP_ALIVE,
        "options": _nullable({"type": "object", "properties": {}, "additionalProperties": False}),
    },
    "additionalProperties": False,
}

OLLAMA_EMBEDDINGS_REQUEST = {  # the older single-text endpoint
    "type": "object", "required": ["model", "prompt"],
    "properties": {"model": _NAME, "prompt": _STRING, "keep_alive": _KEEP_ALIVE,
                   "options": _nullable({"type": "object", "properties": {}, "additionalProperties": False})},
    "additionalProperties": False,
}

EMBEDDING_REQUEST = {
    "type": "object", "required": ["input"],
    "properties": {
        "model": _NAME,
        "input": {"anyOf": [_STRING, {"type": "array", "minItems": 1, "maxItems": 2048, "items": _STRING}],
                  "x-error": "must be a string or a non-empty list of at most 2048 strings (token arrays are "
                             "not supported)"},
        "dimensions": _number(1, 1 << 16, integer=True),
        "encoding_format": {"enum": ["float", "base64", None], "x-error": "must be 'float' or 'base64'"},
        "task": {"anyOf": [{"type": "string", "maxLength": 64}, {"type": "null"}]},
        "user": _NAME,
    },
    "additionalProperties": False,
}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def _where(path: str) -> str:
    return path or "request body"


def validate(value: Any, schema: dict, path: str = "") -> None:
    """Raise RequestError naming the first place where `value` breaks `schema`."""
    try:
        _check(value, schema, path)
    except _Invalid as e:
        raise RequestError(f"{_where(e.path)}: {e.message}", param=e.path or None) from None


class _Invalid(Exception):
    def __init__(self, path: str, message: str):
        self.path, self.message = path, message


def _fail(schema: dict, path: str, message: str):
    raise _Invalid(path, schema.get("x-error", message))


def _check(value: Any, schema: dict, path: str) -> None:
    if "anyOf" in schema:
        inner = None
        for option in schema["anyOf"]:
            try:
                _check(value, option, path)
                return
            except _Invalid as e:
                if inner is None or option != _NULL:  # "must be of type null" explains nothing
                    inner = e
        if "x-error" in schema:
            _fail(schema, path, "")
        raise inner
    if "enum" in schema and not any(value == e and type(value) is type(e) for e in schema["enum"]):
        shown = ", ".join(repr(e) for e in schema["enum"])
        _fail(schema, path, f"must be one of {shown}")
    kind = schema.get("type")
    if kind is not None and not _TYPES[kind](value):
        _fail(schema, path, f"must be of type {kind}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            _fail(schema, path, f"must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            _fail(schema, path, f"must be <= {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            _fail(schema, path, f"must be > {schema['exclusiveMinimum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            _fail(schema, path, f"must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            _fail(schema, path, f"must have at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            _fail(schema, path, f"must match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            _fail(schema, path, f"must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            _fail(schema, path, f"must have at most {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                _check(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", ()):
            if key not in value:
                _fail({}, _join(path, key), "is required")
        for key, item in value.items():
            if key in props:
                _check(item, props[key], _join(path, key))
            elif schema.get("additionalProperties", True) is False:
                _fail({}, _join(path, key), "is not a recognised field")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def nesting_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iterative: safe on hostile input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type"],
                             "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                            "param": {"type": ["string", "null"]},
                                            "code": {"type": ["string", "null"]}}}},
}


def _error_responses(*codes: int) -> dict:
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {str(code): {"description": "error", **ref} for code in codes}


def _generation_op(summary: str, request_ref: str, streamed: str = "text/event-stream") -> dict:
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request_ref}"}}}},
        "responses": {"200": {"description": f"the completion (JSON), or {streamed} when streaming",
                              "content": {"application/json": {"schema": {"type": "object"}},
                                          streamed: {"schema": {"type": "string"}}}},
                      **_error_responses(400, 401, 408, 413, 415, 503, 504)},
    }}


def _get_op(summary: str) -> dict:
    return {"get": {"summary": summary,
                    "responses": {"200": {"description": "ok",
                                          "content": {"application/json": {"schema": {"type": "object"}}}},
                                  **_error_responses(401)}}}


def openapi_document(version: str) -> dict:
    """The OpenAPI 3.1 description served at /openapi.json."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "gemma-edge", "version": version,
                 "description": "OpenAI- and Ollama-compatible chat and text completions on a local Gemma model "
                                "(Ollama endpoints answer errors as {\"error\": message})."},
        "paths": {
            "/v1/chat/completions": _generation_op("Chat completion", "ChatCompletionRequest"),
            "/v1/completions": _generation_op("Text completion (no chat template)", "CompletionRequest"),
            "/v1/embeddings": _generation_op("Embeddings (an embedding model such as EmbeddingGemma)",
                                             "EmbeddingRequest"),
            "/v1/models": _get_op("The loaded model"),
            "/health": _get_op("Liveness and queue length"),
            "/api/chat": _generation_op("Ollama chat (streamed unless stream is false)", "OllamaChatRequest",
                                        "application/x-ndjson"),
            "/api/generate": _generation_op("Ollama generate (streamed unless stream is false)",
                                            "OllamaGenerateRequest", "application/x-ndjson"),
            "/api/tags": _get_op("Ollama: the loaded model"),
            "/api/ps": _get_op("Ollama: the running model"),
            "/api/version": _get_op("Ollama: the server's version"),
            "/api/embed": _generation_op("Ollama embeddings (an embedding model such as EmbeddingGemma)",
                                         "OllamaEmbedRequest"),
            "/api/embeddings": _generation_op("Ollama's older single-text embeddings", "OllamaEmbeddingsRequest"),
        },
        "components": {
            "schemas": {"ChatCompletionRequest": CHAT_REQUEST, "CompletionRequest": COMPLETION_REQUEST,
                        "OllamaChatRequest": OLLAMA_CHAT_REQUEST, "OllamaGenerateRequest": OLLAMA_GENERATE_REQUEST,
                        "EmbeddingRequest": EMBEDDING_REQUEST, "OllamaEmbedRequest": OLLAMA_EMBED_REQUEST,
                        "OllamaEmbeddingsRequest": OLLAMA_EMBEDDINGS_REQUEST, "Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
