"""32 concurrent clients × 5 requests against one server process on loopback: zero errors, every
response complete and well-formed (checked with the openai package's response models), and no
cross-talk: each client's greedy output equals what the same request gave when sent alone."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

pytestmark = pytest.mark.slow

CLIENTS, REQUESTS, MAX_TOKENS = 32, 5, 4
NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi"]
TOPICS = ["rivers", "cats", "the moon", "bread"]


def request_for(client: int, stream: bool) -> tuple[str, dict]:
    """Even clients chat, odd ones complete text; every client has its own prompt."""
    start = 7 * client + 3  # distinct numbers: outputs differ between clients, so cross-talk shows
    text = f"{NAMES[client % 8]} counted {TOPICS[client // 8]}: {start}, {start + 1}, {start + 2},"
    common = {"model": "m", "temperature": 0, "max_tokens": MAX_TOKENS, "stream": stream}
    if client % 2 == 0:
        return "/v1/chat/completions", {**common, "messages": [{"role": "user", "content": text}]}
    return "/v1/completions", {**common, "prompt": text}


def read_stream(path: str, body: str) -> tuple[str, str]:
    """The text and finish reason of a complete, well-formed SSE stream."""
    lines = [line for line in body.split("\n") if line]
    assert lines[-1] == "data: [DONE]", "stream not terminated"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(line.startswith("data: ") for line in lines)
    assert len({c["id"] for c in chunks}) == 1, "chunks of one stream carry different ids"
    if path == "/v1/chat/completions":
        parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
        text = "".join(c.choices[0].delta.content or "" for c in parsed)
        finish = parsed[-1].choices[0].finish_reason
    else:
        parsed = [Completion.model_validate({**c, "choices": [{**c["choices"][0],
                                                               "finish_reason": c["choices"][0]["finish_reason"] or "stop"}]})
                  for c in chunks]
        text = "".join(c.choices[0].text for c in parsed)
        finish = chunks[-1]["choices"][0]["finish_reason"]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    return text, finish


def read_whole(path: str, body: dict) -> tuple[str, str]:
    if path == "/v1/chat/completions":
        parsed = ChatCompletion.model_validate(body)
        return parsed.choices[0].message.content, parsed.choices[0].finish_reason
    parsed = Completion.model_validate(body)
    return parsed.choices[0].text, parsed.choices[0].finish_reason


async def one(http: httpx.AsyncClient, client: int, stream: bool) -> tuple[str, str]:
    path, body = request_for(client, stream)
    response = await http.post(path, json=body)
    assert response.status_code == 200, response.text
    if stream:
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_stream(path, response.text)
    return read_whole(path, response.json())


async def sequential(url: str) -> dict[int, tuple[str, str]]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        return {c: await one(http, c, stream=False) for c in range(CLIENTS)}


async def concurrent(url: str) -> dict[int, list[tuple[str, str]]]:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        async def client(c):
            return [await one(http, c, stream=(c + r) % 2 == 0) for r in range(REQUESTS)]

        results = await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    return dict(enumerate(results))


def test_32_clients_5_requests_each(server):
    alone = asyncio.run(sequential(server.url))
    assert len({text for text, _ in alone.values()}) > CLIENTS // 2, "prompts too alike to detect cross-talk"
    together = asyncio.run(concurrent(server.url))
    for c in range(CLIENTS):
        assert together[c] == [alone[c]] * REQUESTS, f"client {c}"
    assert server.get("/health").json() == {"status": "ok", "busy": False, "waiting": 0}
    assert "Traceback" not in server.log()
