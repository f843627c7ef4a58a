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
