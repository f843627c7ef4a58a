"""Ollama requests to gemma-edge arguments and results back, without a model. Oracles: the `ollama`
client's own pydantic types (every answer must validate as what the client expects), the OpenAI
mapping the Ollama one shares its checks with, and the schema the server serves."""
from __future__ import annotations

import base64

import ollama
import pytest

from gemma_edge.server import ollama_mapping as om, schema
from gemma_edge.server.errors import RequestError
from gemma_edge.server.mapping import JsonOutput, Outcome

LIMITS = {"n_ctx": 1024, "default_max_tokens": 512, "max_tokens_limit": None}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}}
OUTCOME = Outcome("It is sunny.", "let me think", [CALL], "tool_calls",
                  {"prompt_tokens": 12, "completion_tokens": 7}, {"prefill_s": 0.25, "decode_s": 0.5})


def chat(body: dict, **limits):
    body = {"model": "m", **body}
    schema.validate(body, schema.OLLAMA_CHAT_REQUEST)
    return om.chat_request(body, **{**LIMITS, **limits})


def test_messages_images_calls_and_tool_results():
    request = chat({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is this?", "images": [PNG]},
        {"role": "assistant", "content": "", "thinking": "hmm", "tool_calls": [{"function": CALL["function"]}]},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny"}]})
    system, user, assistant, tool = request.prompt
    assert system == {"role": "system", "content": "Be brief."}
    assert user["content"] == [{"type": "image", "url": "data:application/octet-stream;base64," + PNG},
                               {"type": "text", "text": "What is this?"}]
    assert assistant["tool_calls"] == [CALL] and assistant["reasoning_content"] == "hmm"
    assert tool == {"role": "tool", "content": "sunny", "name": "get_weather"}
    assert request.stream  # Ollama streams unless told not to


def test_options_become_sampling_limits_and_stops():
    request = chat({"messages": [{"role": "user", "content": "hi"}], "stream": False, "options": {
        "temperature": 0, "top_k": 5, "top_p": 0.5, "min_p": 0.1, "repeat_penalty": 1.2, "seed": 7,
        "num_predict": 9, "num_ctx": 512, "stop": ["a", "b", "c", "d", "e"], "num_thread": 4, "typical_p": 1}})
    args = request.model_args
    assert {k: args[k] for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed", "max_tokens")} \
        == {"temperature": 0, "top_k": 5, "top_p": 0.5, "min_p": 0.1, "repeat_penalty": 1.2, "seed": 7, "max_tokens": 9}
    assert request.stops == ["a", "b", "c", "d", "e"] and not request.stream


@pytest.mark.parametrize("num_predict, limit, expected", [(None, None, 512), (-1, None, 1024), (-2, 100, 100),
                                                          (2000, 1500, 1500)])
def test_num_predict(num_predict, limit, expected):
    request = chat({"messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": num_predict}},
                   max_tokens_limit=limit)
    assert request.model_args["max_tokens"] == expected


def test_think_and_format():
    from llama_cpp.llama_grammar import JSON_GBNF

    from gemma_edge.server.grammar import with_grammar

    base = {"messages": [{"role": "user", "content": "hi"}]}
    assert chat({**base, "think": "low"}).model_args["enable_thinking"] is True
    assert chat({**base, "think": False}).model_args["enable_thinking"] is False
    assert chat(base).model_args["enable_thinking"] is None  # the model's default
    formatted = chat({**base, "format": "json"})
    assert formatted.model_args["grammar"] == JsonOutput(None, "format")
    assert formatted.model_args["enable_thinking"] is False
    assert with_grammar(formatted).model_args["grammar"] == JSON_GBNF


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "hi"}], "options": {"num_ctx": 4096}}, "options.num_ctx"),
    ({"messages": [{"role": "user", "content": "hi"}], "format": "json", "think": True}, "format"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}],
      "format": "json"}, "format"),
    ({"messages": [{"role": "user", "content": "hi"}], "format": {"type": "array", "maxItems": 10**6}}, "format"),
    ({"messages": [{"role": "user", "content": "hi"}], "options": {"mirostat": 1}}, "options.mirostat"),
    ({"messages": [{"role": "user", "content": "hi"}], "options": {"temprature": 1}}, "options.temprature"),
    ({"messages": [{"role": "user", "content": "hi", "tool_calls": [{"function": {"name": "f"}}]}]},
     "messages[0].tool_calls"),
    ({"messages": [{"role": "user", "content": "hi", "images": [""]}]}, "messages[0].images"),
])
def test_refusals_name_the_field(body, param):
    with pytest.raises(RequestError) as e:
        chat(body)
    assert e.value.param == param


def test_think_and_tools_need_a_format_that_has_them():
    from gemma_edge.formats import get_format

    body = {"think": True, "tools": [{"type": "function", "function": {"name": "f"}}]}
    om.check_capabilities(body, get_format("gemma4-small"), "m")
    for format, field in (("gemma3", "think"), ("functiongemma", "think")):
        with pytest.raises(RequestError) as e:
            om.check_capabilities(body, get_format(format), "m")
        assert e.value.param == field
    with pytest.raises(RequestError) as e:
        om.check_capabilities({"tools": body["tools"], "think": False}, get_format("gemma3"), "m")
    assert e.value.param == "tools"


def test_generate_applies_the_turn_format_unless_raw():
    def generate(body):
        body = {"model": "m", **body}
        schema.validate(body, schema.OLLAMA_GENERATE_REQUEST)
        return om.generate_request(body, **LIMITS)

    templated = generate({"prompt": "hi", "system": "Be brief.", "images": [PNG]})
    assert [m["role"] for m in templated.prompt] == ["system", "user"]
    assert templated.prompt[1]["content"][-1] == {"type": "text", "text": "hi"}
    raw = generate({"prompt": "Once upon", "raw": True})
    assert raw.prompt == "Once upon" and raw.model_args["raw"] is True
    for refused in ({"prompt": "x", "raw": True, "system": "s"}, {"prompt": "x", "raw": True, "images": [PNG]}):
        with pytest.raises(RequestError):
            generate(refused)
    for unsupported in ({"prompt": "x", "suffix": "y"}, {"prompt": "x", "template": "{{ .Prompt }}"},
                        {"prompt": "x", "context": [1, 2]}):
        with pytest.raises(RequestError):
            generate(unsupported)


def test_answers_validate_as_the_clients_types():
    whole = om.chat_done_json("m", OUTCOME, 1.0, whole=True)
    reply = ollama.ChatResponse.model_validate(whole)
    assert reply.message.content == "It is sunny." and reply.message.thinking == "let me think"
    assert reply.message.tool_calls[0].function.arguments == CALL["function"]["arguments"]
    assert (reply.done, reply.done_reason, reply.eval_count, reply.prompt_eval_count) == (True, "stop", 7, 12)
    assert (reply.total_duration, reply.prompt_eval_duration, reply.eval_duration) == (10**9, 25 * 10**7, 5 * 10**8)
    for event in ({"type": "content", "text": "Hi"}, {"type": "thinking", "text": "hmm"},
                  {"type": "tool_call", "tool_call": CALL}):
        part = ollama.ChatResponse.model_validate(om.chat_chunk_json("m", event, tool_index=2))
        assert part.done is False
    generated = ollama.GenerateResponse.model_validate(om.generate_done_json("m", OUTCOME, 1.0, whole=True))
    assert generated.response == "It is sunny." and generated.thinking == "let me think"
    assert om.generate_chunk_json("m", {"type": "tool_call", "tool_call": CALL}) is None
    assert ollama.ChatResponse.model_validate(om.load_json("m", chat=True)).done_reason == "load"
    with_logprobs = Outcome("a", None, [], "stop", {}, {}, [{"token": "a", "bytes": [97], "logprob": -0.5,
                                                            "top_logprobs": [{"token": "a", "bytes": [97],
                                                                              "logprob": -0.5}]}])
    assert ollama.ChatResponse.model_validate(om.chat_done_json("m", with_logprobs, 1.0, whole=True)).logprobs[0] \
        .logprob == -0.5
    assert om.created_at().endswith("Z")
