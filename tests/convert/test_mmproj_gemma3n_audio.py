"""Gemma 3n audio → mmproj: "not supported yet", and proof that the reason holds for the llama.cpp we ship.

* The tiny checkpoint (tests/convert/tiny_gemma3n_audio.py: transformers' Gemma3nAudioEncoder and
  audio embedder next to the tiny Gemma 3n text model, under Gemma3nForConditionalGeneration's names)
  plans no mmproj but one note naming the reason: ``convert`` writes the text GGUF and prints the note;
  ``convert --mmproj`` fails with it as one line and writes nothing (the Gemma 3n checkpoint with both
  towers — vision written, audio a note — is test_mmproj_gemma3n_vision.py's).
* Every audio tensor transformers writes is claimed by the audio encoder and by no other Gemma 3n
  encoder (so a checkpoint with both towers converts its vision half without tripping over audio).
* The reason is real: an mmproj whose audio projector is ``gemma3na`` (the keys llama.cpp's own
  converter writes for this tower) is refused by the installed mtmd at the projector type. When a
  llama.cpp upgrade runs it, this test fails, and the encoder should be written.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from convert.api import convert_checkpoint
from convert.checkpoint import open_checkpoint
from convert.cli import convert_command
from convert.mmproj import encoders
from convert.mmproj.gemma3n_audio import GEMMA3N_AUDIO
from convert.mmproj.pipeline import mm_name, plan_mmproj
from convert.storage import NATIVE_TYPES
from tests.convert.mtmd_embed import MtmdError, _mtmd_context
from tests.convert.tiny_gemma3n_audio import AUDIO_CONFIG, gemma3n_audio_checkpoint


@pytest.fixture(scope="module")
def checkpoint_dir() -> Path:
    return gemma3n_audio_checkpoint()


def run_convert(model_dir: Path, out: Path, *extra: str):
    return CliRunner().invoke(convert_command, [str(model_dir), "-o", str(out), "--type", "f32", *extra])


@pytest.fixture(scope="module")
def text_gguf(checkpoint_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gemma3n-audio") / "text.gguf"
    convert_checkpoint(checkpoint_dir, out, "f32")
    return out


def test_convert_writes_the_text_gguf_and_a_note_for_the_audio_tower(checkpoint_dir: Path, tmp_path: Path) -> None:
    note = f"Gemma 3n audio (USM conformer): not supported yet: {GEMMA3N_AUDIO.unsupported}"
    assert "gemma3na" in note and "\n" not in note
    checkpoint = open_checkpoint(checkpoint_dir)
    plan = plan_mmproj(checkpoint, {"hidden_size": checkpoint.config["hidden_size"]}, NATIVE_TYPES["f32"])
    assert plan.empty and not plan.tensors and plan.notes == [note]

    result = run_convert(checkpoint_dir, tmp_path / "tiny.gguf")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.gguf"]
    assert note in result.stderr


def test_required_mmproj_is_one_clear_error(checkpoint_dir: Path, tmp_path: Path) -> None:
    result = run_convert(checkpoint_dir, tmp_path / "tiny.gguf", "--mmproj")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write an mmproj" in lines[0] and "gemma3na" in lines[0], result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_every_audio_tensor_belongs_to_the_audio_encoder_alone(checkpoint_dir: Path) -> None:
    checkpoint = open_checkpoint(checkpoint_dir)
    family = [e for e in encoders() if checkpoint.architecture in e.hf_architectures]
    from safetensors import safe_open

    with safe_open(checkpoint_dir / "model.safetensors", "np") as tensors:
        written = {n for n in tensors.keys() if n.startswith(("model.audio_tower.", "model.embed_audio."))}
    assert set(checkpoint.multimodal) == written  # the whole tower is multimodal, nothing else is
    audio = [mm_name(name) for name in checkpoint.multimodal]
    for name in audio:
        assert [e.name for e in family if e.owns_tensor(name)] == [GEMMA3N_AUDIO.name], name
    assert not any(GEMMA3N_AUDIO.owns_tensor(mm_name(name)) for name in checkpoint.tensors)


def write_gemma3na_mmproj(path: Path, hidden_size: int, n_embd_text: int) -> Path:
    """The clip keys llama.cpp's converter writes for Gemma 3n's audio half (Gemma3nVisionAudioModel),
    with the tiny tower's sizes; no tensors (the loader stops before reading any)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_bool("clip.has_audio_encoder", True)
    writer.add_string("clip.audio.projector_type", GEMMA3N_AUDIO.projector_type)
    writer.add_uint32("clip.audio.num_mel_bins", 128)
    writer.add_uint32("clip.audio.embedding_length", hidden_size)
    writer.add_uint32("clip.audio.feed_forward_length", 4 * hidden_size)
    writer.add_uint32("clip.audio.block_count", AUDIO_CONFIG["conf_num_hidden_layers"])
    writer.add_uint32("clip.audio.attention.head_count", AUDIO_CONFIG["conf_num_attention_heads"])
    writer.add_float32("clip.audio.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32("clip.audio.projection_dim", n_embd_text)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@contextmanager
def mtmd_log():
    """mtmd's and llama.cpp's log lines while the block runs (restored to llama-cpp-python's logger after)."""
    import llama_cpp
    import llama_cpp._logger as llama_logger
    from llama_cpp import mtmd_cpp

    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level, text, user_data):
        lines.append(text.decode("utf-8", errors="replace"))

    for set_log in (mtmd_cpp.mtmd_log_set, llama_cpp.llama_log_set):
        set_log(collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        for set_log in (mtmd_cpp.mtmd_log_set, llama_cpp.llama_log_set):
            set_log(llama_logger.llama_log_callback, ctypes.c_void_p(0))


def test_installed_mtmd_refuses_the_gemma3na_projector(checkpoint_dir: Path, text_gguf: Path, tmp_path: Path) -> None:
    config = open_checkpoint(checkpoint_dir).config
    mmproj = write_gemma3na_mmproj(tmp_path / "mmproj.gguf", AUDIO_CONFIG["hidden_size"], config["hidden_size"])
    with mtmd_log() as lines, pytest.raises(MtmdError, match="could not load"):
        with _mtmd_context(text_gguf, mmproj, threads=1):
            pass
    assert any("unknown vision projector type gemma3na" in line for line in lines), "".join(lines)
