"""Thinking and tool calls through the openai client, end to end on a real Gemma 4 GGUF (tiny,
random weights, real Gemma 4 vocabulary) whose output a grammar forces to FORCED. Oracle: the
Gemma 4 output format as we wrote FORCED (thought text, call name, arguments) and the library's own
prompt for the converted conversation (its token count must equal the server's usage)."""
from __future__ import annotations

import json

import openai
import pytest

from tests.server.conftest import start_forced_server, stop_server

pytestmark = pytest.mark.slow

THOUGHT = "Check Paris."
FORCED = f'<|channel>thought\n{THOUGHT}<channel|><|tool_call>call:get_weather{{city:<|"|>Paris<|"|>}}<tool_call|>'
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
QUESTION = [{"role": "user", "content": "What's the weather in Paris?"}]


@pytest.fixture(scope="module")
def gemma4_path():
    from tests.convert.tiny_gemma4 import tiny_gemma4_gguf

    return tiny_gemma4_gguf("dense", "f32")


@pytest.fixture(scope="module")
def forced_client(gemma4_path, tmp_path_factory):
    running = start_forced_server(gemma4_path, FORCED, tmp_path_factory.mktemp("grammar"))
    yield openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    stop_server(running)


def test_thinking_and_tool_call(forced_client):
    reply = forced_client.chat.completions.create(model="forced", messages=QUESTION, tools=TOOLS,
                                                  reasoning_effort="high", max_tokens=120)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.model_extra["reasoning_content"] == THOUGHT
    assert not choice.message.content
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_streamed_thinking_and_tool_call(forced_client):
    chunks = list(forced_client.chat.completions.create(
        model="forced", messages=QUESTION, tools=TOOLS, stream=True, max_tokens=120,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == THOUGHT
    calls = [call for d in deltas for call in (d.tool_calls or [])]
    assert [(c.index, c.function.name, json.loads(c.function.arguments)) for c in calls] == \
        [(0, "get_weather", {"city": "Paris"})]
    assert calls[0].id and calls[0].type == "function"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_results_round_trip(forced_client, gemma4_path):
    """The assistant's call (arguments as a JSON string) and the tool's answer go back in; the
    server's prompt is the library's prompt for the same conversation with arguments as an object."""
    from gemma_edge.api import Model

    history = QUESTION + [
        {"role": "assistant", "content": None, "reasoning_content": THOUGHT, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 18}'}]
    reply = forced_client.chat.completions.create(model="forced", messages=history, tools=TOOLS,
                                                  reasoning_effort="high", max_tokens=120)
    library = Model(gemma4_path, n_threads=1)
    as_library = [dict(m) for m in history]
    as_library[1] = {**history[1], "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    tokens, _ = library.tokenize_messages(as_library, tools=TOOLS, enable_thinking=True)
    assert reply.usage.prompt_tokens == len(tokens)
    assert reply.choices[0].finish_reason == "tool_calls"
