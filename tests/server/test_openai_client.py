"""The official `openai` client against a real `gemma-edge serve` process on loopback. Oracle: the
library (`Model.generate`, greedy, fresh KV cache) answering the same request in-process; the server
must add nothing and lose nothing."""
from __future__ import annotations

import json
import threading
import time

import httpx
import jsonschema
import openai
import pytest

from tests.server.conftest import library_answer, serve_argv, start_server, stop_server

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}]
COUNTING = "1, 2, 3, 4, 5, 6,"  # a base model keeps counting: output that runs to max_tokens


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_and_health(server, client, embedded_model_path):
    """Also: no CORS by default, so a web page cannot read answers."""
    from gemma_edge.registry import resolve

    page = server.get("/v1/models", headers={"origin": "http://app.example"})
    assert page.status_code == 200 and "access-control-allow-origin" not in page.headers

    _, entry = resolve(embedded_model_path)
    assert [m.id for m in client.models.list().data] == [entry.name if entry else embedded_model_path.stem]
    assert server.get("/health").json()["status"] == "ok"


def test_chat_equals_the_library(client, library_model):
    expected = library_answer(library_model, MESSAGES, temperature=0, max_tokens=16)
    reply = client.chat.completions.create(model="any", messages=MESSAGES, temperature=0, max_tokens=16)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected.content
    assert choice.finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == expected.usage["prompt_tokens"]
    assert reply.usage.completion_tokens == expected.usage["completion_tokens"]
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")


def test_streamed_chat_equals_the_library(client, library_model):
    expected = library_answer(library_model, MESSAGES, temperature=0, max_tokens=16)
    chunks = list(client.chat.completions.create(model="any", messages=MESSAGES, temperature=0, max_tokens=16,
                                                 stream=True, stream_options={"include_usage": True}))
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in with_choices) == expected.content
    assert with_choices[-1].choices[0].finish_reason == expected.finish_reason
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    assert chunks[-1].usage.completion_tokens == expected.usage["completion_tokens"]
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_text_completion_equals_the_library(client, library_model, stream):
    expected = library_answer(library_model, "The three primary colours are", raw=True, temperature=0, max_tokens=12)
    if stream:
        chunks = list(client.completions.create(model="any", prompt="The three primary colours are", temperature=0,
                                                max_tokens=12, stream=True))
        text, finish = "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason
    else:
        reply = client.completions.create(model="any", prompt="The three primary colours are", temperature=0,
                                          max_tokens=12)
        text, finish = reply.choices[0].text, reply.choices[0].finish_reason
        assert reply.usage.completion_tokens == expected.usage["completion_tokens"]
    assert text == expected.content and finish == expected.finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_cuts_the_output(client, library_model, stream):
    full = library_answer(library_model, COUNTING, raw=True, temperature=0, max_tokens=24).content
    stop = full[len(full) // 2:len(full) // 2 + 2]
    expected = full[:full.find(stop)]
    stops = [f"never-seen-{i}" for i in range(7)] + [stop]  # more than OpenAI's 4
    kw = dict(model="any", prompt=COUNTING, temperature=0, max_tokens=24, stop=stops)
    if stream:
        chunks = list(client.completions.create(stream=True, **kw))
        text, finish = "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason
    else:
        reply = client.completions.create(**kw)
        text, finish = reply.choices[0].text, reply.choices[0].finish_reason
    assert text == expected and finish == "stop"


def test_json_schema_response_format_is_enforced(client):
    sch = {"type": "object", "properties": {"capital": {"type": "string", "maxLength": 12}},
           "required": ["capital"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model="any", messages=MESSAGES, temperature=0, max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": sch}})
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), sch)


@pytest.mark.parametrize("messages, code_or_text", [
    ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
    ([{"role": "user", "content": "word " * 3000}], "context_length_exceeded"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}],
     "no projector loaded"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}, "no tool-call syntax"),
])
def test_bad_requests_are_400_through_the_client(client, messages, code_or_text):
    extra = messages if isinstance(messages, dict) else {}
    messages = MESSAGES if extra else messages
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="any", messages=messages, max_tokens=4, **extra)
    assert e.value.status_code == 400
    error = e.value.body
    assert code_or_text in (error.get("code"), error.get("param")) or code_or_text in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_n_choices_are_generated_one_after_another(client, library_model, stream):
    """Choice i is the library's answer with seed + i."""
    expected = [library_answer(library_model, MESSAGES, temperature=0.9, seed=5 + i, max_tokens=8).content
                for i in range(3)]
    kw = dict(model="any", messages=MESSAGES, temperature=0.9, seed=5, max_tokens=8, n=3)
    if stream:
        texts = ["", "", ""]
        for chunk in client.chat.completions.create(stream=True, **kw):
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
    else:
        reply = client.chat.completions.create(**kw)
        texts = [c.message.content for c in sorted(reply.choices, key=lambda c: c.index)]
        assert reply.usage.completion_tokens == 3 * 8
    assert texts == expected


@pytest.fixture(scope="module")
def logits_oracle(embedded_model_path):
    """llama.cpp's own logits for every position (llama-cpp-python with logits_all), on a small context."""
    from gemma_edge.llama import llama_cpp

    return llama_cpp().Llama(str(embedded_model_path), n_ctx=96, n_batch=96, n_threads=1, logits_all=True,
                             verbose=False)


def test_completion_logprobs_equal_llama_cpps(client, logits_oracle):
    expected = logits_oracle.create_completion(COUNTING, max_tokens=2, temperature=0, logprobs=3)["choices"][0]
    reply = client.completions.create(model="any", prompt=COUNTING, max_tokens=2, temperature=0, logprobs=3)
    got = reply.choices[0].logprobs
    assert reply.choices[0].text == expected["text"] and got.tokens == expected["logprobs"]["tokens"]
    assert got.token_logprobs == pytest.approx(expected["logprobs"]["token_logprobs"], abs=2e-3)
    assert got.text_offset == expected["logprobs"]["text_offset"]
    for ours, theirs in zip(got.top_logprobs, expected["logprobs"]["top_logprobs"]):
        assert ours.keys() == theirs.keys()
        assert list(ours.values()) == pytest.approx([theirs[k] for k in ours], abs=2e-3)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_logprobs_equal_llama_cpps(client, library_model, logits_oracle, stream):
    """The logprob of each generated token, and its top alternatives, under the logits llama.cpp
    computes for the same prompt tokens."""
    import numpy as np

    library_model.engine.reset()
    generation = library_model.stream(MESSAGES, temperature=0, max_tokens=8)
    generation.consume()
    prompt, generated = generation.decode_run.prompt_tokens, generation.decode_run.tokens
    logits_oracle.reset()
    logits_oracle.eval(prompt)
    for token in generated[:-1]:  # one at a time, as generation evaluates them (batch sizes change the numerics)
        logits_oracle.eval([token])
    rows = logits_oracle.logits_to_logprobs(logits_oracle.scores[len(prompt) - 1:len(prompt) - 1 + len(generated)])
    kw = dict(model="any", messages=MESSAGES, temperature=0, max_tokens=8, logprobs=True, top_logprobs=4)
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kw))
        [content] = [c.choices[0].logprobs.content for c in chunks if c.choices and c.choices[0].logprobs]
    else:
        content = client.chat.completions.create(**kw).choices[0].logprobs.content
    assert [t.token for t in content] == [library_model.engine.token_piece(i)["token"] for i in generated]
    for token, row, chosen in zip(content, rows, generated):
        assert token.logprob == pytest.approx(float(row[chosen]), abs=2e-3)
        best = np.argsort(-row)[:4]
        piece = library_model.engine.token_piece
        assert [t.token for t in token.top_logprobs] == [piece(int(i))["token"] for i in best]
        assert [t.logprob for t in token.top_logprobs] == pytest.approx([float(row[i]) for i in best], abs=2e-3)
        assert bytes(token.bytes).decode("utf-8", errors="replace") == token.token


def test_prompt_cache_reports_cached_tokens(embedded_model_path):
    """With the cache on (the default), a repeated prompt is only partly evaluated again."""
    running = start_server(serve_argv(embedded_model_path))
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
        first = client.chat.completions.create(model="m", messages=MESSAGES, temperature=0, max_tokens=2)
        second = client.chat.completions.create(model="m", messages=MESSAGES, temperature=0, max_tokens=2)
        assert first.usage.prompt_tokens == second.usage.prompt_tokens
        assert second.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens - 1
        assert second.choices[0].message.content == first.choices[0].message.content
    finally:
        stop_server(running)


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_cancels_the_generation(server, stream):
    """A client that leaves frees the model at once, not after its 1000 tokens."""
    body = {"prompt": COUNTING, "max_tokens": 1000, "temperature": 0, "stream": stream}
    if stream:
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                    break  # generation is running
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/completions", json=body, timeout=httpx.Timeout(60, read=1.5))
    wait_until(lambda: not server.get("/health").json()["busy"], 5,
               "generation still running 5 s after the client left")
    assert server.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1}).status_code == 200


def test_queue_is_first_come_first_served(server):
    """Requests that wait for the model get it in arrival order."""
    finished = []

    def call(name):
        server.post("/v1/completions", json={"prompt": f"{name} says", "max_tokens": 1})
        finished.append(name)

    blocker = {"prompt": COUNTING, "max_tokens": 1000, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=blocker, timeout=60) as response:
        lines = response.iter_lines()
        next(lines)
        threads = []
        for i, name in enumerate(["first", "second", "third", "fourth"]):
            threads.append(threading.Thread(target=call, args=(name,)))
            threads[-1].start()
            wait_until(lambda: server.get("/health").json()["waiting"] == i + 1, 10, f"{name} never queued")
    for thread in threads:
        thread.join(60)
    assert finished == ["first", "second", "third", "fourth"]


def test_api_key(embedded_model_path):
    key = "sk-test-" + "k3y" * 8
    running = start_server(serve_argv(embedded_model_path, "--api-key", key, "--cors-origin", "http://app.example"))
    try:
        anonymous = openai.OpenAI(base_url=running.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            anonymous.models.list()
        with pytest.raises(openai.AuthenticationError):
            anonymous.chat.completions.create(model="m", messages=MESSAGES, max_tokens=1)
        assert running.post("/v1/completions", json={"prompt": "x"}).status_code == 401  # no header at all
        assert running.get("/health").status_code == 200
        keyed = openai.OpenAI(base_url=running.url + "/v1", api_key=key, max_retries=0)
        assert keyed.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2).choices
        assert key not in running.log() and "k3yk3y" not in running.log()
        # A browser's preflight carries no key; the configured origin gets CORS headers, others none.
        preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
        allowed = httpx.options(running.url + "/v1/chat/completions", headers={"origin": "http://app.example",
                                                                               **preflight})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://app.example"
        other = httpx.options(running.url + "/v1/chat/completions", headers={"origin": "http://evil.example",
                                                                             **preflight})
        assert "access-control-allow-origin" not in other.headers
    finally:
        stop_server(running)


def test_timeout_and_full_queue(embedded_model_path):
    running = start_server(serve_argv(embedded_model_path, "--timeout", "2", "--max-queue", "1"))
    try:
        long = {"prompt": COUNTING, "max_tokens": 2000, "temperature": 0}
        answers = {}

        def call(name):
            started = time.monotonic()
            answers[name] = (running.post("/v1/completions", json=long), time.monotonic() - started)

        first = threading.Thread(target=call, args=("first",))
        first.start()
        wait_until(lambda: running.get("/health").json()["busy"], 5, "first request never started")
        second = threading.Thread(target=call, args=("second",))
        second.start()
        wait_until(lambda: running.get("/health").json()["waiting"] == 1, 5, "second request never queued")
        full = running.post("/v1/completions", json=long)
        assert full.status_code == 503 and full.json()["error"]["code"] == "queue_full"
        first.join(30)
        second.join(30)
        for name in ("first", "second"):
            response, elapsed = answers[name]
            assert response.status_code == 504 and response.json()["error"]["code"] == "timeout", name
            assert elapsed < 10
        assert running.get("/health").json() == {"status": "ok", "busy": False, "waiting": 0}
        # Streaming: the tokens so far, then an error event in OpenAI's shape, and the stream ends.
        with httpx.stream("POST", running.url + "/v1/completions", json={**long, "stream": True}, timeout=30) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        assert r.status_code == 200 and events[0]["choices"][0]["text"]
        assert events[-1]["error"]["code"] == "timeout"
    finally:
        stop_server(running)


def test_serve_refuses_a_busy_port_in_one_line(embedded_model_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "gemma_edge", "serve", str(embedded_model_path),
                                 "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"gemma-edge: error: cannot listen on 127.0.0.1:{port} (Address already in use)"]


def test_stops_promptly_while_generating(embedded_model_path):
    """SIGTERM during a long generation: the process exits within uvicorn's grace period, not after
    the generation's 1000 tokens."""
    running = start_server(serve_argv(embedded_model_path))
    try:
        streaming = httpx.stream("POST", running.url + "/v1/completions", timeout=60,
                                 json={"prompt": COUNTING, "max_tokens": 1000, "temperature": 0, "stream": True})
        with streaming as response:
            next(response.iter_lines())
            started = time.monotonic()
            running.process.terminate()
            running.process.wait(15)
        assert time.monotonic() - started < 10
    finally:
        stop_server(running)
