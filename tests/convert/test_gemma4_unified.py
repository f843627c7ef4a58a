"""Gemma 4 12B "Unified" (``Gemma4UnifiedForConditionalGeneration``), tiny seeded checkpoints saved by
transformers 5.23 (tests/convert/tiny_gemma4_unified.py):

* text GGUF: ``gemma4`` plus ``tokenizer.ggml.suppress_tokens``; byte-identical to llama.cpp's converter
  where that converter runs, logits vs transformers no worse than its GGUF's;
* llama.cpp's converter stops on the config as transformers 5.23 saves it (``KeyError`` on
  ``moe_intermediate_size``); ours reads the config as transformers resolves it. The reference is run on a
  copy whose text config spells out the keys older files carried (``enable_moe_block: false`` ...);
* mmproj (gemma4uv + gemma4ua): mtmd vs transformers per-token cosine ≥ 0.9999 in F32 and F16, tensors
  byte-identical to the reference's, and the refusals (no processor config, text attention that would not
  match mtmd's non-causal image decoding).

Deliberate mmproj differences from the reference: ``clip.audio.num_mel_bins`` is the frame size (640, what
clip.cpp uses for gemma4ua whatever the file says; the reference writes a placeholder 128) and
``clip.vision.image_max_pixels`` (ours only: the processor's soft-token budget, for gemma_edge's projector).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from convert.mmproj.gemma4_unified import ATTENTION_CAVEAT, GEMMA4_UNIFIED_VISION
from tests.convert.mtmd_embed import audio_embeddings, image_embeddings, per_token_cosines
from tests.convert.oracle import (
    assert_no_worse, compare_logits, gguf_differences, gguf_fields, llama_logits, read_header, reference_convert,
)
from tests.convert.tiny import cached_file, linked_copy
from tests.convert.tiny_gemma4 import TINY_VOCAB_SIZE, convert_with_ours, token_ids
from tests.convert.tiny_gemma4_unified import (
    OLDER_TEXT_KEYS, SAMPLES_PER_TOKEN, SUPPRESS_TOKENS, TEXT_HIDDEN, hf_audio_embeddings, hf_image_embeddings,
    hf_model, older_text_config_copy, unified_checkpoint,
)
from tests.convert.tiny_gemma4_vision import N_IMAGE_TOKENS, test_image

pytest.importorskip("llama_cpp")

REPO = Path(__file__).resolve().parents[2]
IDS = token_ids(80, TINY_VOCAB_SIZE)  # 64 positions beyond the sliding window of 16
MIN_COSINE = 0.9999
MMPROJ_DELIBERATE = {
    "clip.audio.num_mel_bins": "ours: the 640-sample frame clip.cpp uses (the reference writes 128)",
    "clip.vision.image_max_pixels": "ours only: the image processor's budget, for gemma_edge's projector",
}


def reference_gguf(type_name: str, mmproj: bool = False) -> Path:
    """llama.cpp's converter on the older-config copy (cached)."""
    source = unified_checkpoint()
    recipe = {"model": source.name, "type": type_name, "mmproj": mmproj, "older": OLDER_TEXT_KEYS,
              "converter": "llama-cpp-python 0.3.36"}

    def build(path: Path) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            older = older_text_config_copy(source, Path(scratch) / "checkpoint")
            reference_convert(older, path, type_name, mmproj=mmproj)

    return cached_file(f"ref-{source.name}-{type_name}-{'mmproj' if mmproj else 'text'}", recipe, ".gguf", build)


@cache
def transformers_logits() -> np.ndarray:
    import torch

    with torch.no_grad():
        return hf_model(unified_checkpoint())(input_ids=torch.tensor([IDS]), use_cache=False).logits[0].numpy()


def convert(checkpoint: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convert", "convert", str(checkpoint), "-o", str(out), *options],
                          capture_output=True, text=True, cwd=REPO)


# ---------------------------------------------------------------- text


def test_config_as_transformers_5_23_saves_it() -> None:
    """The tiny checkpoint is what the issue is about: the keys llama.cpp's converter needs are absent."""
    text = json.loads((unified_checkpoint() / "config.json").read_text())["text_config"]
    assert not set(OLDER_TEXT_KEYS) & set(text)
    assert text["model_type"] == "gemma4_unified_text" and text["use_bidirectional_attention"] == "vision"


def test_text_gguf_is_gemma4_with_suppress_tokens(tmp_path) -> None:
    path = convert_with_ours(unified_checkpoint(), tmp_path / "ours.gguf", "f32")
    fields = gguf_fields(path)
    assert fields["general.architecture"][-1] == "gemma4"
    # llama.cpp's loader rejects the key unless it is an INT32 array
    assert read_header(path).fields["tokenizer.ggml.suppress_tokens"][:2] == ("ARRAY", "INT32")
    assert fields["tokenizer.ggml.suppress_tokens"][-1] == SUPPRESS_TOKENS
    assert fields["gemma4.embedding_length_per_layer_input"][-1] == 0
    assert not any(key.startswith("gemma4.expert_") for key in fields)


def test_config_is_read_as_transformers_resolves_it() -> None:
    """Gemma4UnifiedTextConfig's own defaults; per-layer embeddings and experts do not exist in the model."""
    from convert.generations.gemma4 import GEMMA4_UNIFIED

    hp = GEMMA4_UNIFIED.hparams({"hidden_size_per_layer_input": 256, "enable_moe_block": True})
    assert (hp["hidden_size_per_layer_input"], hp["enable_moe_block"]) == (0, False)
    assert (hp["sliding_window"], hp["max_position_embeddings"], hp["use_bidirectional_attention"]) == \
        (1024, 262144, "vision")


@pytest.mark.parametrize("value", ["1, 2", [1, "2"], [True]])
def test_malformed_suppress_tokens_are_refused_in_one_line(value, tmp_path) -> None:
    checkpoint = linked_copy(unified_checkpoint(), tmp_path / "ckpt", drop=("generation_config.json",))
    (checkpoint / "generation_config.json").write_text(json.dumps({"suppress_tokens": value}))
    from convert.api import convert_checkpoint
    from convert.generations.base import UnsupportedConfig

    with pytest.raises(UnsupportedConfig, match="^generation_config.json's suppress_tokens must be a list of token ids$"):
        convert_checkpoint(checkpoint, tmp_path / "out.gguf", "f32", mmproj=False)
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.slow
def test_reference_converter_stops_on_the_5_23_config(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="could not find any of: .*moe_intermediate_size"):
        reference_convert(unified_checkpoint(), tmp_path / "reference.gguf", "f32")


@pytest.mark.slow
@pytest.mark.parametrize("type_name", ["f32", "f16", "q8_0"])
def test_same_text_gguf_as_reference(type_name, tmp_path) -> None:
    """Ours on the 5.23 config = the reference on the older spelling of the same config, byte for byte."""
    ours = convert_with_ours(unified_checkpoint(), tmp_path / "ours.gguf", type_name)
    assert gguf_differences(ours, reference_gguf(type_name)) == []


@pytest.mark.slow
def test_f32_logits_match_transformers_no_worse_than_reference(tmp_path) -> None:
    hf = transformers_logits()
    ours = compare_logits(hf, llama_logits(convert_with_ours(unified_checkpoint(), tmp_path / "o.gguf", "f32"), IDS))
    theirs = compare_logits(hf, llama_logits(reference_gguf("f32"), IDS))
    assert ours.decisive >= 32, ours
    assert_no_worse(ours, theirs)


def test_runtime_renders_it_with_the_large_gemma4_format(tmp_path) -> None:
    """google/gemma-4-12B-it ships the 31B / 26B-A4B chat template (tests/reference/templates/SOURCES.md):
    no per-layer embeddings → gemma4-large."""
    from gemma_edge.model import read_model_facts

    facts = read_model_facts(convert_with_ours(unified_checkpoint(), tmp_path / "ours.gguf", "f32"))
    assert (facts.generation, facts.format) == ("gemma4", "gemma4-large")
    assert facts.suppress_tokens == tuple(sorted(SUPPRESS_TOKENS))


# ---------------------------------------------------------------- mmproj


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """mmproj type → (text GGUF, mmproj GGUF), written by one `convert` each."""
    from convert.api import convert_checkpoint

    out = {}
    for mmproj_type in ("f32", "f16"):
        directory = tmp_path_factory.mktemp(f"unified-{mmproj_type}")
        summary = convert_checkpoint(unified_checkpoint(), directory / "text.gguf", "f32", mmproj_type=mmproj_type)
        assert summary.mmproj == directory / "mmproj-text.gguf"
        assert summary.notes == [f"{GEMMA4_UNIFIED_VISION.name}: {ATTENTION_CAVEAT}"]
        out[mmproj_type] = (directory / "text.gguf", summary.mmproj)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mmproj_type", ["f32", "f16"])
def test_image_embeddings_match_transformers(converted, mmproj_type) -> None:
    image = test_image()
    ours = image_embeddings(*converted[mmproj_type], image)
    theirs = hf_image_embeddings(unified_checkpoint(), image)
    assert ours.shape == theirs.shape == (N_IMAGE_TOKENS, TEXT_HIDDEN)
    assert per_token_cosines(ours, theirs).min() >= MIN_COSINE


@pytest.mark.slow
@pytest.mark.parametrize("mmproj_type", ["f32", "f16"])
def test_audio_embeddings_match_transformers(converted, mmproj_type) -> None:
    samples = np.random.default_rng(3).normal(0.0, 0.1, 16_000 + 123).astype(np.float32)  # a partial last frame
    ours = audio_embeddings(*converted[mmproj_type], samples, 16_000)
    theirs = hf_audio_embeddings(unified_checkpoint(), samples)
    assert ours.shape == theirs.shape == (-(-len(samples) // SAMPLES_PER_TOKEN), TEXT_HIDDEN)
    assert per_token_cosines(ours, theirs).min() >= MIN_COSINE


@pytest.mark.slow
@pytest.mark.parametrize("mmproj_type", ["f32", "f16"])
def test_mmproj_matches_reference_converter(converted, mmproj_type) -> None:
    ours, reference = converted[mmproj_type][1], reference_gguf(mmproj_type, mmproj=True)
    assert gguf_differences(ours, reference, MMPROJ_DELIBERATE) == []
    fields = gguf_fields(ours)
    assert fields["clip.vision.projector_type"][-1] == "gemma4uv" and fields["clip.audio.projector_type"][-1] == "gemma4ua"


def test_missing_processor_config_is_one_line(tmp_path) -> None:
    """llama.cpp's converter stops with KeyError: 'image_mean'; ours notes it (text written) or, with
    --mmproj, refuses in one line and writes nothing."""
    checkpoint = linked_copy(unified_checkpoint(), tmp_path / "ckpt", drop=("processor_config.json",))
    result = convert(checkpoint, tmp_path / "text.gguf", "--type", "f32", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any("no preprocessor_config.json or processor_config.json" in n for n in notes), notes
    assert not (tmp_path / "mmproj-text.gguf").exists()
    result = convert(checkpoint, tmp_path / "again.gguf", "--type", "f32", "--mmproj")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "processor_config.json" in result.stderr
    assert not (tmp_path / "again.gguf").exists() and not (tmp_path / "mmproj-again.gguf").exists()


def test_vision_refused_when_text_attention_would_differ(tmp_path) -> None:
    """mtmd decodes gemma4uv image tokens non-causally; transformers does so only with "vision"."""
    from convert.api import convert_checkpoint

    def causal(raw):
        raw["text_config"]["use_bidirectional_attention"] = None

    checkpoint = linked_copy(unified_checkpoint(), tmp_path / "ckpt", causal)
    summary = convert_checkpoint(checkpoint, tmp_path / "text.gguf", "f32")
    assert any("use_bidirectional_attention 'vision'" in n for n in summary.notes), summary.notes
    fields = gguf_fields(summary.mmproj)  # the audio half is still written
    assert "clip.has_vision_encoder" not in fields and fields["clip.projector_type"][-1] == "gemma4ua"
