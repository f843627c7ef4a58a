"""OpenAI requests to gemma-edge generation arguments, and gemma-edge results back to OpenAI JSON.

Pure functions: no model, no I/O. Requests reaching here already match `schema.CHAT_REQUEST` or
`schema.COMPLETION_REQUEST`; what a schema cannot say (role-dependent rules, tool-call arguments
that must be JSON objects, the sources media may come from) is checked here. Media parts come out as
gemma-edge parts still to be decoded (`server.media` does that off the event loop), and JSON output as
a `JsonOutput` still to be turned into a grammar (`server.grammar`, through llama.cpp).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from gemma_edge.server.errors import RequestError

# Content-part types the server does not take, and what to send instead. (gemma-edge's own "image" and
# "audio" parts may name local files: a client must not make the server read them.)
REFUSED_PARTS = {"image": "send images as image_url parts with a data: URL",
                 "audio": "send audio as input_audio parts",
                 "video_url": "video input is not supported yet", "video": "video input is not supported yet",
                 "file": "file input is not supported yet"}
IMAGE_URL_SCHEMES = ("data:", "http://", "https://")
AUDIO_FORMATS = ("wav", "mp3", "flac")
# reasoning_effort values that turn thinking off; every other value turns it on
NO_THINKING_EFFORTS = ("none", "minimal")
# JSON Schema keywords whose numbers become grammar repetitions: bounded so a request cannot make
# llama.cpp build a huge grammar
REPETITION_KEYWORDS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")
MAX_REPETITION = 256
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed")


@dataclass
class GenerationRequest:
    """What one HTTP request asks the model for. `model_args` go to `Model.stream(prompt, **model_args)`."""
    prompt: str | list[dict]
    model_args: dict
    stream: bool = False
    include_usage: bool = False
    stops: list[str] = field(default_factory=list)
    n: int = 1                    # choices, generated one after another
    max_calls: int | None = None  # generation ends after this many tool calls


@dataclass(frozen=True)
class JsonOutput:
    """Output forced to JSON (`model_args["grammar"]` as mapped): any JSON object (`schema` None) or JSON
    matching `schema`. The server edge turns it into a llama.cpp grammar before the request is queued,
    refusing a schema that cannot become one on the field `param`."""
    schema: dict | None
    param: str


@dataclass
class Outcome:
    """A finished (or stopped) generation: what was emitted, why it ended, what it cost."""
    content: str
    thinking: str | None
    tool_calls: list[dict]
    finish_reason: str
    usage: dict
    timings: dict = field(default_factory=dict)
    logprobs: list[dict] | None = None  # per generated token, when asked (DecodeRun.logprob_records)


# -- requests -----------------------------------------------------------------------------------
def chat_request(body: dict, *, default_max_tokens: int, max_tokens_limit: int | None,
                 call_grammar: Callable[[list[dict], bool], str] | None = None) -> GenerationRequest:
    """`call_grammar(tools, parallel)`: the grammar forcing a call to one of `tools` in the model's syntax
    (for tool_choice "required" or a named function)."""
    choice = body.get("tool_choice")
    tools = tools_from_openai(body.get("tools")) if choice != "none" else None
    parallel = body.get("parallel_tool_calls") is not False
    forced = _forced_tools(choice, tools)
    if forced is None:
        structure = structured_output(tools, thinking_flag(body), json_output(body.get("response_format")),
                                      param="response_format")
    else:
        structure = _forced_calls(body, tools, forced, parallel, call_grammar)
    args: dict[str, Any] = {
        **structure,
        "max_tokens": capped_max_tokens(body.get("max_completion_tokens") or body.get("max_tokens"),
                                        default_max_tokens, max_tokens_limit),
        **sampling_args(body),
    }
    if body.get("thinking_budget") is not None:
        args["thinking_budget"] = body["thinking_budget"]
    if body.get("logprobs"):
        args["logprobs"] = body.get("top_logprobs") or 0
    elif body.get("top_logprobs"):
        raise RequestError("top_logprobs: needs logprobs: true", param="top_logprobs")
    extra = {k: v for k, v in (body.get("chat_template_kwargs") or {}).items() if k != "enable_thinking"}
    if extra:
        args["template_vars"] = extra
    return GenerationRequest(messages_from_openai(body["messages"]), args, **_delivery(body),
                             max_calls=None if parallel else 1)


def _forced_tools(choice: str | dict | None, tools: list[dict] | None) -> list[dict] | None:
    """The tools a call is forced to (tool_choice "required": any of them; a named function: that one)."""
    if choice in (None, "auto", "none"):
        return None
    if not tools:
        raise RequestError("tool_choice: forcing a tool call needs tools", param="tool_choice")
    if choice == "required":
        return tools
    name = choice["function"]["name"]
    named = [t for t in tools if t["function"]["name"] == name]
    if not named:
        raise RequestError(f"tool_choice.function.name: {name!r} is not among the tools", param="tool_choice")
    return named


def _forced_calls(body: dict, tools: list[dict], forced: list[dict], parallel: bool,
                  call_grammar: Callable[[list[dict], bool], str] | None) -> dict:
    if body.get("response_format") and body["response_format"].get("type") != "text":
        raise RequestError("response_format cannot be combined with a tool_choice that forces a call",
                           param="response_format")
    if thinking_flag(body):
        raise RequestError("a tool_choice that forces a call cannot be combined with thinking (the grammar "
                           "covers the whole output); turn thinking off", param="tool_choice")
    if call_grammar is None:
        raise RequestError("tool_choice: this server cannot force tool calls", param="tool_choice")
    from gemma_edge.parsing.call_grammar import SchemaError

    try:
        grammar = call_grammar(forced, parallel)
    except SchemaError as e:
        raise RequestError(f"tool_choice: cannot force this call ({e})", param="tool_choice") from None
    return {"tools": tools, "enable_thinking": False, "grammar": grammar}


def structured_output(tools: list | None, thinking: bool | None, grammar: str | JsonOutput | None, *,
                      param: str) -> dict:
    """`tools`, `enable_thinking` and `grammar` for Model.stream: a grammar covers the whole output, so it
    cannot be combined with tools or thinking (thinking left to the model's default is turned off)."""
    if grammar is not None:
        if tools:
            raise RequestError(f"{param} cannot be combined with tools (the grammar would forbid tool calls)",
                               param=param)
        if thinking:
            raise RequestError(f"{param} cannot be combined with thinking (the grammar covers the whole "
                               "output); turn thinking off", param=param)
        thinking = False
    return {"tools": tools, "enable_thinking": thinking, "grammar": grammar}


def completion_request(body: dict, *, default_max_tokens: int, max_tokens_limit: int | None) -> GenerationRequest:
    prompt = body["prompt"] if isinstance(body["prompt"], str) else body["prompt"][0]
    if not prompt:
        raise RequestError("prompt: must not be empty", param="prompt")
    args = {"raw": True, "max_tokens": capped_max_tokens(body.get("max_tokens"), default_max_tokens, max_tokens_limit),
            **sampling_args(body)}
    if body.get("logprobs") is not None:
        args["logprobs"] = body["logprobs"]
    return GenerationRequest(prompt, args, **_delivery(body))


def _delivery(body: dict) -> dict:
    stop = body.get("stop")
    return {"stream": bool(body.get("stream")), "n": body.get("n") or 1,
            "include_usage": bool((body.get("stream_options") or {}).get("include_usage")),
            "stops": [stop] if isinstance(stop, str) else list(stop or [])}


def capped_max_tokens(requested: int | None, default: int, limit: int | None) -> int:
    value = requested or default
    return min(value, limit) if limit else value


def sampling_args(body: dict) -> dict:
    """OpenAI sampling fields as gemma-edge sampling overrides (None: the model's default), and the
    request's speculative decoding mode (gemma-edge's own field; the output is the same either way)."""
    out = {k: body[k] for k in SAMPLING_KEYS if body.get(k) is not None}
    if "seed" in out:
        out["seed"] = out["seed"] % (1 << 32)  # llama.cpp seeds are 32-bit; OpenAI's are 64-bit
    if body.get("speculative") is not None:
        out["speculative"] = body["speculative"]
    return out


def thinking_flag(body: dict) -> bool | None:
    """`chat_template_kwargs.enable_thinking` wins over `reasoning_effort`; neither: the model's default."""
    kwargs = body.get("chat_template_kwargs") or {}
    if "enable_thinking" in kwargs:
        return bool(kwargs["enable_thinking"])
    effort = body.get("reasoning_effort")
    if effort is None:
        return None
    return effort not in NO_THINKING_EFFORTS


def messages_from_openai(messages: list[dict]) -> list[dict]:
    return [_message(m, f"messages[{i}]") for i, m in enumerate(messages)]


def _message(message: dict, where: str) -> dict:
    role = message["role"]
    out: dict[str, Any] = {"role": role}
    content = message.get("content")
    calls = message.get("tool_calls") or []
    if calls and role != "assistant":
        raise RequestError(f"{where}.tool_calls: only assistant messages carry tool calls", param=f"{where}.tool_calls")
    if content is None and role != "assistant":
        raise RequestError(f"{where}.content: a {role} message needs content", param=f"{where}.content")
    out["content"] = _content(content, f"{where}.content") if content is not None else ""
    if calls:
        out["tool_calls"] = [_incoming_call(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(calls)]
    for key in ("name", "tool_call_id", "reasoning_content"):
        if message.get(key) is not None:
            out[key] = message[key]
    return out


def _content(content: str | list, where: str) -> str | list[dict]:
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        kind = part["type"]
        if kind in REFUSED_PARTS:
            raise RequestError(f"{where}[{j}]: {kind} parts are not accepted ({REFUSED_PARTS[kind]})",
                               param=f"{where}[{j}]", code="unsupported_content")
        if kind not in CONTENT_PARTS:
            raise RequestError(f"{where}[{j}].type: unknown content part type {kind!r} (expected one of "
                               f"{', '.join(CONTENT_PARTS)})", param=f"{where}[{j}].type")
        parts.append(CONTENT_PARTS[kind](part, f"{where}[{j}]"))
    return parts


def _text_part(part: dict, where: str) -> dict:
    if not isinstance(part.get("text"), str):
        raise RequestError(f"{where}.text: a text part needs a string 'text'", param=f"{where}.text")
    return {"type": "text", "text": part["text"]}


def _image_url_part(part: dict, where: str) -> dict:
    """OpenAI's {"image_url": {"url", "detail"?}} (or the bare URL string some clients send)."""
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise RequestError(f"{where}.image_url.url: an image_url part needs a URL string", param=f"{where}.image_url")
    if not url.lower().startswith(IMAGE_URL_SCHEMES):
        raise RequestError(f"{where}.image_url.url: only data: URLs (and http(s) when the server allows remote "
                           "images) are accepted; the server never reads its own files for a client",
                           param=f"{where}.image_url", code="invalid_media")
    return {"type": "image", "url": url}


def _input_audio_part(part: dict, where: str) -> dict:
    audio = part.get("input_audio")
    if not (isinstance(audio, dict) and isinstance(audio.get("data"), str) and audio.get("format") in AUDIO_FORMATS):
        raise RequestError(f"{where}.input_audio: needs 'data' (base64) and 'format' (one of "
                           f"{', '.join(AUDIO_FORMATS)})", param=f"{where}.input_audio", code="invalid_media")
    return {"type": "input_audio", "input_audio": {"data": audio["data"], "format": audio["format"]}}


CONTENT_PARTS = {"text": _text_part, "image_url": _image_url_part, "input_audio": _input_audio_part}


def _incoming_call(call: dict, where: str) -> dict:
    """An OpenAI tool call (arguments as a JSON string) as gemma-edge's (arguments as an object)."""
    function = call["function"]
    try:
        arguments = json.loads(function["arguments"] or "{}")
    except (ValueError, RecursionError):
        arguments = None
    if not isinstance(arguments, dict):
        raise RequestError(f"{where}.function.arguments: must be a JSON object encoded as a string",
                           param=f"{where}.function.arguments")
    out = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
    if call.get("id"):
        out["id"] = call["id"]
    return out


def tools_from_openai(tools: list[dict] | None) -> list[dict] | None:
    if not tools:
        return None
    seen = set()
    out = []
    for i, tool in enumerate(tools):
        function = dict(tool["function"])
        where = f"tools[{i}].function"
        if function["name"] in seen:
            raise RequestError(f"{where}.name: {function['name']!r} is declared twice", param=f"{where}.name")
        seen.add(function["name"])
        if "parameters" in function:
            check_parameters_schema(function["parameters"], f"{where}.parameters")
        function.pop("strict", None)
        out.append({"type": "function", "function": function})
    return out


JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


def check_parameters_schema(schema: Any, where: str) -> None:
    """A tool's `parameters` must be a JSON Schema for an object: the parts the prompt renders
    (type, properties, items, required, enum, description) must have the right shapes."""
    if not isinstance(schema, dict):
        raise RequestError(f"{where}: must be a JSON Schema object", param=where)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not types or not all(t in JSON_TYPES for t in types):
            raise RequestError(f"{where}.type: must be one of {', '.join(JSON_TYPES)} (or a list of them)",
                               param=f"{where}.type")
    if "description" in schema and not isinstance(schema["description"], str):
        raise RequestError(f"{where}.description: must be a string", param=f"{where}.description")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise RequestError(f"{where}.enum: must be a list", param=f"{where}.enum")
    if "required" in schema and not (isinstance(schema["required"], list)
                                     and all(isinstance(r, str) for r in schema["required"])):
        raise RequestError(f"{where}.required: must be a list of property names", param=f"{where}.required")
    if "properties" in schema:
        if not isinstance(schema["properties"], dict):
            raise RequestError(f"{where}.properties: must be an object", param=f"{where}.properties")
        for name, sub in schema["properties"].items():
            check_parameters_schema(sub, f"{where}.properties.{name}")
    if "items" in schema:
        check_parameters_schema(schema["items"], f"{where}.items")


def json_output(response_format: dict | None, where: str = "response_format.json_schema.schema") -> JsonOutput | None:
    """The JSON output `response_format` asks for (None: free text)."""
    if not response_format or response_format["type"] == "text":
        return None
    if response_format["type"] == "json_object":
        return JsonOutput(None, where)
    schema = response_format["json_schema"].get("schema") or {"type": "object"}
    _check_repetitions(schema, where)
    return JsonOutput(schema, where)


def _check_repetitions(schema: Any, where: str) -> None:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in REPETITION_KEYWORDS:
                value = node.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_REPETITION:
                    raise RequestError(f"{where}: {key} above {MAX_REPETITION} is not supported", param=where)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


# -- responses ----------------------------------------------------------------------------------
def usage_json(usage: dict) -> dict:
    prompt = usage.get("prompt_tokens", 0)
    completion = usage.get("completion_tokens", 0)
    out = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": prompt - usage.get("prompt_tokens_evaluated", prompt)}}
    if "drafted_tokens" in usage:  # speculative decoding: OpenAI's names for predicted-output counts
        accepted = usage["accepted_tokens"]
        out["completion_tokens_details"] = {"accepted_prediction_tokens": accepted,
                                            "rejected_prediction_tokens": usage["drafted_tokens"] - accepted}
    return out


def tool_call_json(call: dict, call_id: str) -> dict:
    """A gemma-edge tool call (arguments as an object) in OpenAI's shape (arguments as a JSON string)."""
    function = call["function"]
    return {"id": call.get("id") or call_id, "type": "function",
            "function": {"name": function["name"],
                         "arguments": json.dumps(function.get("arguments") or {}, ensure_ascii=False)}}


def choice_requests(wanted: GenerationRequest) -> list[GenerationRequest]:
    """One request per choice; with a seed, choice i uses seed + i (the same seed would repeat choice 0)."""
    out = []
    for i in range(wanted.n):
        args = dict(wanted.model_args)
        if i and args.get("seed") is not None:
            args["seed"] = (args["seed"] + i) % (1 << 32)
        out.append(replace(wanted, model_args=args, n=1))
    return out


def total_usage(outcomes: list[Outcome]) -> dict:
    """Several choices for one prompt: the prompt counted once, the completions added up."""
    first = outcomes[0].usage
    return {**first, "completion_tokens": sum(o.usage.get("completion_tokens", 0) for o in outcomes)}


def chat_logprobs_json(outcome: Outcome) -> dict | None:
    return None if outcome.logprobs is None else {"content": outcome.logprobs, "refusal": None}


def completion_logprobs_json(outcome: Outcome, prompt: str) -> dict | None:
    """The legacy completions shape; text offsets count from the start of the prompt."""
    if outcome.logprobs is None:
        return None
    offsets, offset = [], len(prompt)
    for record in outcome.logprobs:
        offsets.append(offset)
        offset += len(record["token"])
    return {"tokens": [r["token"] for r in outcome.logprobs],
            "token_logprobs": [r["logprob"] for r in outcome.logprobs],
            "top_logprobs": [{t["token"]: t["logprob"] for t in r["top_logprobs"]} for r in outcome.logprobs],
            "text_offset": offsets}


def chat_message_json(outcome: Outcome, call_ids: list[str]) -> dict:
    message: dict[str, Any] = {"role": "assistant",
                               "content": outcome.content if outcome.content or not outcome.tool_calls else None}
    if outcome.thinking:
        message["reasoning_content"] = outcome.thinking
    if outcome.tool_calls:
        message["tool_calls"] = [tool_call_json(c, i) for c, i in zip(outcome.tool_calls, call_ids)]
    return message


def chat_completion_json(outcomes: list[Outcome], *, completion_id: str, created: int, model: str,
                         call_ids: list[list[str]]) -> dict:
    choices = [{"index": i, "message": chat_message_json(outcome, ids), "logprobs": chat_logprobs_json(outcome),
                "finish_reason": outcome.finish_reason}
               for i, (outcome, ids) in enumerate(zip(outcomes, call_ids))]
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage_json(total_usage(outcomes))}


def chat_chunk_json(delta: dict, *, completion_id: str, created: int, model: str,
                    finish_reason: str | None = None, index: int = 0, logprobs: dict | None = None) -> dict:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]}


def chat_delta(event: dict, *, tool_index: int, call_id: str) -> dict:
    """The `delta` of a chat chunk for one parser event."""
    kind = event["type"]
    if kind == "thinking":
        return {"reasoning_content": event["text"]}
    if kind == "tool_call":
        return {"tool_calls": [{"index": tool_index, **tool_call_json(event["tool_call"], call_id)}]}
    return {"content": event["text"]}


def completion_json(outcomes: list[Outcome], *, prompt: str, completion_id: str, created: int, model: str) -> dict:
    choices = [{"index": i, "text": outcome.content, "logprobs": completion_logprobs_json(outcome, prompt),
                "finish_reason": outcome.finish_reason} for i, outcome in enumerate(outcomes)]
    return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
            "choices": choices, "usage": usage_json(total_usage(outcomes))}


def completion_chunk_json(text: str, *, completion_id: str, created: int, model: str,
                          finish_reason: str | None = None, index: int = 0, logprobs: dict | None = None) -> dict:
    return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]}


def usage_chunk_json(usage: dict, *, completion_id: str, created: int, model: str, chat: bool) -> dict:
    return {"id": completion_id, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created, "model": model, "choices": [], "usage": usage_json(usage)}


@dataclass
class EmbeddingRequest:
    texts: list[str]
    task: str | None  # None: the model's default task
    dimensions: int | None
    base64: bool


def embedding_request(body: dict) -> EmbeddingRequest:
    """A validated /v1/embeddings body → what Model.embed takes (`task` is gemma-edge's extension)."""
    texts = body["input"]
    return EmbeddingRequest(texts=[texts] if isinstance(texts, str) else list(texts),
                            task=body.get("task") or None, dimensions=body.get("dimensions"),
                            base64=body.get("encoding_format") == "base64")


def embedding_json(vectors, prompt_tokens: int, *, base64: bool, model: str) -> dict:
    """OpenAI's embeddings response; base64 is the little-endian float32 bytes of each vector."""
    import base64 as b64

    import numpy as np

    def encoded(row):
        return b64.b64encode(np.asarray(row, dtype="<f4").tobytes()).decode("ascii") if base64 else \
            [float(v) for v in row]

    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encoded(row)} for i, row in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
