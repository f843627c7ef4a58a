"""OpenAI <-> gemma-edge mapping as pure functions. Oracles: the `openai` package's own response
models (pydantic, strict about required fields and types) and OpenAI's written contract (tool-call
arguments are JSON strings; `reasoning_effort` none/minimal means no reasoning)."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gemma_edge.server import mapping, schema
from gemma_edge.server.errors import RequestError
from tests.server.strategies import from_schema

LIMITS = dict(default_max_tokens=512, max_tokens_limit=None)

json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=8)


def chat(body: dict) -> mapping.GenerationRequest:
    schema.validate(body, schema.CHAT_REQUEST)
    return mapping.chat_request(body, **LIMITS)


@given(arguments=st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_incoming_tool_call_arguments_are_decoded_and_outgoing_encoded(arguments):
    body = {"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": json.dumps(arguments)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}
    message = chat(body).prompt[1]
    assert message["tool_calls"][0]["function"]["arguments"] == arguments
    assert message["tool_calls"][0]["id"] == "call_1"
    out = mapping.tool_call_json(message["tool_calls"][0], "call_other")
    assert json.loads(out["function"]["arguments"]) == arguments
    assert out["id"] == "call_1" and out["type"] == "function"


@pytest.mark.parametrize("arguments", ["[1, 2]", "not json", '"a string"', "3"])
def test_tool_call_arguments_must_be_a_json_object(arguments):
    body = {"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]}]}
    with pytest.raises(RequestError) as e:
        chat(body)
    assert e.value.status == 400 and e.value.param == "messages[0].tool_calls[0].function.arguments"


@pytest.mark.parametrize("kind", ["file", "video_url"])
def test_file_and_video_parts_are_refused_as_not_supported_yet(kind):
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                                      {"type": kind, kind: {"url": "data:,"}}]}]}
    with pytest.raises(RequestError) as e:
        chat(body)
    assert "not supported yet" in e.value.message and e.value.param == "messages[0].content[1]"


def test_text_parts_pass_through():
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert chat(body).prompt == [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}]


@pytest.mark.parametrize("body, expected", [
    ({}, None),
    ({"reasoning_effort": "none"}, False),
    ({"reasoning_effort": "minimal"}, False),
    ({"reasoning_effort": "low"}, True),
    ({"reasoning_effort": "high"}, True),
    ({"chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "high"}, False),
    ({"chat_template_kwargs": {"enable_thinking": True}}, True),
])
def test_thinking_control(body, expected):
    request = chat({"messages": [{"role": "user", "content": "hi"}], **body})
    assert request.model_args["enable_thinking"] is expected


def test_tools_are_declared_unless_tool_choice_none():
    tool = {"type": "function", "function": {"name": "get_weather", "description": "d",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}}
    base = {"messages": [{"role": "user", "content": "hi"}], "tools": [tool]}
    assert chat(base).model_args["tools"] == [tool]
    assert chat({**base, "tool_choice": "none"}).model_args["tools"] is None


@pytest.mark.parametrize("parameters, param", [
    ({"type": "banana"}, "tools[0].function.parameters.type"),
    ({"type": "object", "properties": []}, "tools[0].function.parameters.properties"),
    ({"type": "object", "properties": {"x": 3}}, "tools[0].function.parameters.properties.x"),
    ({"type": "object", "required": "x"}, "tools[0].function.parameters.required"),
])
def test_invalid_tool_schemas_are_refused(parameters, param):
    body = {"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}]}
    with pytest.raises(RequestError) as e:
        chat(body)
    assert e.value.param == param


TWO_TOOLS = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in ("f", "g")]


@pytest.mark.parametrize("choice, forced, parallel", [
    ("required", ["f", "g"], True),
    ({"type": "function", "function": {"name": "g"}}, ["g"], False),
])
def test_forcing_tool_choice_asks_for_a_call_grammar(choice, forced, parallel):
    asked = []
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": TWO_TOOLS, "tool_choice": choice,
            "parallel_tool_calls": parallel}
    schema.validate(body, schema.CHAT_REQUEST)
    request = mapping.chat_request(body, **LIMITS, call_grammar=lambda tools, p: asked.append((tools, p)) or "G")
    assert [[t["function"]["name"] for t in tools] for tools, _ in asked] == [forced]
    assert asked[0][1] is parallel and request.model_args["grammar"] == "G"
    assert [t["function"]["name"] for t in request.model_args["tools"]] == ["f", "g"]  # all still declared
    assert request.model_args["enable_thinking"] is False
    assert request.max_calls == (None if parallel else 1)


@pytest.mark.parametrize("body, param", [
    ({"tool_choice": "required"}, "tool_choice"),  # no tools
    ({"tools": TWO_TOOLS, "tool_choice": {"type": "function", "function": {"name": "h"}}}, "tool_choice"),
    ({"tools": TWO_TOOLS, "tool_choice": "required", "reasoning_effort": "high"}, "tool_choice"),
    ({"tools": TWO_TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
    ({"tools": TWO_TOOLS, "tool_choice": "auto", "top_logprobs": 3}, "top_logprobs"),
])
def test_impossible_tool_choices_are_refused(body, param):
    with pytest.raises(RequestError) as e:
        mapping.chat_request({"messages": [{"role": "user", "content": "hi"}], **body}, **LIMITS,
                             call_grammar=lambda tools, p: "G")
    assert e.value.param == param


def test_choices_get_their_own_seeds():
    request = chat({"messages": [{"role": "user", "content": "hi"}], "n": 3, "seed": 7})
    assert [c.model_args["seed"] for c in mapping.choice_requests(request)] == [7, 8, 9]
    assert all(c.n == 1 for c in mapping.choice_requests(request))


def test_response_format_becomes_a_llama_cpp_grammar():
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    from gemma_edge.server.grammar import with_grammar

    base = {"messages": [{"role": "user", "content": "hi"}]}
    request = chat({**base, "response_format": {"type": "json_object"}})
    assert request.model_args["grammar"] == mapping.JsonOutput(None, "response_format.json_schema.schema")
    assert with_grammar(request).model_args["grammar"] == JSON_GBNF
    sch = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    request = chat({**base, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": sch}}})
    assert request.model_args["grammar"] == mapping.JsonOutput(sch, "response_format.json_schema.schema")
    assert with_grammar(request).model_args["grammar"] == json_schema_to_gbnf(json.dumps(sch))
    assert with_grammar(request).model_args == {**request.model_args, "grammar": json_schema_to_gbnf(json.dumps(sch))}
    assert request.model_args["enable_thinking"] is False
    assert chat({**base, "response_format": {"type": "text"}}).model_args["grammar"] is None
    with pytest.raises(RequestError):
        chat({**base, "response_format": {"type": "json_object"}, "reasoning_effort": "high"})
    with pytest.raises(RequestError):
        chat({**base, "response_format": {"type": "json_schema",
                                          "json_schema": {"name": "x", "schema": {"type": "array", "minItems": 10**6}}}})


def test_a_schema_llama_cpp_cannot_convert_is_refused_on_its_field():
    from gemma_edge.server.grammar import with_grammar

    request = chat({"messages": [{"role": "user", "content": "hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/definitions/missing"}}}})
    with pytest.raises(RequestError, match="cannot be turned into a grammar") as e:
        with_grammar(request)
    assert e.value.param == "response_format.json_schema.schema"


def test_sampling_and_limits():
    request = chat({"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "top_p": 0.5, "seed": -1,
                    "max_tokens": 7, "stop": "\n"})
    assert request.model_args["temperature"] == 0 and request.model_args["top_p"] == 0.5
    assert request.model_args["seed"] == (1 << 32) - 1  # 64-bit OpenAI seed folded into llama.cpp's 32 bits
    assert request.model_args["max_tokens"] == 7 and request.stops == ["\n"]
    capped = mapping.chat_request({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 900},
                                  default_max_tokens=512, max_tokens_limit=100)
    assert capped.model_args["max_tokens"] == 100


def test_speculative_field_reaches_the_model_and_counts_reach_usage():
    request = chat({"messages": [{"role": "user", "content": "hi"}], "speculative": "ngram"})
    assert request.model_args["speculative"] == "ngram"
    assert "speculative" not in chat({"messages": [{"role": "user", "content": "hi"}]}).model_args
    with pytest.raises(RequestError, match="speculative"):
        chat({"messages": [{"role": "user", "content": "hi"}], "speculative": "turbo"})
    for mtp in ("mtp", "mtp:/models/drafter.gguf"):  # the server's drafter (Model.speculation checks it)
        assert chat({"messages": [{"role": "user", "content": "hi"}], "speculative": mtp}).model_args["speculative"] == mtp
    with pytest.raises(RequestError, match="speculative"):
        chat({"messages": [{"role": "user", "content": "hi"}], "speculative": "mtp:"})
    usage = mapping.usage_json({"prompt_tokens": 9, "prompt_tokens_evaluated": 9, "completion_tokens": 20,
                                "drafted_tokens": 16, "accepted_tokens": 12})
    assert usage["completion_tokens_details"] == {"accepted_prediction_tokens": 12,
                                                  "rejected_prediction_tokens": 4}
    ChatCompletion.model_validate({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                   "choices": [], "usage": usage})  # OpenAI's own model takes the fields


def test_completion_request():
    body = {"prompt": ["Once upon"], "max_tokens": 3, "stream": True, "stream_options": {"include_usage": True}}
    schema.validate(body, schema.COMPLETION_REQUEST)
    request = mapping.completion_request(body, **LIMITS)
    assert request.prompt == "Once upon" and request.model_args["raw"] is True
    assert request.stream and request.include_usage


OUTCOME = mapping.Outcome(content="", thinking="let me think", finish_reason="tool_calls",
                          tool_calls=[{"type": "function", "function": {"name": "get_weather",
                                                                        "arguments": {"city": "Paris", "n": [1, 2]}}}],
                          usage={"prompt_tokens": 10, "prompt_tokens_evaluated": 4, "completion_tokens": 5,
                                 "total_tokens": 15})


def test_chat_completion_json_is_a_valid_openai_chat_completion():
    doc = mapping.chat_completion_json([OUTCOME], completion_id="chatcmpl-1", created=1, model="m",
                                       call_ids=[["call_a"]])
    parsed = ChatCompletion.model_validate(doc)
    message = parsed.choices[0].message
    assert message.content is None and parsed.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls[0].id == "call_a" and message.tool_calls[0].type == "function"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris", "n": [1, 2]}
    assert doc["choices"][0]["message"]["reasoning_content"] == "let me think"
    assert parsed.usage.prompt_tokens == 10 and parsed.usage.completion_tokens == 5 and parsed.usage.total_tokens == 15
    assert parsed.usage.prompt_tokens_details.cached_tokens == 6


def test_chunks_are_valid_openai_chunks():
    for event in ({"type": "content", "text": "hi"}, {"type": "thinking", "text": "hmm"}, OUTCOME.tool_calls and
                  {"type": "tool_call", "tool_call": OUTCOME.tool_calls[0]}):
        delta = mapping.chat_delta(event, tool_index=0, call_id="call_x")
        ChatCompletionChunk.model_validate(mapping.chat_chunk_json(delta, completion_id="c", created=1, model="m"))
    call = mapping.chat_delta({"type": "tool_call", "tool_call": OUTCOME.tool_calls[0]}, tool_index=2, call_id="c9")
    assert call["tool_calls"][0]["index"] == 2 and call["tool_calls"][0]["id"] == "c9"
    ChatCompletionChunk.model_validate(mapping.usage_chunk_json(OUTCOME.usage, completion_id="c", created=1,
                                                                model="m", chat=True))


def test_completion_json_is_a_valid_openai_completion():
    outcome = mapping.Outcome("text", None, [], "length", {"prompt_tokens": 3, "completion_tokens": 2})
    parsed = Completion.model_validate(mapping.completion_json([outcome], prompt="p", completion_id="cmpl-1",
                                                               created=1, model="m"))
    assert parsed.choices[0].text == "text" and parsed.choices[0].finish_reason == "length"
    # (the wire sends finish_reason null until the last chunk; the client reads chunks without validation)
    Completion.model_validate(mapping.completion_chunk_json("t", completion_id="c", created=1, model="m",
                                                            finish_reason="stop"))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=from_schema(schema.CHAT_REQUEST),
       format=st.sampled_from(["gemma4-large", "gemma4-small", "functiongemma", "gemma3", "gemma2"]))
def test_every_accepted_request_renders_in_every_format(body, format):
    """What validation lets through never makes a renderer or parser fail with anything but the
    template's own refusal (a 400): the fuzzing of the real server only reaches Gemma 3's format."""
    from gemma_edge.formats import TemplateError, render_segments
    from gemma_edge.parsing import StreamParser
    from gemma_edge.tools import normalize_tools

    try:
        request = mapping.chat_request(body, **LIMITS)
    except RequestError:
        return
    args = request.model_args
    tools = normalize_tools(args["tools"])[0] if args["tools"] else None
    thinking = bool(args["enable_thinking"])
    try:
        render_segments(request.prompt, format=format, tools=tools, enable_thinking=thinking,
                        **args.get("template_vars", {}))
    except TemplateError:
        return
    StreamParser(format, enable_thinking=thinking, prompt_tail="", tools=tools)


def test_speculative_field_may_name_a_draft_model():
    """The model decides whether it is the draft model it loaded (Model.speculation); the schema only
    requires a name after draft:."""
    request = chat({"messages": [{"role": "user", "content": "hi"}], "speculative": "draft:gemma-3-270m"})
    assert request.model_args["speculative"] == "draft:gemma-3-270m"
    for bad in ("draft:", "draft"):
        with pytest.raises(RequestError, match="draft:MODEL"):
            chat({"messages": [{"role": "user", "content": "hi"}], "speculative": bad})
