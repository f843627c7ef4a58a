"""Bad input: one-line error on stderr, exit code 2, nothing left on disk (issue 5, "Bad input")."""
from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from convert.cli import convert_command, quantize_command
from tests.convert.tiny_gemma import tiny_checkpoint


def run_convert(model_dir: Path, out: Path, *extra: str):
    return CliRunner().invoke(convert_command, [str(model_dir), "-o", str(out), "--type", "f16", "--quiet", *extra])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_empty(directory: Path) -> None:
    assert sorted(p.name for p in directory.iterdir()) == []


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A private copy of the tiny Gemma 3 checkpoint, free to break."""
    return Path(shutil.copytree(tiny_checkpoint("gemma3"), tmp_path / "model"))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config))


def test_valid_checkpoint_converts(model: Path, out_dir: Path) -> None:
    """The baseline every failure below is a mutation of."""
    result = run_convert(model, out_dir / "m.gguf")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["m.gguf"]


def test_missing_config(model: Path, out_dir: Path) -> None:
    (model / "config.json").unlink()
    assert_one_line_error(run_convert(model, out_dir / "m.gguf"), "config.json")
    assert_empty(out_dir)


def test_missing_weights(model: Path, out_dir: Path) -> None:
    (model / "model.safetensors").unlink()
    assert_one_line_error(run_convert(model, out_dir / "m.gguf"), "safetensors")
    assert_empty(out_dir)


def test_missing_tokenizer(model: Path, out_dir: Path) -> None:
    (model / "tokenizer.model").unlink()
    assert_one_line_error(run_convert(model, out_dir / "m.gguf"), "tokenizer.model")
    assert_empty(out_dir)


def test_unsupported_architecture_is_named_with_the_supported_ones(model: Path, out_dir: Path) -> None:
    edit_config(model, architectures=["LlamaForCausalLM"])
    assert_one_line_error(run_convert(model, out_dir / "m.gguf"), "LlamaForCausalLM", "Gemma3ForCausalLM",
                          "GemmaForCausalLM", "Gemma2ForCausalLM")
    assert_empty(out_dir)


class _Tripwire:
    """Unpickling this object creates a file: proof that a pickle was (wrongly) loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_weights_are_refused_unopened(model: Path, out_dir: Path, tmp_path: Path) -> None:
    (model / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(str(marker))))
    assert_one_line_error(run_convert(model, out_dir / "m.gguf"), "pickle", "pytorch_model.bin")
    assert not marker.exists()
    assert_empty(out_dir)


def rewrite_header(path: Path, edit) -> None:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    edit(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + length:])


def _first_tensor(header: dict) -> dict:
    return header[next(k for k in sorted(header) if k != "__metadata__")]


@pytest.mark.parametrize("lie", ["offset past end", "dtype", "shape", "unknown dtype"])
def test_safetensors_header_that_lies_is_refused(model: Path, out_dir: Path, lie: str) -> None:
    def edit(header: dict) -> None:
        entry = _first_tensor(header)
        begin, end = entry["data_offsets"]
        if lie == "offset past end":
            entry["data_offsets"] = [begin + 10**9, end + 10**9]
        elif lie == "dtype":
            entry["dtype"] = "F16"  # the byte range holds F32 data: twice the size
        elif lie == "shape":
            entry["shape"] = [entry["shape"][0] * 2] + entry["shape"][1:]
        else:
            entry["dtype"] = "F8_E4M3"

    rewrite_header(model / "model.safetensors", edit)
    assert_one_line_error(run_convert(model, out_dir / "m.gguf"), "model.safetensors")
    assert_empty(out_dir)


def test_shard_listed_in_index_but_absent(model: Path, out_dir: Path) -> None:
    from safetensors import safe_open

    with safe_open(model / "model.safetensors", "np") as handle:
        names = list(handle.keys())
    weight_map = {name: "model-00001-of-00002.safetensors" for name in names[:5]}
    weight_map.update({name: "model-00002-of-00002.safetensors" for name in names[5:]})
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_one_line_error(run_convert(model, out_dir / "m.gguf"), "model-00002-of-00002.safetensors")
    assert_empty(out_dir)


def test_unknown_tensor_is_refused(model: Path, out_dir: Path) -> None:
    rewrite_header(model / "model.safetensors",
                   lambda header: header.__setitem__("model.layers.0.mystery.weight", _first_tensor(header)))
    assert_one_line_error(run_convert(model, out_dir / "m.gguf"), "model.layers.0.mystery.weight")
    assert_empty(out_dir)


def test_query_scale_llama_cpp_cannot_run_is_refused(model: Path, out_dir: Path) -> None:
    edit_config(model, query_pre_attn_scalar=64)
    assert_one_line_error(run_convert(model, out_dir / "m.gguf"), "query_pre_attn_scalar", "hard-codes")
    assert_empty(out_dir)


def test_existing_output_needs_force(model: Path, out_dir: Path) -> None:
    out = out_dir / "m.gguf"
    out.write_bytes(b"keep me")
    assert_one_line_error(run_convert(model, out), "--force")
    assert out.read_bytes() == b"keep me"
    assert run_convert(model, out, "--force").exit_code == 0
    assert out.read_bytes()[:4] == b"GGUF"


def test_unknown_output_type(model: Path, out_dir: Path) -> None:
    result = CliRunner().invoke(convert_command, [str(model), "-o", str(out_dir / "m.gguf"), "--type", "q3_x"])
    assert_one_line_error(result, "q3_x")
    assert_empty(out_dir)


def test_quantize_missing_input(out_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(quantize_command, [str(tmp_path / "absent.gguf"), "-o", str(out_dir / "q.gguf"),
                                                   "--type", "q4_k_m"])
    assert_one_line_error(result, "absent.gguf")
    assert_empty(out_dir)


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG like a full disk instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_mid_write(model: Path, out_dir: Path) -> None:
    out = out_dir / "m.gguf"
    result = subprocess.run(
        [sys.executable, "-m", "convert", "convert", str(model), "-o", str(out), "--type", "f32", "--quiet"],
        capture_output=True, text=True, preexec_fn=_limit_file_size(200_000),
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(out) in result.stderr
    assert_empty(out_dir)


@pytest.mark.slow
def test_ctrl_c_mid_write(out_dir: Path) -> None:
    from tests.convert.real_gemma3 import real_checkpoint

    checkpoint = real_checkpoint()  # large enough (1 GB of F32 output) to interrupt mid-write
    process = subprocess.Popen(
        [sys.executable, "-m", "convert", "convert", str(checkpoint), "-o", str(out_dir / "m.gguf"), "--type", "f32",
         "--quiet"],
        stderr=subprocess.PIPE, text=True,
        # A shell that started this run in the background may ignore SIGINT; Ctrl-C must reach the child.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > 1_000_000 for p in out_dir.iterdir()) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert stderr.strip().splitlines() == ["error: interrupted; no output written"]
    assert_empty(out_dir)


def test_requantizing_needs_the_flag(model: Path, out_dir: Path, tmp_path: Path) -> None:
    quantized = tmp_path / "q8.gguf"
    assert CliRunner().invoke(convert_command, [str(model), "-o", str(quantized), "--type", "q8_0"]).exit_code == 0
    args = [str(quantized), "-o", str(out_dir / "q.gguf"), "--type", "q4_0"]
    assert_one_line_error(CliRunner().invoke(quantize_command, args), "--allow-requantize")
    assert_empty(out_dir)
    assert CliRunner().invoke(quantize_command, [*args, "--allow-requantize"]).exit_code == 0
