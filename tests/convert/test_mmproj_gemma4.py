"""Gemma 4 vision encoder → mmproj (gemma4v): llama.cpp's mtmd against transformers on tiny seeded
checkpoints, our file against llama.cpp's reference converter, and the configs we refuse.

The checkpoints (tests/convert/tiny_gemma4_vision.py) put a tiny vision tower — finite clip bounds on
every ClippableLinear, standardisation on — next to a dense (31B-like) or an E2B-like (per-layer
embeddings) text model. The oracle image is at the native size of both preprocessors (84×120 → 7×10 =
70 soft tokens, the processor's max_soft_tokens and mtmd's gemma4v minimum), so neither resizes and the
two sides see the same pixels: the per-token cosine is ~0.999999 in F32 and F16, asserted against the
acceptance thresholds (0.999 / 0.99). Two more checkpoints have layouts the runtime only runs when the
file says so: 2×2 pooling instead of the official 3×3 (56×80 pixels, again 70 tokens;
clip.vision.projector.scale_factor), and grouped KV heads with heads × head_dim != hidden
(…attention.head_count_kv / head_dim).
Removing the clip bounds or the standardisation from the file drops the cosine below 0.95, so both are
exercised.

Deliberate differences from llama.cpp's ``convert_hf_to_gguf.py --mmproj`` (asserted in
``test_matches_reference_converter``; everything else — every tensor's name, type, shape and bytes, and
every other key — is identical):

* ``clip.use_gelu = true``: ours only. Without it clip.cpp runs the gated MLP with GELU-quick
  (x·σ(1.702x)) instead of transformers' ``gelu_pytorch_tanh``; on the oracle image the reference's
  file reaches a min per-token cosine of ~0.9995 against transformers, ours ~0.999999 (asserted).
* the projector type key: the reference always writes ``clip.vision.projector_type`` (its Gemma 4 class
  may carry audio); ours writes ``clip.projector_type`` when vision is the file's only encoder and the
  per-modality key when audio is there too. clip.cpp reads either.
* ``clip.vision.attention.layer_norm_epsilon``: the reference reads ``layer_norm_eps``, which
  Gemma4VisionConfig does not have (so it always writes 1e-6); ours reads ``rms_norm_eps``. Same value
  for the tiny and the official configs, so not a difference here (unit-tested below).
* ``clip.vision.image_max_pixels``: ours only — the image processor's budget (``max_soft_tokens`` soft
  tokens of (patch · kernel)² pixels; transformers' default 280 when processor_config.json names none).
  clip.cpp 0.3.36 does not read it for gemma4v; gemma_edge's projector sizes images with it.

Runtime note (not a converter matter): mtmd decodes gemma4v image tokens non-causally except when the
text model's n_embd is 1536 or 2560 (E2B / E4B), where it keeps causal attention; the tiny text models
(n_embd 64) take the non-causal path. mtmd also sizes images to 70–1120 tokens (transformers' default
budget is 280), unless the context sets image_min/max_tokens; gemma_edge's projector sizes images
itself from clip.vision.image_max_pixels (gemma_edge/projector.py).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from convert.api import convert_checkpoint
from convert.checkpoint import open_checkpoint
from convert.mmproj.base import EncoderConfig, UnsupportedConfig
from convert.mmproj.gemma4_vision import GEMMA4_VISION, RUNTIME_ROPE_THETA
from convert.mmproj.pipeline import plan_mmproj, write_mmproj
from convert.storage import NATIVE_TYPES
from tests.convert.mtmd_embed import image_embeddings, per_token_cosines
from tests.convert.oracle import gguf_differences, gguf_fields, reference_convert
from tests.convert.tiny_gemma4_vision import (
    N_IMAGE_TOKENS, OFFICIAL_POOL, VISION_CONFIG, gemma4_vision_checkpoint, hf_image_embeddings, hf_pixels, test_image,
)

MIN_COSINE = {"f32": 0.999, "f16": 0.99}
# (name, text kind, vision overrides): the official layout under a dense and an E2B-like text model, then
# layouts the file must describe with the keys whose absence means the runtime's default:
# pooling 2×2 (clip.vision.projector.scale_factor), grouped KV heads (…attention.head_count_kv) and
# heads × head_dim != hidden (…attention.head_dim)
CASES = (
    ("dense", "dense", {}),
    ("e2b", "e2b", {}),
    ("pool2", "dense", {"pooling_kernel_size": 2}),
    ("gqa-head12", "dense", {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 12}),
)
TEXT_HIDDEN = 64  # both tiny text recipes


@pytest.fixture(scope="module", params=CASES, ids=[name for name, _, _ in CASES])
def case(request) -> tuple[Path, np.ndarray]:
    """(checkpoint directory, its native oracle image)."""
    _, kind, vision = request.param
    return gemma4_vision_checkpoint(kind, vision), test_image(vision.get("pooling_kernel_size", OFFICIAL_POOL))


@pytest.fixture(scope="module")
def checkpoint_dir(case) -> Path:
    return case[0]


@pytest.fixture(scope="module")
def image(case) -> np.ndarray:
    return case[1]


@pytest.fixture(scope="module")
def converted(checkpoint_dir: Path, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """mmproj type → (text GGUF, mmproj GGUF), both written by `convert_checkpoint` (the CLI's path)."""
    out = {}
    for mmproj_type in ("f32", "f16"):
        directory = tmp_path_factory.mktemp(f"{checkpoint_dir.name}-{mmproj_type}")
        summary = convert_checkpoint(checkpoint_dir, directory / "text.gguf", "f32", mmproj_type=mmproj_type)
        assert summary.mmproj == directory / "mmproj-text.gguf" and summary.notes == []
        out[mmproj_type] = (directory / "text.gguf", summary.mmproj)
    return out


@pytest.fixture(scope="module")
def hf_embeddings(checkpoint_dir: Path, image: np.ndarray) -> np.ndarray:
    return hf_image_embeddings(checkpoint_dir, image)


# ---------------------------------------------------------------- mtmd vs transformers


@pytest.mark.parametrize("mmproj_type", ["f32", "f16"])
def test_image_embeddings_match_transformers(converted, image, hf_embeddings, mmproj_type) -> None:
    text, mmproj = converted[mmproj_type]
    ours = image_embeddings(text, mmproj, image)
    assert ours.shape == hf_embeddings.shape == (N_IMAGE_TOKENS, TEXT_HIDDEN)
    cos = per_token_cosines(ours, hf_embeddings)
    assert cos.min() >= MIN_COSINE[mmproj_type], f"min per-token cosine {cos.min():.7f} (mean {cos.mean():.7f})"


def test_oracle_image_is_native_for_the_processor(checkpoint_dir, image) -> None:
    """The processor neither resizes nor pads the oracle image: its patches are the image's own pixels
    / 255 in (row, column, channel) order, in row-major patch order with (x, y) positions."""
    pixels, positions, n_tokens = hf_pixels(checkpoint_dir, image)
    patch = VISION_CONFIG["patch_size"]
    rows, cols = image.shape[0] // patch, image.shape[1] // patch
    expected = (image.astype(np.float32) / 255).reshape(rows, patch, cols, patch, 3).transpose(0, 2, 1, 3, 4)
    np.testing.assert_allclose(pixels, expected.reshape(rows * cols, -1), atol=1e-6)
    assert positions.tolist() == [[x, y] for y in range(rows) for x in range(cols)]
    assert n_tokens == N_IMAGE_TOKENS


@pytest.mark.parametrize("left_out", ["clip bounds", "standardisation"])
def test_clip_bounds_and_standardisation_are_exercised(checkpoint_dir, converted, image, hf_embeddings, left_out,
                                                        tmp_path) -> None:
    """The same mmproj without the clip-bound tensors (or v.std_*) computes something else: the oracle
    image really goes through them."""
    drop = {"clip bounds": lambda name: name.endswith(("_min", "_max")),
            "standardisation": lambda name: name.startswith("v.std_")}[left_out]
    checkpoint = open_checkpoint(checkpoint_dir)
    plan = plan_mmproj(checkpoint, {"hidden_size": TEXT_HIDDEN}, NATIVE_TYPES["f32"])
    kept = [t for t in plan.tensors if not drop(t.name)]
    assert len(kept) < len(plan.tensors)
    plan.tensors = kept
    write_mmproj(plan, tmp_path / "partial.gguf")
    ours = image_embeddings(converted["f32"][0], tmp_path / "partial.gguf", image)
    assert per_token_cosines(ours, hf_embeddings).min() < 0.95


# ---------------------------------------------------------------- against llama.cpp's reference converter

DELIBERATE = {
    "clip.use_gelu": "ours only: tanh GELU as transformers (the reference's file runs GELU-quick)",
    "clip.projector_type": "ours: the single-encoder key",
    "clip.vision.projector_type": "reference: the per-modality key even without audio",
    "clip.vision.image_max_pixels": "ours only: the image processor's budget, for gemma_edge's projector",
}


@pytest.mark.parametrize("mmproj_type", ["f32", "f16"])
def test_matches_reference_converter(mmproj_type, tmp_path) -> None:
    """The vision tower is the same under both text kinds: the dense checkpoint stands for both."""
    checkpoint_dir = gemma4_vision_checkpoint("dense")
    text = tmp_path / "text.gguf"
    ours = convert_checkpoint(checkpoint_dir, text, "f32", mmproj_type=mmproj_type).mmproj
    reference = reference_convert(checkpoint_dir, tmp_path / "reference.gguf", mmproj_type, mmproj=True)
    assert gguf_differences(ours, reference, DELIBERATE) == []
    ours_fields, ref_fields = gguf_fields(ours), gguf_fields(reference)
    assert ours_fields["clip.projector_type"] == ref_fields["clip.vision.projector_type"] == ("STRING", "gemma4v")
    assert ours_fields["clip.use_gelu"] == ("BOOL", True) and "clip.use_gelu" not in ref_fields

    # why clip.use_gelu: the reference's file is measurably further from transformers
    theirs = hf_image_embeddings(checkpoint_dir, test_image())
    ours_cos = per_token_cosines(image_embeddings(text, ours, test_image()), theirs).min()
    ref_cos = per_token_cosines(image_embeddings(text, reference, test_image()), theirs).min()
    assert 1 - ours_cos < (1 - ref_cos) / 10, (ours_cos, ref_cos)


# ---------------------------------------------------------------- metadata and refusals


def encoder_config(vision: dict | None = None, preprocessor: dict | None = None) -> EncoderConfig:
    raw = json.loads((gemma4_vision_checkpoint("dense") / "config.json").read_text())
    processor = json.loads((gemma4_vision_checkpoint("dense") / "processor_config.json").read_text())
    pre = {**processor, **processor["image_processor"], **(preprocessor or {})}
    hp = GEMMA4_VISION.hparams({**raw["vision_config"], **(vision or {})})
    return EncoderConfig(hp, raw["text_config"], raw, pre)


def keys(cfg: EncoderConfig) -> dict[str, object]:
    return {field.key: field.value for field in GEMMA4_VISION.metadata(cfg)}


def test_metadata_of_the_tiny_config() -> None:
    assert keys(encoder_config()) == {
        "clip.vision.image_size": 224, "clip.vision.patch_size": 4, "clip.vision.embedding_length": 32,
        "clip.vision.feed_forward_length": 64, "clip.vision.block_count": 2,
        "clip.vision.attention.head_count": 2, "clip.vision.attention.layer_norm_epsilon": 1e-6,
        "clip.vision.image_mean": [0.0, 0.0, 0.0], "clip.vision.image_std": [1.0, 1.0, 1.0], "clip.use_gelu": True,
        "clip.vision.image_max_pixels": N_IMAGE_TOKENS * 12 * 12,  # 70 soft tokens of (4 · 3)² pixels
    }


@pytest.mark.parametrize(("vision", "key", "value"), [
    ({"pooling_kernel_size": 2}, "clip.vision.projector.scale_factor", 2),
    ({"num_key_value_heads": 1}, "clip.vision.attention.head_count_kv", 1),
    ({"head_dim": 8}, "clip.vision.attention.head_dim", 8),
    ({"rms_norm_eps": 1e-5}, "clip.vision.attention.layer_norm_epsilon", 1e-5),
    ({"pooling_kernel_size": 2}, "clip.vision.image_max_pixels", N_IMAGE_TOKENS * 8 * 8),
])
def test_configs_the_runtime_reads_from_keys(vision, key, value) -> None:
    assert keys(encoder_config(vision))[key] == pytest.approx(value)


def test_image_budget_is_the_processors_or_transformers_default() -> None:
    assert keys(encoder_config(preprocessor={"max_soft_tokens": 1120}))["clip.vision.image_max_pixels"] == 1120 * 144
    without = encoder_config()
    pre = {k: v for k, v in without.preprocessor.items() if k != "max_soft_tokens"}
    assert keys(EncoderConfig(without.hp, without.text, without.top, pre))["clip.vision.image_max_pixels"] == 280 * 144


def test_normalising_processor_passes_its_mean_and_std() -> None:
    normalising = {"do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}
    fields = keys(encoder_config(preprocessor=normalising))
    assert fields["clip.vision.image_mean"] == [0.5] * 3 and fields["clip.vision.image_std"] == [0.25] * 3


@pytest.mark.parametrize(("vision", "preprocessor", "message"), [
    ({"rope_parameters": {"rope_type": "axial", "rope_theta": 10_000.0}}, None, f"theta {RUNTIME_ROPE_THETA:g}"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": 100.0}}, None, "axial"),
    ({"hidden_activation": "gelu"}, None, "tanh-approximated GELU"),
    ({"head_dim": 6, "num_attention_heads": 2}, None, "divisible by 4"),
    ({"num_key_value_heads": 3, "num_attention_heads": 2}, None, "multiple of"),
    (None, {"rescale_factor": 1 / 127.5}, "1/255"),
])
def test_refuses_configs_the_runtime_cannot_run(vision, preprocessor, message) -> None:
    with pytest.raises(UnsupportedConfig, match=message) as error:
        GEMMA4_VISION.metadata(encoder_config(vision, preprocessor))
    assert "\n" not in str(error.value)


def test_refused_vision_tower_is_a_note_and_the_text_still_converts(tmp_path) -> None:
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(gemma4_vision_checkpoint("dense"), checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["vision_config"]["rope_parameters"]["rope_theta"] = 10_000.0
    (checkpoint / "config.json").write_text(json.dumps(config))
    summary = convert_checkpoint(checkpoint, tmp_path / "text.gguf", "f32")
    assert summary.mmproj is None and not (tmp_path / "mmproj-text.gguf").exists()
    assert (tmp_path / "text.gguf").stat().st_size > 0
    [note] = [n for n in summary.notes if n.startswith(GEMMA4_VISION.name)]
    assert "rope theta 100" in note and "\n" not in note
