"""``convert`` and the mmproj: written next to the text GGUF by default, skipped with --no-mmproj,
required with --mmproj, a one-line note for towers llama.cpp cannot run, and nothing on disk when
either file fails."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from convert.cli import convert_command
from tests.convert.oracle import gguf_fields
from tests.convert.tiny_gemma import tiny_checkpoint
from tests.convert.tiny_gemma3_vision import rename_tensors, tiny_gemma3_vision


def run_convert(model_dir: Path, out: Path, *extra: str):
    return CliRunner().invoke(convert_command, [str(model_dir), "-o", str(out), "--type", "f16", *extra])


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A private copy of the tiny Gemma 3 vision checkpoint, free to break."""
    return Path(shutil.copytree(tiny_gemma3_vision(), tmp_path / "model"))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def edit_vision_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    config["vision_config"].update(changes)
    (model / "config.json").write_text(json.dumps(config))


def test_default_writes_both_files_and_names_the_mmproj(model: Path, out_dir: Path) -> None:
    result = run_convert(model, out_dir / "tiny-it.gguf")
    assert result.exit_code == 0, result.stderr
    assert listing(out_dir) == ["mmproj-tiny-it.gguf", "tiny-it.gguf"]
    assert f"wrote {out_dir / 'mmproj-tiny-it.gguf'}" in result.stderr
    assert "text-only" not in result.stderr  # the towers are not lost: they are in the mmproj
    fields = gguf_fields(out_dir / "mmproj-tiny-it.gguf")
    assert fields["general.file_type"] == ("UINT32", 1)  # f16 text → f16 mmproj


def test_json_summary_names_the_mmproj(model: Path, out_dir: Path) -> None:
    result = run_convert(model, out_dir / "m.gguf", "--quiet", "--json", "--mmproj-type", "q8_0")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mmproj"] == str(out_dir / "mmproj-m.gguf") and summary["mmproj_tensors"] > 0
    assert gguf_fields(out_dir / "mmproj-m.gguf")["general.file_type"] == ("UINT32", 7)  # MOSTLY_Q8_0


def test_progress_covers_both_files(model: Path, out_dir: Path) -> None:
    from convert.api import convert_checkpoint

    planned, written = [], []
    summary = convert_checkpoint(model, out_dir / "m.gguf", "f16", on_plan=planned.append,
                                 on_tensor=lambda t: written.append(t.name))
    assert planned == [len(written)] == [summary.tensors + summary.mmproj_tensors]
    assert "v.patch_embd.weight" in written and "token_embd.weight" in written


def test_no_mmproj_writes_only_the_text_gguf(model: Path, out_dir: Path) -> None:
    result = run_convert(model, out_dir / "m.gguf", "--no-mmproj")
    assert result.exit_code == 0, result.stderr
    assert listing(out_dir) == ["m.gguf"]
    assert "text-only" in result.stderr


def test_text_only_checkpoint_writes_no_mmproj_and_no_note(out_dir: Path) -> None:
    result = run_convert(tiny_checkpoint("gemma3"), out_dir / "m.gguf")
    assert result.exit_code == 0, result.stderr
    assert listing(out_dir) == ["m.gguf"]
    assert "note:" not in result.stderr


def test_tower_the_runtime_cannot_run_is_one_note(model: Path, out_dir: Path) -> None:
    edit_vision_config(model, hidden_act="gelu")  # erf GELU: clip.cpp's SigLIP only has the tanh one
    result = run_convert(model, out_dir / "m.gguf")
    assert result.exit_code == 0, result.stderr
    assert listing(out_dir) == ["m.gguf"]
    notes = [line for line in result.stderr.splitlines() if "Gemma 3 vision" in line]
    assert len(notes) == 1 and "not supported" in notes[0] and "hidden_act is 'gelu'" in notes[0], result.stderr


def test_tower_without_an_encoder_module_is_one_note(model: Path, out_dir: Path) -> None:
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["Gemma3ForCausalLM"]  # a text architecture no mmproj encoder claims
    (model / "config.json").write_text(json.dumps(config))
    result = run_convert(model, out_dir / "m.gguf")
    assert result.exit_code == 0, result.stderr
    assert listing(out_dir) == ["m.gguf"]
    assert "note: Gemma3ForCausalLM vision tower: not supported yet: " in result.stderr


def test_required_mmproj_that_cannot_be_written_fails(model: Path, out_dir: Path) -> None:
    edit_vision_config(model, hidden_act="gelu")
    result = run_convert(model, out_dir / "m.gguf", "--quiet", "--mmproj")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "cannot write an mmproj" in result.stderr and "hidden_act" in result.stderr
    assert listing(out_dir) == []


def test_broken_tower_fails_the_whole_conversion(model: Path, out_dir: Path) -> None:
    rename_tensors(model / "model.safetensors",
                   lambda name: name.replace("mm_soft_emb_norm", "mystery_norm"))
    result = run_convert(model, out_dir / "m.gguf", "--quiet")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "mystery_norm" in result.stderr, result.stderr
    assert listing(out_dir) == []


def test_mmproj_failing_at_the_last_step_leaves_no_text_gguf(model: Path, out_dir: Path) -> None:
    (out_dir / "mmproj-m.gguf").mkdir()  # exists (so --force) but cannot be replaced by a file
    result = run_convert(model, out_dir / "m.gguf", "--quiet", "--force")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: Is a directory ({out_dir / 'mmproj-m.gguf'}); no output written"], result.stderr
    assert listing(out_dir) == ["mmproj-m.gguf"] and listing(out_dir / "mmproj-m.gguf") == []


def test_existing_mmproj_needs_force(model: Path, out_dir: Path) -> None:
    (out_dir / "mmproj-m.gguf").write_bytes(b"keep me")
    result = run_convert(model, out_dir / "m.gguf", "--quiet")
    assert result.exit_code == 2 and "mmproj-m.gguf exists" in result.stderr
    assert listing(out_dir) == ["mmproj-m.gguf"] and (out_dir / "mmproj-m.gguf").read_bytes() == b"keep me"


def test_config_with_a_tower_but_no_tower_weights_still_converts(model: Path, out_dir: Path) -> None:
    """A text-only export that kept the multimodal config.json: the text GGUF and one note."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.startswith(("vision_tower.", "multi_modal_projector."))},
              model / "model.safetensors")
    result = run_convert(model, out_dir / "m.gguf")
    assert result.exit_code == 0, result.stderr
    assert listing(out_dir) == ["m.gguf"]
    assert "note: Gemma 3 vision (SigLIP): the checkpoint has no weights for it" in result.stderr
