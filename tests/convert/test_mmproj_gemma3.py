"""Gemma 3 mmproj (SigLIP + projector, projector type ``gemma3``): llama.cpp's mtmd on the files our
converter writes computes the image embeddings transformers computes, and the file matches llama.cpp's
reference converter except where we deliberately differ (listed below with reasons)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.convert.mtmd_embed import image_embeddings, per_token_cosines, synthetic_image
from tests.convert.oracle import gguf_differences, gguf_fields, gguf_tensors, reference_convert
from tests.convert.tiny_gemma import tiny_checkpoint
from tests.convert.tiny_gemma3_vision import (
    IMAGE_MEAN, IMAGE_SIZE, IMAGE_STD, MM_TOKENS_PER_IMAGE, legacy_layout, rename_tensors, tiny_gemma3_vision,
)

MIN_COSINE = {"f32": 0.999, "f16": 0.99, "bf16": 0.99, "q8_0": 0.99}  # the issue sets F32 and F16

# Every deliberate difference from llama.cpp's reference converter, with its reason:
# * F32 files: mm.input_projection.weight is F32 (the reference forces F16 in every file type, to dodge a
#   ggml_cont of a transposed *quantized* tensor — F32 has no such problem, and F16 would cost precision in
#   the one file type meant to be exact). F16 files are identical.
# * clip.vision.projector.scale_factor comes from config.json's mm_tokens_per_image (what transformers
#   pools with), not from the preprocessor's image_seq_length; the tiny checkpoint has both equal, so
#   the files agree (without image_seq_length the reference would assume 256 and write no factor).
# * Layouts: the reference cannot map transformers 5's ``vision_tower.embeddings.*`` names ("Can not map
#   tensor"); it is compared on a copy renamed to the legacy ``vision_tower.vision_model.*`` layout.
DELIBERATE = {
    "f32": {"tensor mm.input_projection.weight: ours ('F32', (64, 48)) != reference ('F16', (64, 48))"},
    "f16": set(),
}


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return tiny_gemma3_vision()


@pytest.fixture(scope="module")
def hf_features(model_dir: Path) -> np.ndarray:
    """transformers' projected image features, pixels from the checkpoint's own image processor."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, Gemma3ForConditionalGeneration

    processor = AutoImageProcessor.from_pretrained(model_dir)
    pixels = processor(images=Image.fromarray(synthetic_image(IMAGE_SIZE)), return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    model = Gemma3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model.get_image_features(pixels.float()).pooler_output[0].numpy()


@pytest.fixture(scope="module")
def converted(model_dir: Path, tmp_path_factory):
    """type → (text GGUF, mmproj GGUF) written by our converter, both files of that type."""
    from convert.api import convert_checkpoint

    out = {}
    for type_name in MIN_COSINE:
        path = tmp_path_factory.mktemp(type_name) / "tiny.gguf"
        summary = convert_checkpoint(model_dir, path, type_name, mmproj_type=type_name)
        assert summary.mmproj == path.with_name("mmproj-tiny.gguf") and summary.mmproj.is_file()
        out[type_name] = (path, summary.mmproj)
    return out


@pytest.mark.parametrize("type_name", list(MIN_COSINE))
def test_mtmd_embeddings_match_transformers(converted, hf_features: np.ndarray, type_name: str) -> None:
    text, mmproj = converted[type_name]
    ours = image_embeddings(text, mmproj, synthetic_image(IMAGE_SIZE))
    assert ours.shape == hf_features.shape == (MM_TOKENS_PER_IMAGE, 64)
    per_token = per_token_cosines(hf_features, ours)
    print(f"{type_name}: min cosine {per_token.min():.7f}, max |Δ| {np.abs(hf_features - ours).max():.2e}")
    assert per_token.min() >= MIN_COSINE[type_name], per_token


def test_metadata_carries_the_checkpoint_facts(converted) -> None:
    fields = gguf_fields(converted["f32"][1])
    assert fields["general.architecture"] == ("STRING", "clip")
    assert fields["general.type"] == ("STRING", "mmproj")
    assert fields["clip.projector_type"] == ("STRING", "gemma3")
    assert fields["clip.vision.projection_dim"] == ("UINT32", 64)
    assert fields["clip.vision.image_size"] == ("UINT32", IMAGE_SIZE)
    assert fields["clip.vision.projector.scale_factor"] == ("UINT32", 2)  # 8×8 patches → 4×4 tokens
    assert np.allclose(fields["clip.vision.image_mean"][1], IMAGE_MEAN)
    assert np.allclose(fields["clip.vision.image_std"][1], IMAGE_STD)


@pytest.mark.parametrize("type_name", ["f32", "f16"])
def test_same_file_as_the_reference_converter(model_dir: Path, tmp_path: Path, type_name: str) -> None:
    from convert.api import convert_checkpoint

    legacy = legacy_layout(model_dir, tmp_path / "legacy")
    ours = convert_checkpoint(legacy, tmp_path / "ours.gguf", type_name).mmproj
    theirs = tmp_path / "theirs.gguf"
    reference_convert(legacy, theirs, type_name, mmproj=True)
    assert set(gguf_differences(ours, theirs)) == DELIBERATE[type_name]


def test_every_tensor_layout_converts_to_the_same_file(model_dir: Path, tmp_path: Path) -> None:
    """transformers 5 (``vision_tower.*``), legacy (``vision_tower.vision_model.*``) and ``model.``-prefixed."""
    from convert.api import convert_checkpoint

    prefixed = Path(shutil.copytree(model_dir, tmp_path / "prefixed"))
    rename_tensors(prefixed / "model.safetensors", lambda name: "model." + name.replace("language_model.model.", "language_model."))
    layouts = {"v5": model_dir, "legacy": legacy_layout(model_dir, tmp_path / "legacy"), "prefixed": prefixed}
    digests = {}
    for label, directory in layouts.items():
        mmproj = convert_checkpoint(directory, tmp_path / f"{label}.gguf", "f16").mmproj
        digests[label] = gguf_tensors(mmproj)
    assert digests["v5"] == digests["legacy"] == digests["prefixed"]


def test_siglip_head_is_left_out(tmp_path: Path) -> None:
    """The older tiny multimodal checkpoint keeps SigLIP's pooling head (vision_use_head), unused by Gemma 3."""
    from convert.api import convert_checkpoint

    summary = convert_checkpoint(tiny_checkpoint("gemma3-mm"), tmp_path / "m.gguf", "f16")
    names = gguf_tensors(summary.mmproj)
    assert not any("head" in name for name in names)
    assert "mm.input_projection.weight" in names
    # image 28 / patch 14 = 2×2 patches pooled to mm_tokens_per_image 4: kernel 1
    assert gguf_fields(summary.mmproj)["clip.vision.projector.scale_factor"] == ("UINT32", 1)


# ---------------------------------------------------------------- metadata rules (pure)


def encoder_config(vision=None, top=None, preprocessor=None):
    from convert.mmproj.base import EncoderConfig
    from convert.mmproj.gemma3_vision import GEMMA3_VISION

    return EncoderConfig(GEMMA3_VISION.hparams(vision or {}), {"hidden_size": 2560}, top or {}, preprocessor or {})


def metadata(**kwargs) -> dict:
    from convert.mmproj.gemma3_vision import metadata as gemma3_metadata

    return {f.key: f.value for f in gemma3_metadata(encoder_config(**kwargs))}


def test_official_geometry_writes_no_scale_factor() -> None:
    official = {"image_size": 896, "patch_size": 14, "hidden_size": 1152, "intermediate_size": 4304,
                "num_hidden_layers": 27, "num_attention_heads": 16}
    fields = metadata(vision=official)  # mm_tokens_per_image defaults to 256: 64/16 = 4, the runtime's own
    assert "clip.vision.projector.scale_factor" not in fields
    assert fields["clip.vision.image_mean"] == fields["clip.vision.image_std"] == [0.5, 0.5, 0.5]


def test_processor_config_overrides_preprocessor_config(tmp_path: Path) -> None:
    from convert.mmproj.pipeline import read_preprocessor_config

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3], "image_std": [1, 1, 1]}))
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": {"image_std": [0.4, 0.5, 0.6]}}))
    merged = read_preprocessor_config(tmp_path)
    assert merged["image_mean"] == [0.1, 0.2, 0.3] and merged["image_std"] == [0.4, 0.5, 0.6]
    assert read_preprocessor_config(tmp_path / "absent") == {}


@pytest.mark.parametrize("vision, top, fragment", [
    ({"hidden_act": "gelu"}, {}, "tanh-approximated GELU"),
    ({"intermediate_size": 768}, {}, "swaps the MLP weights"),
    ({"image_size": 224, "patch_size": 16}, {"mm_tokens_per_image": 9}, "does not pool evenly"),
    ({"image_size": [224, 448]}, {}, "square image_size"),
])
def test_configs_the_runtime_cannot_run_are_refused(vision, top, fragment) -> None:
    from convert.mmproj.base import UnsupportedConfig

    with pytest.raises(UnsupportedConfig, match=fragment):
        metadata(vision=vision, top=top)
