"""gemma_edge.media on real files written by the test (Pillow, the stdlib wave module) and a local
HTTP server; transformers' load_image / convert_to_rgb are the pixel oracle."""
from __future__ import annotations

import base64
import io
import struct
import threading
import time
import warnings
import wave
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image, ImageOps

from gemma_edge.media import Limits, Media, MediaError, load_file, load_media

LOSSLESS = ("PNG", "WEBP", "GIF", "BMP")


def pattern(width=7, height=5, seed=0):
    """A small RGB image whose every pixel differs, so a flip or transpose cannot go unnoticed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def encode(array, fmt, **options):
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if fmt == "GIF":  # a palette image: keep the test's colours exact by quantising first
        image = image.quantize(colors=256)
    if fmt == "WEBP":
        options.setdefault("lossless", True)
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pixels(media: Media) -> np.ndarray:
    return np.frombuffer(media.rgb, dtype=np.uint8).reshape(media.height, media.width, 3)


def oracle(path) -> np.ndarray:
    """What a Gemma processor sees: transformers' load_image, then its convert_to_rgb."""
    from transformers.image_transforms import convert_to_rgb
    from transformers.image_utils import load_image

    upright = ImageOps.exif_transpose(Image.open(path))  # load_image would drop alpha before convert_to_rgb
    assert np.array_equal(np.array(load_image(str(path))), np.array(upright.convert("RGB")))
    return convert_to_rgb(upright, return_numpy=True)


# --- images -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", LOSSLESS + ("JPEG",))
def test_each_allowed_format_decodes_like_transformers(tmp_path, fmt):
    array = pattern()
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(encode(array, fmt))
    media = load_file(path, "image")
    assert (media.kind, media.width, media.height) == ("image", 7, 5)
    assert np.array_equal(pixels(media), oracle(path))
    if fmt in ("PNG", "WEBP", "BMP"):
        assert np.array_equal(pixels(media), array)


def test_exif_rotated_jpeg_is_upright_like_transformers_load_image(tmp_path):
    array = pattern(12, 8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(array).save(path, "JPEG", exif=exif.tobytes(), quality=95)
    media = load_file(path, "image")
    assert (media.width, media.height) == (8, 12)
    assert np.array_equal(pixels(media), oracle(path))


def test_transparency_is_composited_onto_white_like_the_processors(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = np.arange(16, dtype=np.uint8).reshape(4, 4) * 17
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    media = load_file(path, "image")
    assert np.array_equal(pixels(media), oracle(path))
    assert pixels(media)[0, 0].tolist() == [255, 255, 255]  # fully transparent -> white


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 3), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(path).n_frames == 2
    assert set(map(tuple, pixels(load_file(path, "image")).reshape(-1, 3))) == {(255, 0, 0)}


def test_digest_is_the_decoded_pixels_not_the_encoding(tmp_path):
    array = pattern()
    png = load_media({"type": "image", "bytes": encode(array, "PNG")})
    bmp = load_media({"type": "image", "bytes": encode(array, "BMP")})
    other = load_media({"type": "image", "bytes": encode(pattern(seed=1), "PNG")})
    assert png.digest == bmp.digest != other.digest
    transposed = load_media({"type": "image", "bytes": encode(np.ascontiguousarray(array.reshape(7, 5, 3)), "PNG")})
    assert transposed.rgb == png.rgb and transposed.digest != png.digest  # same bytes, other shape


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width, height):
    """A PNG claiming a huge image with a few bytes of pixel data (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [8_000, 10_000, 20_000, 100_000])
def test_decompression_bomb_headers_are_refused_before_decoding(side):
    # 8_000^2 is over our limit only, 10_000^2 in Pillow's warning band, the others past its error limit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(MediaError, match="pixels"):
            load_media({"type": "image", "bytes": png_header_only(side, side)})
    assert caught == []  # Pillow's warning became the error, it did not also print


def test_pixel_limit_is_configurable(tmp_path):
    data = encode(pattern(10, 10), "PNG")
    with pytest.raises(MediaError, match="100x... image|more than 99 pixels"):
        load_media({"type": "image", "bytes": data}, limits=Limits(max_pixels=99))
    assert load_media({"type": "image", "bytes": data}, limits=Limits(max_pixels=100)).width == 10


def test_byte_limit_from_argument_and_environment(tmp_path, monkeypatch):
    path = tmp_path / "x.bmp"
    path.write_bytes(encode(pattern(), "BMP"))
    size = path.stat().st_size
    with pytest.raises(MediaError, match=r"x\.bmp: .* MB is over the .* MB limit"):
        load_file(path, "image", limits=Limits(max_bytes=size - 1))
    monkeypatch.setenv("GEMMA_EDGE_MEDIA_MAX_BYTES", str(size - 1))
    with pytest.raises(MediaError, match="over the"):
        load_file(path, "image")
    monkeypatch.setenv("GEMMA_EDGE_MEDIA_MAX_BYTES", str(size))
    assert load_file(path, "image").width == 7
    monkeypatch.setenv("GEMMA_EDGE_MEDIA_MAX_BYTES", "lots")
    with pytest.raises(MediaError, match="GEMMA_EDGE_MEDIA_MAX_BYTES='lots' is not a number"):
        load_file(path, "image")


def test_a_20_mb_limit_by_default():
    assert Limits().max_bytes == 20 * 1024 * 1024


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(encode(pattern(64, 64), "PNG")[:200]), "damaged image"),
    (lambda p: p.write_text("this is not a picture\n"), "not an image in a supported format"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: None, "no such file"),
    (lambda p: Image.new("RGB", (2, 2)).save(p, "TIFF"), "not an image in a supported format"),
    (lambda p: p.write_bytes(b""), "empty image"),
])
def test_bad_files_give_one_line_naming_the_file(tmp_path, make, reason):
    path = tmp_path / "photo.png"
    make(path)
    with pytest.raises(MediaError) as info:
        load_file(path, "image")
    message = str(info.value)
    assert message.startswith(f"{path}: ") and reason in message and "\n" not in message


def test_data_urls_strict_base64():
    data = encode(pattern(), "PNG")
    good = "data:image/png;base64," + base64.b64encode(data).decode()
    assert load_media({"type": "image", "url": good}).width == 7
    assert load_media({"type": "image_url", "image_url": {"url": good}}).width == 7
    cases = {
        "data:image/png;base64,@@@@": "invalid base64",
        "data:image/png;base64," + base64.b64encode(data).decode()[:-2]: "invalid base64",
        "data:image/png," + data.hex(): "not base64",
        "data:text/plain;base64," + base64.b64encode(data).decode(): "expected image/*",
        "data:image/png;base64": "without a comma",
    }
    for url, reason in cases.items():
        with pytest.raises(MediaError, match=reason):
            load_media({"type": "image", "url": url})


def test_data_url_over_the_limit_is_refused_before_decoding():
    url = "data:image/png;base64," + "A" * 4000
    with pytest.raises(MediaError, match="data: URL: .* over the"):
        load_media({"type": "image", "url": url}, limits=Limits(max_bytes=1000))


def test_file_urls_and_paths(tmp_path):
    path = tmp_path / "a b.png"
    path.write_bytes(encode(pattern(), "PNG"))
    assert load_media({"type": "image", "url": path.as_uri()}).width == 7
    assert load_media({"type": "image", "path": str(path)}).width == 7
    assert load_media({"type": "image", "path": path}).width == 7
    with pytest.raises(MediaError, match="must name a local file"):
        load_media({"type": "image", "url": "file://otherhost" + str(path)})


@pytest.mark.parametrize("part, reason", [
    ({"type": "image"}, "exactly one of path, bytes or url"),
    ({"type": "image", "path": "a.png", "bytes": b"x"}, "exactly one of"),
    ({"type": "image", "bytes": "not bytes"}, "bytes must be bytes"),
    ({"type": "video", "path": "a.mp4"}, "unknown media part type 'video'"),
    ({"type": "image", "url": "ftp://example.com/a.png"}, "unsupported URL scheme 'ftp'"),
    ({"type": "image", "url": "relative/a.png"}, "unsupported URL scheme"),
    ({"type": "image_url", "image_url": {}}, "missing image_url.url"),
    ({"type": "image", "url": "https://example.com/a.png"}, "not fetched .*--allow-remote-images"),
])
def test_malformed_parts(part, reason):
    with pytest.raises(MediaError, match=reason):
        load_media(part)


# --- remote images (only with allow_remote) ----------------------------------------------------------

class Site:
    """A local HTTP server: path -> (status, headers, body, seconds between 1 KB pieces)."""

    def __init__(self):
        self.routes = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                status, headers, body, drip = site.routes.get(self.path, (404, {}, b"", 0))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                for start in range(0, len(body), 1024):
                    self.wfile.write(body[start:start + 1024])
                    if drip:
                        self.wfile.flush()
                        time.sleep(drip)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def site():
    server = Site()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_remote_image_only_with_allow_remote(site):
    data = encode(pattern(), "PNG")
    site.routes["/a.png"] = (200, {"Content-Length": str(len(data))}, data, 0)
    site.routes["/moved"] = (302, {"Location": "/a.png", "Content-Length": "0"}, b"", 0)
    part = {"type": "image", "url": site.url + "/a.png"}
    with pytest.raises(MediaError, match="not fetched"):
        load_media(part)
    assert np.array_equal(pixels(load_media(part, allow_remote=True)), pattern())
    assert load_media({"type": "image_url", "image_url": {"url": site.url + "/moved"}}, allow_remote=True).width == 7


def test_remote_fetch_is_size_and_time_limited(site):
    big = encode(pattern(64, 64), "BMP")
    site.routes["/declared"] = (200, {"Content-Length": str(len(big))}, big, 0)
    site.routes["/undeclared"] = (200, {"Connection": "close"}, big, 0)
    site.routes["/slow"] = (200, {"Connection": "close"}, big, 0.2)
    site.routes["/ftp"] = (302, {"Location": "ftp://127.0.0.1/a.png", "Content-Length": "0"}, b"", 0)
    small = Limits(max_bytes=len(big) // 2)
    for route in ("/declared", "/undeclared"):
        with pytest.raises(MediaError, match="over the"):
            load_media({"type": "image", "url": site.url + route}, allow_remote=True, limits=small)
    with pytest.raises(MediaError, match="longer than 0.5 s"):
        load_media({"type": "image", "url": site.url + "/slow"}, allow_remote=True, limits=Limits(fetch_timeout=0.5))
    with pytest.raises(MediaError, match="redirect to a non-http"):
        load_media({"type": "image", "url": site.url + "/ftp"}, allow_remote=True)
    with pytest.raises(MediaError, match="HTTP 404"):
        load_media({"type": "image", "url": site.url + "/missing.png"}, allow_remote=True)


# --- audio --------------------------------------------------------------------------------------------

def wav_bytes(seconds, rate=16000, channels=1, width=2):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(b"\x00" * int(seconds * rate) * channels * width)
    return buffer.getvalue()


def flac_header(seconds, rate=16000):
    """fLaC + a STREAMINFO block (last-block flag set) as the FLAC format specification lays it out."""
    total = int(seconds * rate)
    fields = (rate << 44) | (0 << 41) | (15 << 36) | total  # rate, channels-1, bits-1, total samples
    info = struct.pack(">HH", 4096, 4096) + b"\x00" * 6 + fields.to_bytes(8, "big") + b"\x00" * 16
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info


def test_wav_is_kept_encoded_with_its_duration_checked(tmp_path):
    data = wav_bytes(1.5)
    path = tmp_path / "speech.wav"
    path.write_bytes(data)
    media = load_file(path, "audio")
    assert (media.kind, media.data, media.rgb) == ("audio", data, b"")
    with pytest.raises(MediaError, match=r"speech\.wav: 1\.5 s of audio is longer than the 1 s limit"):
        load_file(path, "audio", limits=Limits(max_audio_seconds=1))
    stereo = wav_bytes(0.9, rate=8000, channels=2)
    assert load_media({"type": "audio", "bytes": stereo}, limits=Limits(max_audio_seconds=1)).data == stereo


def test_truncated_and_foreign_audio(tmp_path):
    with pytest.raises(MediaError, match="truncated WAV"):
        load_media({"type": "audio", "bytes": wav_bytes(1)[:-100]})
    with pytest.raises(MediaError, match="not an audio file"):
        load_media({"type": "audio", "bytes": encode(pattern(), "PNG")})
    with pytest.raises(MediaError, match="not an audio file"):
        load_media({"type": "audio", "bytes": b"OggS" + b"\x00" * 40})


def test_flac_duration_from_streaminfo_and_mp3_by_size():
    assert load_media({"type": "audio", "bytes": flac_header(2)}).kind == "audio"
    with pytest.raises(MediaError, match="2.0 s of audio"):
        load_media({"type": "audio", "bytes": flac_header(2)}, limits=Limits(max_audio_seconds=1))
    mp3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" + b"\x00" * 400
    assert load_media({"type": "audio", "bytes": mp3}).data == mp3
    with pytest.raises(MediaError, match="over the"):
        load_media({"type": "audio", "bytes": mp3}, limits=Limits(max_bytes=100))


def test_openai_input_audio_parts():
    data = wav_bytes(0.5)
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}
    assert load_media(part).data == data
    part["input_audio"]["format"] = "mp3"
    with pytest.raises(MediaError, match="format says mp3 but the data is wav"):
        load_media(part)
    part["input_audio"]["format"] = "ogg"
    with pytest.raises(MediaError, match="format 'ogg' is not one of wav, mp3, flac"):
        load_media(part)
    with pytest.raises(MediaError, match="needs input_audio.data"):
        load_media({"type": "input_audio", "input_audio": {"format": "wav"}})
    url = "data:audio/wav;base64," + base64.b64encode(data).decode()
    assert load_media({"type": "audio", "url": url}).data == data
    with pytest.raises(MediaError, match="expected audio/"):
        load_media({"type": "audio", "url": url.replace("audio/wav", "image/png")})


def test_a_part_carrying_decoded_media_is_used_as_is(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(encode(pattern(), "PNG"))
    media = load_file(path, "image")
    assert load_media({"type": "image", "path": str(path), "media": media}) is media
    assert load_media({"type": "image_url", "media": media}) is media
    with pytest.raises(MediaError, match="'media' must be a decoded audio"):
        load_media({"type": "audio", "media": media})
