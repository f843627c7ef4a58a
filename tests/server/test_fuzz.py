"""Hostile and random input against a real server process, generated from the server's own
/openapi.json: every answer is 2xx or a 4xx with an OpenAI-shaped JSON error, never a 5xx, and the
server still answers /health afterwards with nothing in its log but its start line."""
from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.server.conftest import serve_argv, start_server, stop_server
from tests.server.strategies import ANY_JSON, from_schema

pytestmark = pytest.mark.slow

BODY_LIMIT = 65536
FUZZ = settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
ENDPOINTS = {"/v1/chat/completions": "ChatCompletionRequest", "/v1/completions": "CompletionRequest",
             "/api/chat": "OllamaChatRequest", "/api/generate": "OllamaGenerateRequest"}


@pytest.fixture(scope="module")
def fuzz_server(embedded_model_path):
    running = start_server(serve_argv(embedded_model_path, "--max-tokens-limit", "1", "--max-body-size",
                                      str(BODY_LIMIT), "--timeout", "20"))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def http(fuzz_server):
    with httpx.Client(base_url=fuzz_server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def request_schemas(http):
    document = http.get("/openapi.json").json()
    return {path: document["components"]["schemas"][name] for path, name in ENDPOINTS.items()}


def check_answer(response: httpx.Response) -> None:
    """OpenAI's shapes on /v1, Ollama's on /api (also for errors, also inside an NDJSON stream)."""
    assert response.status_code < 500, response.text
    ollama = response.request.url.path.startswith("/api/")
    if response.status_code == 200:
        kind = response.headers["content-type"]
        if kind.startswith("text/event-stream"):
            assert response.text.rstrip().endswith("data: [DONE]") or '"error"' in response.text
        elif kind.startswith("application/x-ndjson"):
            last = json.loads(response.text.rstrip("\n").split("\n")[-1])
            assert last.get("done") is True or isinstance(last.get("error"), str)
        else:
            assert "done" in response.json() if ollama else "choices" in response.json()
        return
    error = response.json()["error"]
    if ollama:
        assert isinstance(error, str) and error
        return
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)


def post_json(http, path, body) -> httpx.Response:
    return http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def mutate(value, path: list, replacement):
    """`value` with the node at `path` (list of keys/indexes) replaced; out-of-range paths add a key."""
    if not path:
        return replacement
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        key = head if isinstance(head, str) else (list(value)[head % len(value)] if value else "x")
        return {**value, key: mutate(value.get(key), rest, replacement)}
    if isinstance(value, list) and value:
        i = head % len(value) if isinstance(head, int) else 0
        return value[:i] + [mutate(value[i], rest, replacement)] + value[i + 1:]
    return replacement


@pytest.mark.parametrize("path", list(ENDPOINTS))
@FUZZ
@given(data=st.data())
def test_schema_valid_requests(http, request_schemas, path, data):
    """Requests the schema allows: answered (or refused for a reason the schema cannot express)."""
    check_answer(post_json(http, path, data.draw(from_schema(request_schemas[path]))))


@pytest.mark.parametrize("path", list(ENDPOINTS))
@FUZZ
@given(data=st.data(), where=st.lists(st.integers(0, 5) | st.sampled_from(
    ["messages", "role", "content", "tools", "function", "parameters", "prompt", "stop", "type", "tool_calls",
     "arguments", "response_format", "json_schema", "schema", "max_tokens", "temperature", "zzz", "options",
     "images", "format", "think", "num_predict", "tool_choice", "logprobs", "n"]), max_size=5),
       replacement=ANY_JSON)
def test_mutated_requests(http, request_schemas, path, data, where, replacement):
    """Wrong types, unknown roles and fields, broken tool schemas: valid requests with one node replaced."""
    body = data.draw(from_schema(request_schemas[path]))
    check_answer(post_json(http, path, mutate(body, where, replacement)))


@pytest.mark.parametrize("path", list(ENDPOINTS))
@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.builds(lambda s, n: s[:n], st.sampled_from([b'{"messages": [{"role": "user", "content": "hi"}]}',
                                                          b'{"prompt": "hi", "max_tokens": 3}']), st.integers(0, 40)))
def test_malformed_bodies(http, path, raw):
    check_answer(http.post(path, content=raw, headers={"content-type": "application/json"}))


def test_hostile_requests(http, fuzz_server):
    chat = "/v1/chat/completions"
    cases = [
        (http.post(chat, content=b"x" * (BODY_LIMIT + 1), headers={"content-type": "application/json"}), 413),
        (http.post(chat, content=iter([b"[" * 40000] * 2), headers={"content-type": "application/json"}), 413),
        (http.post(chat, content=b"[" * 5000 + b"]" * 5000, headers={"content-type": "application/json"}), 400),
        (http.post(chat, content=b'{"messages": []}', headers={"content-type": "text/plain"}), 415),
        (post_json(http, chat, {"messages": [{"role": "user", "content": "word " * 3000}]}), 400),
        (post_json(http, chat, {"messages": [{"role": "root", "content": "hi"}]}), 400),
        (post_json(http, chat, {"messages": [{"role": "user", "content": "hi"}], "temperature": float("nan")}), 400),
        (http.post(chat, content=b'{"messages": [{"role": "user", "content": "hi"}], "top_p": 1e999}',
                   headers={"content-type": "application/json"}), 400),
        (post_json(http, chat, {"messages": [{"role": "user", "content": "hi"}],
                                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 7}}}]}),
         400),
        (post_json(http, chat, {"messages": [{"role": "user", "content": "hi"}],
                                "tools": [{"type": "function", "function": {"name": "bad name!"}}]}), 400),
        (http.post(chat, content=b'{"messages": [{"role": "user", "content": "hi \\ud800"}]}',
                   headers={"content-type": "application/json"}), 400),
        (http.post("/v1/completions", content=b'{"prompt": "\\udfff"}', headers={"content-type": "application/json"}),
         400),
        (http.post(chat, content=b'{"messages": [{"role": "user", "content": "hi"}], "stop": "\\udc00"}',
                   headers={"content-type": "application/json"}), 400),
        (http.post(chat, content=b'\xff\xfe{"prompt": 1}', headers={"content-type": "application/json"}), 400),
        (http.get(chat), 405),
        (http.get("/v1/nothing"), 404),
        (http.get("/health", headers={"host": "rebound.example.com"}), 400),
        (http.post("/api/chat", content=b"x" * (BODY_LIMIT + 1), headers={"content-type": "application/json"}), 413),
        (post_json(http, "/api/chat", {"model": "m", "messages": [{"role": "user", "content": "word " * 3000}]}),
         400),
        (post_json(http, "/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi",
                                                                    "images": ["not base64!"]}]}), 400),
        (post_json(http, "/api/generate", {"model": "m", "prompt": "hi", "options": {"temperature": -1}}), 400),
        (post_json(http, "/api/generate", {"model": "m", "prompt": "hi", "format": {"type": "array",
                                                                                      "minItems": 10**6}}), 400),
        (http.post("/api/delete", content=b'{"model": "m"}', headers={"content-type": "application/json"}), 405),
        (http.get("/api/nothing"), 404),
        (http.get("/api/tags", headers={"host": "rebound.example.com"}), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        check_answer(response)
    assert post_json(http, chat, {"messages": [{"role": "user", "content": "word " * 3000}]}).json()["error"][
        "code"] == "context_length_exceeded"


def test_still_healthy_afterwards(http, fuzz_server):
    """Runs last in this module: the server survived everything above and logged no error."""
    assert http.get("/health").json()["status"] == "ok"
    assert fuzz_server.process.poll() is None
    log = fuzz_server.log()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
