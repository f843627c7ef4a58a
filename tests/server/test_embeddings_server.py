"""The official `openai` client's `embeddings.create` against a real `gemma-edge serve` of a tiny
EmbeddingGemma. Oracle: the library (`Model.embed`) in-process on the same GGUF; and the chat/embedding
mismatch answers 400 in OpenAI's shape on both servers."""
from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from tests.convert.tiny_embeddinggemma import tiny_embeddinggemma_gguf
from tests.server.conftest import serve_argv, start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gguf():
    return tiny_embeddinggemma_gguf("f32")


@pytest.fixture(scope="module")
def embedding_server(gguf):
    running = start_server(serve_argv(gguf))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def client(embedding_server):
    return openai.OpenAI(base_url=embedding_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def library(gguf):
    from gemma_edge.api import Model

    model = Model(gguf, n_threads=1)
    yield model
    model.close()


def test_list_input_equals_the_library(client, library) -> None:
    texts = ["the first text", "a second, longer text to embed", "3"]
    reply = client.embeddings.create(model="any", input=texts, encoding_format="float")
    expected, tokens = library.embed_with_usage(texts)
    assert [d.index for d in reply.data] == [0, 1, 2] and reply.object == "list"
    assert np.allclose([d.embedding for d in reply.data], expected, atol=1e-6)
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == tokens


def test_string_input_dimensions_and_base64(client, library) -> None:
    """The openai client asks for base64 by default and decodes it; dimensions truncate and re-normalise."""
    reply = client.embeddings.create(model="any", input="one text", dimensions=16)
    vector = np.array(reply.data[0].embedding, dtype=np.float32)
    assert vector.shape == (16,)
    assert np.allclose(vector, library.embed("one text", dimensions=16), atol=1e-6)
    raw = client.embeddings.with_raw_response.create(model="any", input="one text", encoding_format="base64")
    encoded = raw.http_response.json()["data"][0]["embedding"]
    assert np.allclose(np.frombuffer(base64.b64decode(encoded), dtype="<f4"), library.embed("one text"), atol=1e-6)


def test_task_extension(embedding_server, library) -> None:
    body = embedding_server.post("/v1/embeddings", json={"input": ["x y"], "task": "document"}).json()
    assert np.allclose(body["data"][0]["embedding"], library.embed("x y", task="document"), atol=1e-6)


@pytest.mark.parametrize(("body", "message", "code"), [
    ({"input": [[1, 2, 3]]}, "token arrays", None),
    ({"input": []}, "non-empty list", None),
    ({"input": "x", "dimensions": 1000}, "from 1 to 64", None),
    ({"input": "x", "task": "poetry"}, "unknown embedding task", None),
    ({"input": "x", "encoding_format": "int8"}, "'float' or 'base64'", None),
    ({"input": ["ok", "ga me " * 800]}, "input 1 is", "context_length_exceeded"),
])
def test_bad_requests_answer_400(embedding_server, body, message, code) -> None:
    reply = embedding_server.post("/v1/embeddings", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error" and error["code"] == code


def test_models_lists_an_embedding_model(client, embedding_server) -> None:
    model = embedding_server.get("/v1/models").json()["data"][0]
    assert model["capabilities"]["embeds"] is True and model["capabilities"]["image"] is False
    assert model["context_length"] == 1024
    assert client.models.list().data[0].id == model["id"]


def test_embedding_model_refuses_chat(client) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}])
    assert "embedding model" in info.value.message and info.value.code == "model_cannot_chat"
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        client.completions.create(model="any", prompt="hi")


def test_chat_model_refuses_embeddings(server) -> None:
    chat_client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        chat_client.embeddings.create(model="any", input="hi")
    assert "does not embed" in info.value.message and info.value.code == "model_cannot_embed"


def test_ollama_client_embed(embedding_server, library) -> None:
    """The official `ollama` client's embed (and the older embeddings) against the same server."""
    import ollama

    client = ollama.Client(host=embedding_server.url, timeout=120)
    texts = ["the first text", "a second, longer text to embed"]
    reply = client.embed(model="any", input=texts)
    expected, tokens = library.embed_with_usage(texts)
    assert np.allclose(reply.embeddings, expected, atol=1e-6) and reply.prompt_eval_count == tokens
    assert np.allclose(client.embed(model="any", input="one text", dimensions=16).embeddings[0],
                       library.embed("one text", dimensions=16), atol=1e-6)
    assert np.allclose(client.embeddings(model="any", prompt="one text").embedding, library.embed("one text"),
                       atol=1e-6)
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model="any", input="x", options={"temperature": 0})
    assert info.value.status_code == 400 and "options" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="any", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 400 and "embedding model" in info.value.error

