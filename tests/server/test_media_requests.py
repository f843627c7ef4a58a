"""Images and audio in chat requests, before any model: which sources `mapping` lets through, and
`server.media.decode_media` on real encoded files (Pillow, the stdlib wave module)."""
from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest
from PIL import Image

from gemma_edge.media import Limits, Media
from gemma_edge.server import mapping, schema
from gemma_edge.server.errors import RequestError
from gemma_edge.server.media import MAX_MEDIA_PARTS, TEXT_BODY_BYTES, decode_media, default_body_limit, has_media

LIMITS = dict(default_max_tokens=512, max_tokens_limit=None)


def chat(content) -> list[dict]:
    body = {"messages": [{"role": "user", "content": content}]}
    schema.validate(body, schema.CHAT_REQUEST)
    return mapping.chat_request(body, **LIMITS).prompt


def png_data_url(width=6, height=4) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(width * height * 3, dtype=np.uint8).reshape(height, width, 3)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def wav_base64(seconds=0.25, rate=16000) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return base64.b64encode(buffer.getvalue()).decode()


def image_url(url, **extra):
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def both(kind: str) -> bool:
    return True


def nothing(kind: str) -> bool:
    return False


def test_image_url_and_input_audio_parts_become_gemma_edge_parts():
    url, audio = png_data_url(), wav_base64()
    content = [image_url(url, detail="low"), {"type": "text", "text": "what is this?"},
               {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}]
    prompt = chat(content)
    assert prompt[0]["content"] == [
        {"type": "image", "url": url}, {"type": "text", "text": "what is this?"},
        {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}]
    assert has_media(prompt) and not has_media(chat("just text"))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", "ftp://example.com/a.png", "relative.png"])
def test_the_server_never_reads_its_own_files_for_a_client(url):
    with pytest.raises(RequestError) as e:
        chat([image_url(url)])
    assert e.value.status == 400 and e.value.param == "messages[0].content[0].image_url"
    assert "only data: URLs" in e.value.message


@pytest.mark.parametrize("part, reason", [
    ({"type": "image", "image_url": {"url": "file:///etc/passwd"}}, "send images as image_url parts"),
    ({"type": "audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "send audio as input_audio parts"),
    ({"type": "image_url", "image_url": {}}, "needs a URL string"),
    ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "ogg"}}, "'format' (one of wav, mp3, flac)"),
    ({"type": "input_audio", "input_audio": {"format": "wav"}}, "needs 'data'"),
])
def test_malformed_or_refused_media_parts(part, reason):
    with pytest.raises(RequestError) as e:
        chat([part])
    assert e.value.status == 400 and reason in e.value.message


def test_decoding_replaces_parts_with_media_and_keeps_the_request():
    prompt = chat([image_url(png_data_url()), {"type": "text", "text": "hi"},
                   {"type": "input_audio", "input_audio": {"data": wav_base64(), "format": "wav"}}])
    decoded = decode_media(prompt, supports=both, allow_remote=False, limits=Limits())
    image, text, audio = decoded[0]["content"]
    assert image["type"] == "image" and isinstance(image["media"], Media) and (image["media"].width, image["media"].height) == (6, 4)
    assert text == {"type": "text", "text": "hi"}
    assert audio["type"] == "audio" and audio["media"].data == base64.b64decode(wav_base64())
    assert prompt[0]["content"][0] == {"type": "image", "url": png_data_url()}  # the input is left as it was


@pytest.mark.parametrize("content, supports, reason, code", [
    ([image_url(png_data_url())], nothing, "no projector loaded: start serve with --mmproj FILE", "unsupported_content"),
    ([{"type": "input_audio", "input_audio": {"data": wav_base64(), "format": "wav"}}], lambda k: k == "image",
     "its projector has no audio encoder", "unsupported_content"),
    ([image_url("data:image/png;base64,AA==")], both, "not an image", "invalid_media"),
    ([image_url("data:image/png;base64,%%%")], both, "invalid base64", "invalid_media"),
    ([image_url("https://example.com/cat.png")], both, "--allow-remote-images", "invalid_media"),
    ([image_url(png_data_url())] * (MAX_MEDIA_PARTS + 1), both, f"at most {MAX_MEDIA_PARTS}", "too_many_media"),
])
def test_refusals_are_400_naming_the_part(content, supports, reason, code):
    with pytest.raises(RequestError) as e:
        decode_media(chat(content), supports=supports, allow_remote=False, limits=Limits())
    assert e.value.status == 400 and reason in e.value.message and e.value.code == code
    assert "\n" not in e.value.message
    if code != "too_many_media":
        assert e.value.param == "messages[0].content[0]"


def test_pixel_and_byte_limits_apply_to_requests():
    prompt = chat([image_url(png_data_url(6, 4))])
    with pytest.raises(RequestError, match="more than 23 pixels"):
        decode_media(prompt, supports=both, allow_remote=False, limits=Limits(max_pixels=23))
    with pytest.raises(RequestError, match="over the"):
        decode_media(prompt, supports=both, allow_remote=False, limits=Limits(max_bytes=20))


def test_body_limit_makes_room_for_one_image_at_the_media_limit():
    limits = Limits()
    assert default_body_limit(False, limits) == TEXT_BODY_BYTES
    with_media = default_body_limit(True, limits)
    encoded_20_mb = len(base64.b64encode(b"\0" * limits.max_bytes))
    assert TEXT_BODY_BYTES + encoded_20_mb == with_media
