"""The official `ollama` Python client against a real `gemma-edge serve` process: the Ollama endpoints
(`/api/chat`, `/api/generate`, `/api/tags`, `/api/show`, `/api/ps`, `/api/version`). Oracles: the
library (`Model.generate`, greedy, fresh KV cache) on the same conversation; Gemma 4 thinking and tool
calls on the tiny real-vocabulary Gemma 4 whose output a grammar forces to text we wrote; images on the
tiny Gemma 3 vision pair; the model file's own facts for the model descriptions."""
from __future__ import annotations

import base64
import json

import jsonschema
import ollama
import pytest
from PIL import Image

from tests.server.conftest import library_answer, serve_argv, start_forced_server, start_server, stop_server
from tests.server.test_openai_client import COUNTING, MESSAGES
from tests.server.test_tools_thinking import FORCED, QUESTION, THOUGHT, TOOLS

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0, "num_predict": 16}


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.url, timeout=120)


def test_tags_show_ps_and_version(server, client, embedded_model_path):
    from gemma_edge.model import read_model_facts

    facts = read_model_facts(embedded_model_path)
    [listed] = client.list().models
    assert listed.size == embedded_model_path.stat().st_size
    assert (listed.details.format, listed.details.family, listed.details.quantization_level,
            listed.details.parameter_size) == ("gguf", facts.architecture, facts.quantization, facts.size_label)
    shown = client.show(listed.model)
    assert shown.capabilities == ["completion"]  # Gemma 3 270M: no tool syntax, no thinking, no projector
    assert shown.modelinfo[f"{facts.architecture}.context_length"] == facts.context_length
    [running] = client.ps().models
    assert running.model == listed.model and running.context_length == 1024
    assert server.get("/api/version").json() == {"version": server.get("/openapi.json").json()["info"]["version"]}


@pytest.mark.parametrize("endpoint", ["chat", "generate"])
def test_answers_equal_the_library(client, library_model, endpoint):
    """/api/generate puts `system` and `prompt` into the turn format, like /api/chat's messages."""
    expected = library_answer(library_model, MESSAGES, temperature=0, max_tokens=16)
    if endpoint == "chat":
        reply = client.chat(model="gemma", messages=MESSAGES, options=GREEDY, keep_alive="5m")
        text = reply.message.content
        assert reply.message.role == "assistant"
    else:
        reply = client.generate(model="gemma", system=MESSAGES[0]["content"], prompt=MESSAGES[1]["content"],
                                options=GREEDY, keep_alive=0)
        text = reply.response
    assert text == expected.content
    assert reply.done and reply.done_reason == expected.finish_reason and reply.model == "gemma"
    assert reply.prompt_eval_count == expected.usage["prompt_tokens"]
    assert reply.eval_count == expected.usage["completion_tokens"]
    assert reply.total_duration >= reply.prompt_eval_duration + reply.eval_duration > 0


@pytest.mark.parametrize("endpoint", ["chat", "generate"])
def test_streams_equal_the_library(client, library_model, endpoint):
    expected = library_answer(library_model, MESSAGES[1:], temperature=0, max_tokens=16)
    if endpoint == "chat":
        parts = list(client.chat(model="m", messages=MESSAGES[1:], options=GREEDY, stream=True))
        text = "".join(p.message.content for p in parts)
    else:
        parts = list(client.generate(model="m", prompt=MESSAGES[1]["content"], options=GREEDY, stream=True))
        text = "".join(p.response for p in parts)
    assert text == expected.content and len(parts) > 2
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].done_reason == expected.finish_reason
    assert parts[-1].eval_count == expected.usage["completion_tokens"]


def test_raw_generate_and_a_long_stop_list(client, library_model):
    """`raw` continues the text as given; `options.stop` takes more than OpenAI's 4 strings."""
    full = library_answer(library_model, COUNTING, raw=True, temperature=0, max_tokens=24).content
    assert client.generate(model="m", prompt=COUNTING, raw=True, options={**GREEDY, "num_predict": 24}).response == full
    stop = full[len(full) // 2:len(full) // 2 + 2]
    stops = [f"never-{i}" for i in range(7)] + [stop]
    for stream in (False, True):
        reply = client.generate(model="m", prompt=COUNTING, raw=True, stream=stream,
                                options={**GREEDY, "num_predict": 24, "stop": stops})
        parts = list(reply) if stream else [reply]
        assert "".join(p.response for p in parts) == full[:full.find(stop)]
        assert parts[-1].done_reason == "stop"


def test_options_reach_the_sampler(client, library_model):
    """Seeded sampling with every supported option equals the library's with the same settings."""
    options = {"temperature": 0.9, "top_k": 20, "top_p": 0.8, "min_p": 0.05, "repeat_penalty": 1.1, "seed": 11,
               "num_predict": 12, "num_ctx": 512}
    expected = library_answer(library_model, MESSAGES, temperature=0.9, top_k=20, top_p=0.8, min_p=0.05,
                              repeat_penalty=1.1, seed=11, max_tokens=12)
    assert client.chat(model="m", messages=MESSAGES, options=options).message.content == expected.content


CAPITAL = {"type": "object", "properties": {"capital": {"type": "string", "maxLength": 12}}, "required": ["capital"],
           "additionalProperties": False}


@pytest.mark.parametrize("format", ["json", CAPITAL])
def test_format_is_forced_by_llama_cpps_json_grammars(client, library_model, format):
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    grammar = JSON_GBNF if format == "json" else json_schema_to_gbnf(json.dumps(format))
    limit = 12 if format == "json" else 40  # free JSON from a base model runs on: a prefix is enough
    expected = library_answer(library_model, MESSAGES, temperature=0, max_tokens=limit, grammar=grammar)
    reply = client.chat(model="m", messages=MESSAGES, format=format, options={"temperature": 0, "num_predict": limit})
    assert reply.message.content == expected.content
    if format is CAPITAL:
        assert reply.done_reason == "stop"
        jsonschema.validate(json.loads(reply.message.content), CAPITAL)


def test_logprobs_match_the_chosen_tokens(client):
    reply = client.chat(model="m", messages=MESSAGES, options=GREEDY, logprobs=True, top_logprobs=3)
    assert "".join(p.token for p in reply.logprobs) == reply.message.content
    for p in reply.logprobs:  # greedy: the chosen token is the most likely one
        assert len(p.top_logprobs) == 3 and p.top_logprobs[0].token == p.token
        assert p.top_logprobs[0].logprob == p.logprob >= p.top_logprobs[1].logprob >= p.top_logprobs[2].logprob


def test_an_empty_request_loads_the_model(client):
    reply = client.chat(model="m", messages=[])
    assert reply.done and reply.done_reason == "load" and reply.message.content == ""


@pytest.mark.parametrize("call, status, text", [
    (lambda c: c.chat(model="m", messages=MESSAGES, options={"mirostat": 2}), 400, "options.mirostat"),
    (lambda c: c.chat(model="m", messages=MESSAGES, options={"num_ctx": 4096}), 400, "--ctx-size"),
    (lambda c: c.chat(model="m", messages=MESSAGES, options={"no_such_option": 1}), 400, "no_such_option"),
    (lambda c: c.chat(model="m", messages=[{"role": "user", "content": "word " * 3000}]), 400, "context"),
    (lambda c: c.chat(model="m", messages=[{"role": "user", "content": "hi", "images": [b"\x89PNG"]}]), 400,
     "no projector loaded"),
    (lambda c: c.chat(model="m", messages=MESSAGES, think=True), 400, "does not support thinking"),
    (lambda c: c.chat(model="m", messages=MESSAGES, tools=TOOLS), 400, "does not support tools"),
    (lambda c: c.generate(model="m", prompt="hi", suffix="end"), 400, "suffix"),
    (lambda c: c.pull("gemma3"), 400, "not supported yet"),
    (lambda c: c.embed(model="m", input="hi"), 400, "does not embed"),
])
def test_errors_have_ollamas_shape(client, call, status, text):
    with pytest.raises(ollama.ResponseError) as e:
        call(client)
    assert e.value.status_code == status and text in e.value.error


def test_malformed_bodies_have_ollamas_shape(server):
    answer = server.post("/api/chat", content=b"{", headers={"content-type": "application/json"})
    assert answer.status_code == 400 and set(answer.json()) == {"error"}
    answer = server.post("/api/generate", content=b'{"model": "m"}', headers={"content-type": "text/plain"})
    assert answer.status_code == 415 and set(answer.json()) == {"error"}


def test_api_key(embedded_model_path):
    """The Ollama client sends the key as a bearer token (OLLAMA_API_KEY or a header); refusals keep Ollama's shape."""
    key = "sk-test-" + "0llama" * 4
    running = start_server(serve_argv(embedded_model_path, "--api-key", key))
    try:
        with pytest.raises(ollama.ResponseError) as e:
            ollama.Client(host=running.url).list()
        assert e.value.status_code == 401 and "API key" in e.value.error
        keyed = ollama.Client(host=running.url, headers={"authorization": f"Bearer {key}"})
        assert keyed.chat(model="m", messages=MESSAGES, options={"num_predict": 1}).done
    finally:
        stop_server(running)


# -- Gemma 4: thinking and tool calls ------------------------------------------------------------
@pytest.fixture(scope="module")
def gemma4_path():
    from tests.convert.tiny_gemma4 import tiny_gemma4_gguf

    return tiny_gemma4_gguf("dense", "f32")


@pytest.fixture(scope="module")
def forced(gemma4_path, tmp_path_factory):
    running = start_forced_server(gemma4_path, FORCED, tmp_path_factory.mktemp("grammar"))
    yield ollama.Client(host=running.url, timeout=120)
    stop_server(running)


def test_thinking_and_tool_calls(forced):
    reply = forced.chat(model="forced", messages=QUESTION, tools=TOOLS, think=True, options={"num_predict": 120})
    assert reply.message.thinking == THOUGHT and not reply.message.content
    [call] = reply.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert reply.done_reason == "stop"


def test_streamed_thinking_and_tool_calls(forced):
    parts = list(forced.chat(model="forced", messages=QUESTION, tools=TOOLS, think="high", stream=True,
                             options={"num_predict": 120}))
    assert "".join(p.message.thinking or "" for p in parts) == THOUGHT
    calls = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert parts[-1].done


def test_tool_results_round_trip(forced, gemma4_path):
    """The assistant's call (arguments as an object) and the tool's answer (with `tool_name`) go back in;
    the server's prompt is the library's prompt for the same conversation."""
    from gemma_edge.api import Model

    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    history = QUESTION + [{"role": "assistant", "content": "", "thinking": THOUGHT, "tool_calls": [call]},
                          {"role": "tool", "tool_name": "get_weather", "content": '{"temperature_c": 18}'}]
    reply = forced.chat(model="forced", messages=history, tools=TOOLS, think=True, options={"num_predict": 120})
    as_library = QUESTION + [
        {"role": "assistant", "content": "", "reasoning_content": THOUGHT,
         "tool_calls": [{"type": "function", **call}]},
        {"role": "tool", "name": "get_weather", "content": '{"temperature_c": 18}'}]
    tokens, _ = Model(gemma4_path, n_threads=1).tokenize_messages(as_library, tools=TOOLS, enable_thinking=True)
    assert reply.prompt_eval_count == len(tokens)
    assert reply.message.tool_calls


def test_capabilities_of_a_gemma4_model(forced):
    assert forced.show("forced").capabilities == ["completion", "tools", "thinking"]


# -- images ------------------------------------------------------------------------------------
def test_an_image_answers_like_the_library(tmp_path):
    from gemma_edge.api import load
    from tests.convert.tiny_gemma3_vision import IMAGE_SIZE
    from tests.runtime.tiny_vision import gemma3_vision_pair
    from tests.server.test_media_server import seeded

    pair = gemma3_vision_pair()[0]
    path = tmp_path / "seeded.png"
    Image.fromarray(seeded(IMAGE_SIZE)).save(path)
    running = start_server(serve_argv(pair, "--ctx-size", "256", "--no-prompt-cache"))
    try:
        client = ollama.Client(host=running.url, timeout=120)
        assert "vision" in client.show("m").capabilities
        reply = client.chat(model="m", options={"temperature": 0, "num_predict": 6},
                            messages=[{"role": "user", "content": "Describe this.", "images": [path.read_bytes()]}])
        expected = load(str(pair), n_ctx=256, n_threads=1).generate(
            [{"role": "user", "content": [{"type": "image", "path": str(path)},
                                          {"type": "text", "text": "Describe this."}]}], temperature=0, max_tokens=6)
        assert reply.message.content == expected.content
        assert reply.prompt_eval_count == expected.usage["prompt_tokens"]
        broken = base64.b64encode(b"not an image").decode()
        with pytest.raises(ollama.ResponseError) as e:
            client.generate(model="m", prompt="Describe this.", images=[broken])
        assert e.value.status_code == 400 and "not an image" in e.value.error
    finally:
        stop_server(running)
