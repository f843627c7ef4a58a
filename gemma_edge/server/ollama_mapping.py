"""Ollama's API (`/api/chat`, `/api/generate`, …) to gemma-edge generation arguments, and results
back to Ollama's JSON. Pure functions: no model, no I/O, like `mapping` (whose checks and helpers
these share). Requests reaching here already match `schema.OLLAMA_*_REQUEST`.

Differences from OpenAI's shapes: tool-call arguments are objects, images are bare base64 strings on
a message, sampling settings sit in `options`, durations are integer nanoseconds, and a reply is a
stream of JSON lines (NDJSON) unless `stream` is false.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from gemma_edge.server import mapping
from gemma_edge.server.errors import RequestError
from gemma_edge.server.mapping import GenerationRequest, Outcome

NANOSECONDS = 1_000_000_000
# Ollama's done_reason for each gemma-edge finish reason (Ollama says "stop" after tool calls too)
DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop"}


def created_at() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


# -- requests -----------------------------------------------------------------------------------
def chat_request(body: dict, *, n_ctx: int, default_max_tokens: int,
                 max_tokens_limit: int | None) -> GenerationRequest:
    tools = mapping.tools_from_openai(body.get("tools"))
    messages = [_message(m, f"messages[{i}]") for i, m in enumerate(body.get("messages") or [])]
    args = _generation_args(body, tools, n_ctx=n_ctx, default_max_tokens=default_max_tokens,
                            max_tokens_limit=max_tokens_limit)
    return GenerationRequest(messages, args, **_delivery(body))


def generate_request(body: dict, *, n_ctx: int, default_max_tokens: int,
                     max_tokens_limit: int | None) -> GenerationRequest:
    """A prompt in the model's turn format (with `system`), or continued as-is with `raw`."""
    args = _generation_args(body, None, n_ctx=n_ctx, default_max_tokens=default_max_tokens,
                            max_tokens_limit=max_tokens_limit)
    prompt = body.get("prompt") or ""
    if body.get("raw"):
        if body.get("images"):
            raise RequestError("images cannot be combined with raw (the turn format places them)", param="images")
        if body.get("system"):
            raise RequestError("system cannot be combined with raw", param="system")
        if body.get("think"):
            raise RequestError("think cannot be combined with raw", param="think")
        return GenerationRequest(prompt, {**args, "raw": True, "enable_thinking": None}, **_delivery(body))
    messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
    messages.append({"role": "user", "content": _content(prompt, body.get("images"), "images")})
    return GenerationRequest(messages, args, **_delivery(body))


def check_capabilities(body: dict, turn_format, model_name: str) -> None:
    """Like Ollama, refuse `think` or `tools` for a model whose turn format has no such thing."""
    for field, supported, what in (("think", turn_format.supports_thinking, "thinking"),
                                   ("tools", turn_format.supports_tools, "tools")):
        if body.get(field) and not supported:
            raise RequestError(f"{field}: {model_name} ({turn_format.name} format) does not support {what}",
                               param=field)


def is_load_request(body: dict, chat: bool) -> bool:
    """Ollama loads the model (and generates nothing) for an empty prompt or message list."""
    return not (body.get("messages") if chat else body.get("prompt"))


def _generation_args(body: dict, tools: list | None, *, n_ctx: int, default_max_tokens: int,
                     max_tokens_limit: int | None) -> dict:
    options = body.get("options") or {}
    if options.get("num_ctx") is not None and options["num_ctx"] > n_ctx:
        raise RequestError(f"options.num_ctx: {options['num_ctx']} is larger than the server's context ({n_ctx} "
                           "tokens); restart serve with a larger --ctx-size", param="options.num_ctx")
    think = body.get("think")
    args = {**mapping.structured_output(tools, None if think is None else bool(think), _grammar(body.get("format")),
                                        param="format"),
            "max_tokens": _max_tokens(options.get("num_predict"), n_ctx=n_ctx, default=default_max_tokens,
                                      limit=max_tokens_limit),
            **mapping.sampling_args(options)}
    if body.get("logprobs") or body.get("top_logprobs"):
        args["logprobs"] = body.get("top_logprobs") or 0
    return args


def _grammar(format: str | dict | None) -> mapping.JsonOutput | None:
    if not format:
        return None
    if format == "json":
        return mapping.json_output({"type": "json_object"}, where="format")
    return mapping.json_output({"type": "json_schema", "json_schema": {"schema": format}}, where="format")


def _max_tokens(num_predict: int | None, *, n_ctx: int, default: int, limit: int | None) -> int:
    """`num_predict`: absent uses the server's default; -1 (no limit) and -2 (fill the context) generate
    until the context is full (or the server's --max-tokens-limit)."""
    if num_predict is not None and num_predict < 0:
        num_predict = n_ctx
    return mapping.capped_max_tokens(num_predict or None, default, limit)


def _delivery(body: dict) -> dict:
    stop = (body.get("options") or {}).get("stop")
    return {"stream": body.get("stream") is not False, "stops": list(stop or [])}


def _message(message: dict, where: str) -> dict:
    role = message["role"]
    calls = message.get("tool_calls") or []
    if calls and role != "assistant":
        raise RequestError(f"{where}.tool_calls: only assistant messages carry tool calls", param=f"{where}.tool_calls")
    out: dict[str, Any] = {"role": role, "content": _content(message.get("content") or "", message.get("images"),
                                                             f"{where}.images")}
    if calls:
        out["tool_calls"] = [_incoming_call(call) for call in calls]
    if message.get("thinking"):
        out["reasoning_content"] = message["thinking"]
    if message.get("tool_name"):
        out["name"] = message["tool_name"]
    if message.get("tool_call_id"):
        out["tool_call_id"] = message["tool_call_id"]
    return out


def _content(text: str, images: list[str] | None, where: str) -> str | list[dict]:
    """Text, or image parts (as data: URLs, decoded later by `server.media`) followed by the text."""
    if not images:
        return text
    parts: list[dict] = [{"type": "image", "url": "data:application/octet-stream;base64," + "".join(image.split())}
                         for image in images]
    if any(len(p["url"]) == len("data:application/octet-stream;base64,") for p in parts):
        raise RequestError(f"{where}: an image must not be empty", param=where, code="invalid_media")
    return [*parts, {"type": "text", "text": text}]


def _incoming_call(call: dict) -> dict:
    out = {"type": "function", "function": {"name": call["function"]["name"],
                                            "arguments": call["function"].get("arguments") or {}}}
    if call.get("id"):
        out["id"] = call["id"]
    return out


# -- responses ----------------------------------------------------------------------------------
def tool_call_json(call: dict, index: int) -> dict:
    function = call["function"]
    return {"function": {"index": index, "name": function["name"], "arguments": function.get("arguments") or {}}}


def chat_chunk_json(model: str, event: dict, *, tool_index: int) -> dict:
    """One streamed line of /api/chat for a parser event."""
    message: dict[str, Any] = {"role": "assistant", "content": ""}
    kind = event["type"]
    if kind == "thinking":
        message["thinking"] = event["text"]
    elif kind == "tool_call":
        message["tool_calls"] = [tool_call_json(event["tool_call"], tool_index)]
    else:
        message["content"] = event["text"]
    return {"model": model, "created_at": created_at(), "message": message, "done": False}


def generate_chunk_json(model: str, event: dict) -> dict | None:
    """One streamed line of /api/generate for a parser event (None: nothing to send, e.g. a tool call)."""
    if event["type"] == "thinking":
        return {"model": model, "created_at": created_at(), "response": "", "thinking": event["text"], "done": False}
    if event["type"] == "content":
        return {"model": model, "created_at": created_at(), "response": event["text"], "done": False}
    return None


def chat_done_json(model: str, outcome: Outcome, total_s: float, *, whole: bool) -> dict:
    """The last line of /api/chat (`whole`: the only one, carrying the whole message)."""
    message: dict[str, Any] = {"role": "assistant", "content": outcome.content if whole else ""}
    if whole and outcome.thinking:
        message["thinking"] = outcome.thinking
    if whole and outcome.tool_calls:
        message["tool_calls"] = [tool_call_json(c, i) for i, c in enumerate(outcome.tool_calls)]
    return {"model": model, "created_at": created_at(), "message": message, **_done(outcome, total_s, whole)}


def generate_done_json(model: str, outcome: Outcome, total_s: float, *, whole: bool) -> dict:
    out: dict[str, Any] = {"model": model, "created_at": created_at(), "response": outcome.content if whole else ""}
    if whole and outcome.thinking:
        out["thinking"] = outcome.thinking
    return {**out, **_done(outcome, total_s, whole)}


def _done(outcome: Outcome, total_s: float, whole: bool) -> dict:
    usage, timings = outcome.usage, outcome.timings
    out = {"done": True, "done_reason": DONE_REASONS.get(outcome.finish_reason, outcome.finish_reason),
           "total_duration": _ns(total_s), "load_duration": 0,
           "prompt_eval_count": usage.get("prompt_tokens", 0),
           "prompt_eval_duration": _ns(timings.get("prefill_s") or 0),
           "eval_count": usage.get("completion_tokens", 0),
           "eval_duration": _ns(timings.get("decode_s") or 0)}
    if outcome.logprobs is not None:
        out["logprobs"] = [logprob_json(record) for record in outcome.logprobs]
    return out


def embed_json(model: str, vectors, prompt_tokens: int, total_s: float) -> dict:
    """Ollama's /api/embed response."""
    return {"model": model, "embeddings": [[float(v) for v in row] for row in vectors],
            "total_duration": _ns(total_s), "load_duration": 0, "prompt_eval_count": prompt_tokens}


def logprob_json(record: dict) -> dict:
    return {"token": record["token"], "logprob": record["logprob"], "bytes": record["bytes"],
            "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": t["bytes"]}
                             for t in record["top_logprobs"]]}


def load_json(model: str, chat: bool) -> dict:
    """The answer to an empty request: the model is loaded (it always is here)."""
    body = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    return {"model": model, "created_at": created_at(), **body, "done": True, "done_reason": "load"}


def _ns(seconds: float) -> int:
    return int(round(seconds * NANOSECONDS))


# -- model descriptions -------------------------------------------------------------------------
def model_json(name: str, facts, digest: str) -> dict:
    """The loaded model as /api/tags and /api/ps list it."""
    modified = datetime.fromtimestamp(facts.path.stat().st_mtime, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"name": name, "model": name, "modified_at": modified, "size": facts.file_size, "digest": digest,
            "details": details_json(facts)}


def details_json(facts) -> dict:
    return {"parent_model": "", "format": "gguf", "family": facts.architecture, "families": [facts.architecture],
            "parameter_size": facts.size_label, "quantization_level": facts.quantization}


OLLAMA_CAPABILITIES = (("tools", "tools"), ("thinking", "thinking"), ("image", "vision"), ("audio", "audio"))


def capabilities(caps: dict) -> list[str]:
    """Ollama's capability names for `webpage.capabilities(model)`."""
    return ["completion", *(name for key, name in OLLAMA_CAPABILITIES if caps.get(key))]
