"""Images through `gemma-edge serve` and the `openai` client, on the tiny Gemma 3 text+mmproj pair our
converter writes; the library's answer on the same messages is the oracle."""
from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.convert.tiny_gemma3_vision import IMAGE_SIZE
from tests.runtime.tiny_vision import gemma3_vision_pair
from tests.server.conftest import serve_argv, start_server, stop_server


def data_url(fmt: str, pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def seeded(side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)


def image_message(url: str, text: str = "Describe this.") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def pair():
    return gemma3_vision_pair()[0]


@pytest.fixture(scope="module")
def vision_server(pair):
    running = start_server(serve_argv(pair, "--ctx-size", "256", "--no-prompt-cache"))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def client(vision_server):
    return openai.OpenAI(base_url=vision_server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_an_image_data_url_answers_like_the_library(client, pair, tmp_path):
    from gemma_edge.api import load

    pixels = seeded(IMAGE_SIZE)
    reply = client.chat.completions.create(model="m", messages=image_message(data_url("PNG", pixels)),
                                           temperature=0, max_tokens=6)
    path = tmp_path / "same.png"
    Image.fromarray(pixels).save(path)
    model = load(str(pair), n_ctx=256, n_threads=1)
    expected = model.generate([{"role": "user", "content": [{"type": "image", "path": str(path)},
                                                           {"type": "text", "text": "Describe this."}]}],
                              temperature=0, max_tokens=6)
    assert reply.choices[0].message.content == expected.content
    assert reply.usage.prompt_tokens == expected.usage["prompt_tokens"]


@pytest.mark.parametrize("content, reason", [
    ([{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}], "no audio encoder"),
    ([{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}], "--allow-remote-images"),
    ([{"type": "image_url", "image_url": {"url": "file:///etc/hostname"}}], "only data: URLs"),
    ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}], "not an image"),
])
def test_bad_media_is_a_400_through_the_client(client, content, reason):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}], max_tokens=2)
    assert reason in e.value.body["message"] and e.value.body["param"].startswith("messages[0].content[0]")


def test_a_20_mb_image_fits_while_bigger_ones_are_refused(vision_server):
    # BMP stores pixels raw: 2600^2 is 20.3 MB (under the 20 MiB media limit), 2700^2 is 21.9 MB (over it)
    fits = image_message(data_url("BMP", seeded(2600)))
    reply = vision_server.post("/v1/chat/completions", json={"messages": fits, "max_tokens": 1})
    assert reply.status_code == 200, reply.text
    too_big = image_message(data_url("BMP", seeded(2700)))
    refused = vision_server.post("/v1/chat/completions", json={"messages": too_big, "max_tokens": 1})
    assert refused.status_code == 400 and "over the 21.0 MB limit" in refused.json()["error"]["message"]
    body = b'{"messages": [], "pad": "' + b"x" * (32 << 20) + b'"}'
    try:
        huge = vision_server.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert huge.status_code == 413
    except httpx.WriteError:  # the server answered 413 and closed before the whole body was sent
        pass


def test_remote_images_only_when_the_server_allows_them(pair):
    from tests.runtime.test_media import Site

    site = Site()
    buffer = io.BytesIO()
    Image.fromarray(seeded(IMAGE_SIZE)).save(buffer, "PNG")
    site.routes["/cat.png"] = (200, {"Content-Length": str(len(buffer.getvalue()))}, buffer.getvalue(), 0)
    running = start_server(serve_argv(pair, "--ctx-size", "256", "--no-prompt-cache", "--allow-remote-images"))
    try:
        remote = running.post("/v1/chat/completions", json={
            "messages": image_message(site.url + "/cat.png"), "max_tokens": 2, "temperature": 0})
        inline = running.post("/v1/chat/completions", json={
            "messages": image_message(data_url("PNG", seeded(IMAGE_SIZE))), "max_tokens": 2, "temperature": 0})
        assert remote.status_code == inline.status_code == 200, remote.text
        assert remote.json()["choices"][0]["message"] == inline.json()["choices"][0]["message"]
        missing = running.post("/v1/chat/completions", json={"messages": image_message(site.url + "/gone.png")})
        assert missing.status_code == 400 and "HTTP 404" in missing.json()["error"]["message"]
    finally:
        stop_server(running)
        site.server.shutdown()
        site.server.server_close()
