"""Gemma 4 12B "Unified" embedders → the ``gemma4uv`` (vision) and ``gemma4ua`` (audio) halves of the mmproj
(runtime: llama.cpp ``tools/mtmd/models/gemma4uv.cpp`` / ``gemma4ua.cpp``, loader ``clip.cpp``).

The Unified model has no encoder towers. Vision: each soft token is one merged patch of (patch × kernel)²
pixels (48×48 in the 12B) → LayerNorm → Linear → LayerNorm → + x and y position rows → LayerNorm →
weightless RMSNorm → projection into the text model. Audio: each soft token is a raw frame of 640
samples (40 ms at 16 kHz) → weightless RMSNorm → projection. clip.cpp multiplies the patch size by the
merge kernel (3 unless ``clip.vision.projector.scale_factor``), hard-codes the LayerNorms' eps to 1e-5
(PyTorch's default, what transformers uses) and the audio frame to 640 samples, and decodes image tokens
non-causally (transformers does so only with ``use_bidirectional_attention: "vision"``).

Caveat (:data:`ATTENTION_CAVEAT`, printed when the file is written): llama.cpp 0.3.36's ``gemma4`` text
runtime hard-codes non-causal attention to the sliding-window layers (``LLAMA_NON_CAUSAL_TYPE_SWA_ONLY``,
right for Gemma 4), while transformers' Unified model lets image tokens attend both ways on every layer.
The embeddings are exact; the text model's answers to images differ (tests/runtime/
test_gemma4_unified_media.py measures it and fails once a llama.cpp runs Unified images as transformers).

Tensor map (``model.`` already stripped; transformers 5.23 saves the vision embedder as ``vision_embedder.*``
and loads it as ``embed_vision.*``, both are accepted):

* ``patch_dense`` np(D, p·p·3), its columns in the processor's (row, column, channel) order → the (channel,
  row, column) order of ggml's im2col → ``v.patch_embd.weight`` / ``.bias``; ``patch_ln1`` (over the same
  p·p·3 values) is permuted the same way → ``v.patch_norm.1.*``; ``patch_ln2`` → ``v.patch_norm.2.*``,
  ``pos_norm`` → ``v.patch_norm.3.*``.
* ``pos_embedding`` np(P, 2, D) → np(2, P, D) = ``v.position_embd.weight`` (the graph views the x table,
  then the y table).
* ``embed_vision.embedding_projection`` → ``mm.input_projection.weight``; ``embed_audio.embedding_projection``
  → ``mm.a.input_projection.weight``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from convert.mmproj.base import (
    AUDIO, VISION, ArraySource, Encoder, EncoderConfig, EncoderRule, Field, ReshapedSource, TensorSource,
    UnsupportedCheckpoint, UnsupportedConfig, f32, f32_array, u32,
)
from convert.mmproj.gemma4_audio import feature_extractor
from convert.mmproj.gemma4_vision import RUNTIME_POOL, UNUSED_IMAGE_SIZE, max_pixels, normalisation

ARCHITECTURES = ("Gemma4UnifiedForConditionalGeneration",)
VISION_DEFAULTS = {  # transformers 5.23 Gemma4UnifiedVisionConfig()
    "patch_size": 16, "pooling_kernel_size": 3, "mm_embed_dim": 3840, "mm_posemb_size": 1120,
    "rms_norm_eps": 1e-6, "output_proj_dims": 3840,
}
AUDIO_DEFAULTS = {"audio_embed_dim": 640, "rms_norm_eps": 1e-6}  # Gemma4UnifiedAudioConfig()
RUNTIME_FRAME = 640  # clip.cpp's gemma4ua frame size (samples per soft token), whatever the file says
RUNTIME_AUDIO_EPS = 1e-6  # clip.cpp hard-codes the gemma4ua RMSNorm eps
RUNTIME_SAMPLING_RATE = 16_000  # mtmd resamples audio to this rate
FEATURE_EXTRACTOR_TYPE = "Gemma4UnifiedAudioFeatureExtractor"
ATTENTION_CAVEAT = ("llama.cpp 0.3.36 lets image tokens attend both ways on sliding-window layers only, "
                    "transformers' Unified model on every layer, so answers about images differ from transformers'")


def _require_processor(cfg: EncoderConfig) -> None:
    """Without a processor file, the normalisation and the soft-token budget would be guesses (llama.cpp's
    converter stops with ``KeyError: 'image_mean'``)."""
    if not cfg.preprocessor:
        raise UnsupportedConfig("the checkpoint has no preprocessor_config.json or processor_config.json, which "
                                "say how images are normalised and sized")


def vision_metadata(cfg: EncoderConfig) -> list[Field]:
    hp = cfg.hp
    _require_processor(cfg)
    mode = cfg.text.get("use_bidirectional_attention")
    if mode != "vision":
        raise UnsupportedConfig(f"llama.cpp's gemma4uv lets image tokens attend both ways, as transformers does only "
                                f"with use_bidirectional_attention 'vision', but the text config has {mode!r}")
    if int(hp["output_proj_dims"]) != int(hp["mm_embed_dim"]):
        raise UnsupportedConfig(f"vision output_proj_dims {hp['output_proj_dims']} differs from mm_embed_dim "
                                f"{hp['mm_embed_dim']}")
    mean, std = normalisation(cfg.preprocessor)
    fields = [
        u32("clip.vision.image_size", UNUSED_IMAGE_SIZE),
        u32("clip.vision.patch_size", hp["patch_size"]),
        u32("clip.vision.embedding_length", hp["mm_embed_dim"]),
        u32("clip.vision.feed_forward_length", 0),  # no transformer blocks
        u32("clip.vision.block_count", 0),
        u32("clip.vision.attention.head_count", 0),
        f32("clip.vision.attention.layer_norm_epsilon", hp["rms_norm_eps"]),
        f32_array("clip.vision.image_mean", mean),
        f32_array("clip.vision.image_std", std),
        u32("clip.vision.image_max_pixels", max_pixels(hp, cfg.preprocessor)),
    ]
    if int(hp["pooling_kernel_size"]) != RUNTIME_POOL:
        fields.append(u32("clip.vision.projector.scale_factor", hp["pooling_kernel_size"]))
    return fields


def audio_metadata(cfg: EncoderConfig) -> list[Field]:
    hp = cfg.hp
    _require_processor(cfg)
    front_end: Mapping[str, Any] = feature_extractor(cfg.preprocessor)
    if cfg.preprocessor.get("feature_extractor_type") == FEATURE_EXTRACTOR_TYPE:
        front_end = cfg.preprocessor
    frame = int(hp["audio_embed_dim"])
    checks = (("audio_config.audio_embed_dim", frame, RUNTIME_FRAME),
              ("the feature extractor's audio_samples_per_token", front_end.get("audio_samples_per_token", frame),
               RUNTIME_FRAME),
              ("the feature extractor's sampling_rate", front_end.get("sampling_rate", RUNTIME_SAMPLING_RATE),
               RUNTIME_SAMPLING_RATE))
    for what, value, fixed in checks:
        if int(value) != fixed:
            raise UnsupportedConfig(f"llama.cpp's gemma4ua hard-codes {fixed}, but {what} is {value}")
    if not math.isclose(float(hp["rms_norm_eps"]), RUNTIME_AUDIO_EPS, rel_tol=1e-6):
        raise UnsupportedConfig(f"llama.cpp's gemma4ua hard-codes RMSNorm eps {RUNTIME_AUDIO_EPS:g}, but "
                                f"audio_config.rms_norm_eps is {hp['rms_norm_eps']}")
    return [
        u32("clip.audio.num_mel_bins", frame),  # clip.cpp reads it as the frame size, fixed to 640 for gemma4ua
        u32("clip.audio.embedding_length", frame),
        u32("clip.audio.feed_forward_length", 0),
        u32("clip.audio.block_count", 0),
        u32("clip.audio.attention.head_count", 0),
        f32("clip.audio.attention.layer_norm_epsilon", hp["rms_norm_eps"]),
    ]


# ---------------------------------------------------------------- tensors


def _chw_order(width: int) -> np.ndarray:
    """Index map from im2col's (channel, row, column) positions to the processor's (row, column, channel)."""
    patch = math.isqrt(width // 3)
    if patch * patch * 3 != width:
        raise UnsupportedCheckpoint(f"the patch embedding has {width} inputs, not 3·p² for a square patch")
    return np.arange(width).reshape(patch, patch, 3).transpose(2, 0, 1).reshape(-1)


def chw_columns(source: TensorSource) -> TensorSource:
    """patch_dense np(D, p·p·3) (or patch_ln1's p·p·3 vector) with its inputs in im2col's order."""
    values = source.read(0, source.rows)
    return ReshapedSource(ArraySource(values[:, _chw_order(source.cols)]), source.shape)


def axis_major_positions(source: TensorSource) -> TensorSource:
    """pos_embedding np(P, 2, D) → np(2, P, D): the x table, then the y table."""
    positions, axes, width = source.shape
    if axes != 2:
        raise UnsupportedCheckpoint(f"pos_embedding has shape {list(source.shape)}, expected (P, 2, D)")
    return ArraySource(source.read(0, source.rows).reshape(positions, axes, width).transpose(1, 0, 2))


_EMBEDDER = r"(?:vision_embedder|embed_vision)\."
_NORMS = {"patch_ln1": "v.patch_norm.1", "patch_ln2": "v.patch_norm.2", "pos_norm": "v.patch_norm.3"}

VISION_TENSORS = (
    EncoderRule(_EMBEDDER + r"patch_dense\.weight", "v.patch_embd.weight", reshape=chw_columns),
    EncoderRule(_EMBEDDER + r"patch_dense\.bias", "v.patch_embd.bias"),
    *(EncoderRule(_EMBEDDER + hf + r"\." + part, f"{gguf}.{part}", reshape=chw_columns if hf == "patch_ln1" else None)
      for hf, gguf in _NORMS.items() for part in ("weight", "bias")),
    EncoderRule(_EMBEDDER + r"pos_embedding", "v.position_embd.weight", reshape=axis_major_positions),
    EncoderRule(r"embed_vision\.(?:multimodal_embedder\.)?embedding_projection\.weight", "mm.input_projection.weight"),
)
AUDIO_TENSORS = (EncoderRule(r"embed_audio\.embedding_projection\.weight", "mm.a.input_projection.weight"),)

GEMMA4_UNIFIED_VISION = Encoder(
    name="Gemma 4 Unified vision",
    hf_architectures=ARCHITECTURES,
    modality=VISION,
    config_key="vision_config",
    owns=r"(vision_embedder|embed_vision)\.",
    projector_type="gemma4uv",
    defaults=VISION_DEFAULTS,
    metadata=vision_metadata,
    tensors=VISION_TENSORS,
    caveat=ATTENTION_CAVEAT,
)

GEMMA4_UNIFIED_AUDIO = Encoder(
    name="Gemma 4 Unified audio",
    hf_architectures=ARCHITECTURES,
    modality=AUDIO,
    config_key="audio_config",
    owns=r"embed_audio\.",
    projector_type="gemma4ua",
    defaults=AUDIO_DEFAULTS,
    metadata=audio_metadata,
    tensors=AUDIO_TENSORS,
)
