"""The server loaded for speculative decoding (`serve --spec ngram`): a request's greedy reply is the same
with drafting (`"speculative": "ngram"`) and without (`"off"`), streamed or not, and its usage counts the
accepted drafts in OpenAI's predicted-output fields."""
from __future__ import annotations

import pytest

from tests.runtime.test_speculative import COPY
from tests.server.conftest import serve_argv, start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spec_server(embedded_model_path):
    running = start_server(serve_argv(embedded_model_path, "--no-prompt-cache", "--spec", "ngram"))
    yield running
    stop_server(running)


def completion(server, spec: str, stream: bool) -> tuple[str, dict | None]:
    import json

    body = {"prompt": COPY, "max_tokens": 40, "temperature": 0, "speculative": spec, "stream": stream,
            "stream_options": {"include_usage": True}} if stream else \
        {"prompt": COPY, "max_tokens": 40, "temperature": 0, "speculative": spec}
    response = server.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    if not stream:
        doc = response.json()
        return doc["choices"][0]["text"], doc["usage"]
    text, usage = "", None
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            text += "".join(choice["text"] for choice in chunk["choices"])
            usage = chunk.get("usage") or usage
    return text, usage


@pytest.mark.parametrize("stream", [False, True])
def test_reply_is_the_same_with_and_without_drafting(spec_server, stream):
    plain, plain_usage = completion(spec_server, "off", stream)
    drafted, usage = completion(spec_server, "ngram", stream)
    assert drafted == plain and len(plain) > 40
    assert usage["completion_tokens_details"]["accepted_prediction_tokens"] > 10
    assert "completion_tokens_details" not in plain_usage or \
        not plain_usage["completion_tokens_details"].get("accepted_prediction_tokens")
