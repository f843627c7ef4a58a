"""--image/--audio/--mmproj on the command line, chat's /image and /audio: in-process (click's runner)
on the real embedded text-only model and on real files the tests write."""
from __future__ import annotations

import io
import wave

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gemma_edge.cli import main


def invoke(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input)


def one_error_line(result, expected: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("gemma-edge: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def files(tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(image)
    text = tmp_path / "notes.png"
    text.write_text("not a picture\n")
    sound = tmp_path / "note.wav"
    with wave.open(str(sound), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * 1600)
    return {"image": image, "text": text, "sound": sound, "missing": tmp_path / "gone.jpg", "dir": tmp_path}


@pytest.mark.parametrize("command", ["run", "chat"])
@pytest.mark.parametrize("flag, name, reason", [
    ("--image", "missing", "gone.jpg: no such file"),
    ("--image", "text", "notes.png: not an image in a supported format"),
    ("--image", "dir", "is a directory"),
    ("--audio", "image", "photo.png: not an audio file"),
])
def test_bad_media_files_fail_before_the_model_loads(files, command, flag, name, reason):
    args = [command, flag, str(files[name]), "-m", "nowhere-model"]  # the model would fail after: it is never reached
    if command == "run":
        args.insert(1, "describe it")
    one_error_line(invoke(*args), reason)


def test_remote_images_need_the_flag():
    one_error_line(invoke("run", "hi", "--image", "https://example.com/cat.png"), "--allow-remote-images")


def test_raw_completion_takes_no_media(files):
    one_error_line(invoke("run", "--raw", "once", "--image", str(files["image"])), "cannot be combined with --raw")


def test_help_teaches_media():
    run_help = invoke("run", "--help").stdout
    assert "--image FILE" in run_help and "--audio FILE" in run_help and "--mmproj FILE" in run_help
    assert '--image photo.jpg "What is in this picture?"' in run_help
    chat_help = invoke("chat", "--help").stdout
    assert "/image FILE" in chat_help and "/image second.png" in chat_help
    serve_help = invoke("serve", "--help").stdout
    assert "--mmproj FILE" in serve_help and "--allow-remote-images" in serve_help and "image_url" in serve_help


def test_an_image_on_a_text_only_model_is_one_line(files, embedded_model_path):
    result = invoke("run", "describe it", "--image", str(files["image"]), "-m", str(embedded_model_path),
                    "--ctx-size", "256")
    one_error_line(result, "has no projector loaded, so it cannot take image input (give --mmproj FILE")


def test_chat_media_commands_on_a_text_only_model_report_and_carry_on(files, embedded_model_path):
    script = "\n".join([f"/image {files['image']}", "/image", f"/audio {files['sound']}", "/exit", ""])
    result = invoke("chat", "-m", str(embedded_model_path), "--ctx-size", "256", input=script)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "usage: /image FILE" in lines
    for kind in ("image", "audio"):
        assert sum(line.startswith("error: ") and f"cannot take {kind} input (give --mmproj FILE" in line
                   for line in lines) == 1, lines


# --- on a tiny Gemma 3 text GGUF + mmproj pair written by our converter ------------------------------

@pytest.fixture(scope="module")
def pair():
    from tests.runtime.tiny_vision import gemma3_vision_pair

    return gemma3_vision_pair()[0]


@pytest.fixture(scope="module")
def pair_model(pair):
    from gemma_edge.api import load

    return load(str(pair), n_ctx=256)


def run_json(*args):
    import json

    result = invoke("run", *args, "--json", "-t", "0", "-n", "6", "--ctx-size", "256")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_run_image_answers_like_the_api_and_validates(pair, pair_model, tmp_path):
    import json

    import jsonschema

    from tests.runtime.test_cli import SCHEMA
    from tests.convert.tiny_gemma3_vision import MM_TOKENS_PER_IMAGE
    from tests.runtime.tiny_vision import write_image

    image = write_image(tmp_path / "a.png")
    doc = run_json("Describe this.", "-m", str(pair), "--image", str(image))
    jsonschema.validate(doc, SCHEMA)
    pair_model.engine.reset()
    expected = pair_model.generate([{"role": "user", "content": [{"type": "image", "path": str(image)},
                                                                 {"type": "text", "text": "Describe this."}]}],
                                   temperature=0, max_tokens=6)
    assert doc["content"] == expected.content
    assert doc["usage"]["prompt_tokens"] == expected.usage["prompt_tokens"]
    text_only = run_json("Describe this.", "-m", str(pair))["usage"]["prompt_tokens"]
    one = doc["usage"]["prompt_tokens"]
    two = run_json("Describe this.", "-m", str(pair), "--image", str(image), "--image", str(image))
    # each image adds its 16 positions and its two markers (plus the blank lines around them)
    assert one - text_only >= MM_TOKENS_PER_IMAGE + 2
    assert two["usage"]["prompt_tokens"] - one >= MM_TOKENS_PER_IMAGE + 2
    assert json.dumps(two)  # still one JSON object


def test_explicit_mmproj_and_none_beside_the_model(pair, tmp_path):
    from tests.runtime.tiny_vision import write_image

    alone = tmp_path / "alone.gguf"
    alone.symlink_to(pair)
    image = write_image(tmp_path / "a.png")
    one_error_line(invoke("run", "hi", "-m", str(alone), "--image", str(image), "--ctx-size", "256"),
                   "has no projector loaded")
    projector = pair.with_name(f"mmproj-{pair.stem}.gguf")
    with_flag = run_json("hi", "-m", str(alone), "--image", str(image), "--mmproj", str(projector))
    assert with_flag == {**with_flag, "content": run_json("hi", "-m", str(pair), "--image", str(image))["content"]}
    one_error_line(invoke("run", "hi", "-m", str(pair), "--mmproj", str(tmp_path / "none.gguf")),
                   "no such projector")


def test_audio_on_a_vision_only_projector_is_one_line(pair, files):
    one_error_line(invoke("run", "hi", "-m", str(pair), "--audio", str(files["sound"]), "--ctx-size", "256"),
                   "projector has no audio encoder")


def test_chat_image_commands_attach_to_the_next_message(pair, tmp_path, files):
    import json

    from tests.runtime.tiny_vision import write_image

    first, second = write_image(tmp_path / "first.png", 1), write_image(tmp_path / "second.png", 2)
    saved = tmp_path / "chat.json"
    script = "\n".join(["What is this?", f"/image {files['missing']}", f"/image {second}", "/audio x.wav",
                        "And this?", "No image now.", f"/save {saved}", "/exit", ""])
    result = invoke("chat", "-m", str(pair), "--image", str(first), "-t", "0", "-n", "4", "--ctx-size", "256",
                    input=script)
    assert result.exit_code == 0, (result.output, result.exception)
    lines = result.stderr.splitlines()
    assert "(image second.png, 64x64 attached to your next message)" in lines
    assert f"error: {files['missing']}: no such file" in lines
    assert any(line.startswith("error: ") and "no audio encoder" in line for line in lines)
    users = [m["content"] for m in json.loads(saved.read_text())["messages"] if m["role"] == "user"]
    assert users == [
        [{"type": "image", "path": str(first)}, {"type": "text", "text": "What is this?"}],
        [{"type": "image", "path": str(second)}, {"type": "text", "text": "And this?"}],
        "No image now."]


def test_run_image_in_a_real_subprocess(pair, tmp_path, files):
    from tests.runtime.test_cli import run_subprocess
    from tests.runtime.tiny_vision import write_image

    image = write_image(tmp_path / "x.png")
    good = run_subprocess("run", "-m", str(pair), "--image", str(image), "Describe.", "-t", "0", "-n", "4",
                          "--ctx-size", "256")
    assert good.returncode == 0, good.stderr
    assert good.stdout.endswith("\n") and "Traceback" not in good.stderr
    bad = run_subprocess("run", "-m", str(pair), "--image", str(files["text"]), "Describe.")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"gemma-edge: error: {files['text']}: not an image in a supported format (PNG, JPEG, WEBP, GIF, BMP)"]
