"""Forced tool calls (`tool_choice: "required"` or a named function) through the openai client against
a real server on the tiny real-vocabulary Gemma 4: random weights never call a tool by themselves, so
every call here is the server's grammar at work. Oracles: the request's own tool schemas (jsonschema
validates every argument object) and the library's parser on the same text; FunctionGemma's syntax
through the library on the embedded model (its vocabulary has no FunctionGemma tokens, so the markers
are text there)."""
from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.server.conftest import serve_argv, start_server, stop_server

pytestmark = pytest.mark.slow

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                            "days": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
                                            "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"]}
ADD = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": ["integer", "null"]},
                                        "exact": {"type": "boolean"}, "note": {"type": "object", "properties": {
                                            "text": {"type": "string", "maxLength": 5}}, "required": ["text"]}},
       "required": ["a", "note"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "parameters": ADD}}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
QUESTION = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.fixture(scope="module")
def client():
    from tests.convert.tiny_gemma4 import tiny_gemma4_gguf

    running = start_server(serve_argv(tiny_gemma4_gguf("dense", "f32"), "--ctx-size", "256", "--no-prompt-cache"))
    yield openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    stop_server(running)


def valid_calls(message) -> list[str]:
    for call in message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    return [call.function.name for call in message.tool_calls]


@pytest.mark.parametrize("choice, allowed", [
    ("required", {"get_weather", "add"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"get_weather"}),
    ({"type": "function", "function": {"name": "add"}}, {"add"}),
])
def test_a_forced_call_is_made_and_matches_its_schema(client, choice, allowed):
    """Two sampled choices each, and one call exactly when parallel calls are off."""
    reply = client.chat.completions.create(model="m", messages=QUESTION, tools=TOOLS, tool_choice=choice,
                                           parallel_tool_calls=False, n=2, temperature=1.0, seed=1, max_tokens=150)
    for choice_ in reply.choices:
        assert choice_.finish_reason == "tool_calls"
        [name] = valid_calls(choice_.message)
        assert name in allowed


def test_parallel_calls_may_be_several_and_stream_alike(client):
    kw = dict(model="m", messages=QUESTION, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=150)
    reply = client.chat.completions.create(**kw)
    names = valid_calls(reply.choices[0].message)
    assert names and reply.choices[0].finish_reason == "tool_calls"
    chunks = list(client.chat.completions.create(stream=True, **kw))
    calls = [call for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == \
        [(c.function.name, json.loads(c.function.arguments)) for c in reply.choices[0].message.tool_calls]
    assert [c.index for c in calls] == list(range(len(calls)))


def test_functiongemma_syntax(embedded_model_path):
    """The grammar for FunctionGemma's markers, generated and parsed by the library."""
    from gemma_edge.api import Model
    from gemma_edge.parsing import syntax_for
    from gemma_edge.parsing.call_grammar import tool_call_grammar

    model = Model(embedded_model_path, n_ctx=512, n_threads=1, format="functiongemma")
    grammar = tool_call_grammar(syntax_for("functiongemma"), TOOLS[:1], parallel=False,
                                token_id=model.engine.special_id)
    reply = model.generate(QUESTION, tools=TOOLS, grammar=grammar, temperature=0, max_tokens=60)
    [call] = reply.tool_calls
    assert call["function"]["name"] == "get_weather" and not reply.errors
    jsonschema.validate(call["function"]["arguments"], WEATHER)
