"""Gemma 4 E2B/E4B audio encoder → mmproj (gemma4a): llama.cpp's mtmd against transformers on a tiny
seeded checkpoint, our file against llama.cpp's reference converter, and the configs we refuse.

The two sides compute log-mel features independently (transformers' Gemma4AudioFeatureExtractor,
mtmd-audio.cpp's gemma4a front end). Same framing (semicausal 160-sample left pad, 320-sample periodic
Hann window zero-padded to a 512-point FFT, hop 160), same HTK mel filters without area normalisation and
natural log; one known difference: transformers takes log(mel + 0.001), mtmd log(max(mel, 0.001)). On the
oracle waveform that moves the features by up to 0.09 (mean 0.002) and the embeddings by a per-token
cosine of ~1e-6, which is what remains between the two sides: feeding transformers the max-floor features
brings it closer to mtmd (checked below). Hence the thresholds: per-token cosine >= 0.9999 in F32 and
>= 0.999 in F16, where removing the checkpoint's clip bounds alone drops it to ~0.7.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from convert.checkpoint import open_checkpoint
from convert.generations import generation_for
from convert.mmproj.base import EncoderConfig, UnsupportedConfig
from convert.mmproj.gemma4_audio import FRONT_END_FIXED, GEMMA4_AUDIO, RUNTIME_FIXED
from convert.mmproj.pipeline import plan_mmproj, write_mmproj
from convert.storage import NATIVE_TYPES
from tests.convert.mtmd_embed import audio_embeddings, per_token_cosines
from tests.convert.oracle import gguf_fields, read_header, reference_convert
from tests.convert.tiny import linked_copy
from tests.convert.tiny_gemma4 import convert_with_ours
from tests.convert.tiny_gemma4_audio import (
    SAMPLE_RATE, gemma4_audio_checkpoint, hf_audio_embeddings, hf_log_mel, test_waveform,
)

MIN_COSINE = {"f32": 0.9999, "f16": 0.999}
MS_PER_TOKEN = 40  # Gemma4Processor.audio_ms_per_token: 4x subsampling of 10 ms mel frames
MEL_FLOOR = 1e-3


def is_audio_key(key: str) -> bool:
    return key.startswith("clip.audio.") or key == "clip.has_audio_encoder"


def is_audio_tensor(name: str) -> bool:
    return name.startswith(("a.", "mm.a."))


def write_ours(model_dir: Path, out: Path, outtype: str) -> tuple[Path, list[str]]:
    checkpoint = open_checkpoint(model_dir)
    text_hparams = generation_for(checkpoint.architecture).hparams(checkpoint.config)
    plan = plan_mmproj(checkpoint, text_hparams, NATIVE_TYPES[outtype])
    if not plan.empty:
        write_mmproj(plan, out, force=True)
    return out, plan.notes


@pytest.fixture(scope="module")
def checkpoint_dir() -> Path:
    return gemma4_audio_checkpoint()


@pytest.fixture(scope="module")
def text_gguf(checkpoint_dir: Path, tmp_path_factory) -> Path:
    return convert_with_ours(checkpoint_dir, tmp_path_factory.mktemp("text") / "text-f32.gguf", "f32")


@pytest.fixture(scope="module")
def mmproj(checkpoint_dir: Path, tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("mmproj")
    return {t: write_ours(checkpoint_dir, directory / f"mmproj-{t}.gguf", t)[0] for t in ("f32", "f16")}


# ---------------------------------------------------------------- mtmd vs transformers


@pytest.mark.parametrize(("outtype", "seconds"), [("f32", 1.0), ("f32", 2.0), ("f16", 1.0)])
def test_audio_embeddings_match_transformers(checkpoint_dir, text_gguf, mmproj, outtype, seconds) -> None:
    waveform = test_waveform(seconds)
    ours = audio_embeddings(text_gguf, mmproj[outtype], waveform, SAMPLE_RATE)
    theirs, _ = hf_audio_embeddings(checkpoint_dir, waveform)
    assert ours.shape == theirs.shape == (math.ceil(1000 * seconds / MS_PER_TOKEN), 64)
    cos = per_token_cosines(ours, theirs)
    assert cos.min() >= MIN_COSINE[outtype], f"min per-token cosine {cos.min():.7f} (mean {cos.mean():.7f})"


def test_remaining_gap_is_the_log_floor(checkpoint_dir, text_gguf, mmproj) -> None:
    """transformers fed mtmd's log(max(mel, floor)) features lands closer to mtmd than with its own
    log(mel + floor): the front ends agree apart from that rule."""
    import torch
    from transformers import Gemma4ForConditionalGeneration

    waveform = test_waveform(1.0)
    ours = audio_embeddings(text_gguf, mmproj["f32"], waveform, SAMPLE_RATE)
    theirs, mel = hf_audio_embeddings(checkpoint_dir, waveform)
    magnitude = np.exp(mel.astype(np.float64)) - MEL_FLOOR
    max_floor = np.log(np.maximum(magnitude, MEL_FLOOR)).astype(np.float32)
    assert 0 < np.abs(max_floor - mel).max() < 0.1

    model = Gemma4ForConditionalGeneration.from_pretrained(checkpoint_dir, dtype=torch.float32).eval()
    features = torch.from_numpy(max_floor)[None]
    with torch.no_grad():
        out = model.model.get_audio_features(features, torch.ones(features.shape[:2], dtype=torch.bool))
    theirs_max_floor = out.pooler_output[0].numpy()
    gap_own, gap_max_floor = 1 - per_token_cosines(ours, theirs).min(), 1 - per_token_cosines(ours, theirs_max_floor).min()
    assert gap_max_floor < gap_own, (gap_max_floor, gap_own)
    assert np.abs(ours - theirs_max_floor).max() < np.abs(ours - theirs).max()


def test_oracle_features_are_unpadded(checkpoint_dir) -> None:
    """The oracle waveforms need no padding on the transformers side (mtmd never pads): every mel frame
    is valid and their count is the processor's."""
    for seconds in (1.0, 2.0):
        n = len(test_waveform(seconds))
        assert n % 128 == 0
        mel = hf_log_mel(checkpoint_dir, test_waveform(seconds))
        assert mel.shape == ((n + 160 - 321) // 160 + 1, 128)


def test_one_file_holds_both_encoders(checkpoint_dir, text_gguf, mmproj) -> None:
    """E2B/E4B: the vision and the audio encoder share one mmproj, and mtmd runs each from it."""
    pytest.importorskip("convert.mmproj.gemma4_vision", reason="helper B's Gemma 4 vision encoder is not in yet")
    from tests.convert.mtmd_embed import image_embeddings
    from tests.convert.tiny_gemma4_vision import hf_image_embeddings, test_image

    fields = gguf_fields(mmproj["f32"])
    assert fields["clip.has_vision_encoder"] == ("BOOL", True) and fields["clip.has_audio_encoder"] == ("BOOL", True)
    assert fields["clip.vision.projector_type"] == ("STRING", "gemma4v")
    assert fields["clip.audio.projector_type"] == ("STRING", "gemma4a")
    assert "clip.projector_type" not in fields
    image = test_image()
    ours = image_embeddings(text_gguf, mmproj["f32"], image)
    theirs = hf_image_embeddings(checkpoint_dir, image)
    assert ours.shape == theirs.shape
    assert per_token_cosines(ours, theirs).min() >= 0.999


# ---------------------------------------------------------------- against llama.cpp's reference converter


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_audio_part_matches_reference_converter(checkpoint_dir, mmproj, outtype, tmp_path) -> None:
    """Same clip.audio.* keys and a.*/mm.a.* tensors (names, types, shapes, bytes) as llama.cpp's
    convert_hf_to_gguf.py --mmproj, except the deliberate differences asserted here:
    * per_dim_scale.weight = softplus(per_dim_scale): ours rounds a float64 softplus once, the reference
      stores torch's float32 softplus; they may differ by 1 ulp.
    * the projector type key: the reference always writes clip.audio.projector_type; ours writes
      clip.projector_type when the audio encoder is the file's only one (no vision encoder registered)."""
    reference = reference_convert(checkpoint_dir, tmp_path / "reference.gguf", outtype, mmproj=True)
    ours_fields, ref_fields = gguf_fields(mmproj[outtype]), gguf_fields(reference)
    ours_audio = {k: v for k, v in ours_fields.items() if is_audio_key(k) and k != "clip.audio.projector_type"}
    ref_audio = {k: v for k, v in ref_fields.items() if is_audio_key(k) and k != "clip.audio.projector_type"}
    assert ours_audio == ref_audio
    assert ref_fields["clip.audio.projector_type"] == ("STRING", "gemma4a")
    key = "clip.audio.projector_type" if "clip.has_vision_encoder" in ours_fields else "clip.projector_type"
    assert ours_fields[key] == ("STRING", "gemma4a")

    ours_tensors, ref_tensors = audio_tensors(mmproj[outtype]), audio_tensors(reference)
    assert sorted(ours_tensors) == sorted(ref_tensors)
    for name, (qtype, shape, data) in ours_tensors.items():
        ref_qtype, ref_shape, ref_data = ref_tensors[name]
        assert (qtype, shape) == (ref_qtype, ref_shape), name
        if name.endswith("per_dim_scale.weight"):
            ulps = np.abs(data.view(np.int32).astype(np.int64) - ref_data.view(np.int32).astype(np.int64))
            assert ulps.max() <= 1, name
        else:
            assert data.tobytes() == ref_data.tobytes(), name


def audio_tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], np.ndarray]]:
    header = read_header(path)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    dtypes = {"F32": np.float32, "F16": np.float16}
    return {name: (qtype, shape, np.array(raw[start:start + nbytes]).view(dtypes[qtype]))
            for name, (qtype, shape, start, nbytes) in header.tensors.items() if is_audio_tensor(name)}


# ---------------------------------------------------------------- refusals


def encoder_config(checkpoint_dir: Path, audio: dict | None = None, front_end: dict | None = None) -> EncoderConfig:
    raw = json.loads((checkpoint_dir / "config.json").read_text())
    preprocessor = json.loads((checkpoint_dir / "processor_config.json").read_text())
    preprocessor["feature_extractor"].update(front_end or {})
    return EncoderConfig(GEMMA4_AUDIO.hparams({**raw["audio_config"], **(audio or {})}), raw["text_config"], raw,
                         preprocessor)


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if value is None:
        return [1.0] * 128
    return value + "x"


@pytest.mark.parametrize("key", sorted(RUNTIME_FIXED))
def test_refuses_audio_config_the_runtime_hard_codes(checkpoint_dir, key) -> None:
    with pytest.raises(UnsupportedConfig, match=f"audio_config.{key}"):
        GEMMA4_AUDIO.metadata(encoder_config(checkpoint_dir, audio={key: changed(RUNTIME_FIXED[key][0])}))


@pytest.mark.parametrize("key", sorted(FRONT_END_FIXED))
def test_refuses_feature_extractor_the_runtime_hard_codes(checkpoint_dir, key) -> None:
    with pytest.raises(UnsupportedConfig, match=f"front end uses {key} ="):
        GEMMA4_AUDIO.metadata(encoder_config(checkpoint_dir, front_end={key: changed(FRONT_END_FIXED[key])}))


@pytest.mark.parametrize(("audio", "front_end", "message"), [
    ({"gradient_clipping": 5.0}, {}, "gradient_clipping"),
    ({"subsampling_conv_channels": [128, 8, 8]}, {}, "2 subsampling convs"),
    ({"num_attention_heads": 5}, {}, "not a multiple"),
    ({}, {"feature_size": 80}, "80 mel bins"),
])
def test_refuses_inconsistent_configs(checkpoint_dir, audio, front_end, message) -> None:
    with pytest.raises(UnsupportedConfig, match=message):
        GEMMA4_AUDIO.metadata(encoder_config(checkpoint_dir, audio=audio, front_end=front_end))


def test_metadata_defaults_without_feature_extractor_config(checkpoint_dir) -> None:
    """No processor config: transformers' feature extractor defaults (128 mel bins) apply."""
    cfg = encoder_config(checkpoint_dir)
    bare = EncoderConfig(cfg.hp, cfg.text, cfg.top, {})
    assert GEMMA4_AUDIO.metadata(bare) == GEMMA4_AUDIO.metadata(cfg)


def test_refused_audio_tower_is_a_note_and_no_audio_in_the_file(checkpoint_dir, tmp_path) -> None:
    """A checkpoint whose audio tower the runtime cannot run converts without it, saying why in one line."""
    copy = linked_copy(checkpoint_dir, tmp_path / "checkpoint",
                       lambda config: config["audio_config"].update(attention_chunk_size=16))
    out, notes = write_ours(copy, tmp_path / "mmproj.gguf", "f32")
    assert any(n.startswith("Gemma 4 audio (conformer): not supported: llama.cpp's gemma4a runs chunks of 12 frames")
               for n in notes), notes
    if out.exists():
        assert not [n for n in read_header(out).tensors if is_audio_tensor(n)]
        assert not [k for k in gguf_fields(out) if is_audio_key(k)]
    shutil.rmtree(copy)
