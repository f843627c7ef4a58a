"""Gemma 4 E2B/E4B audio encoder (USM conformer) → the ``gemma4a`` half of the mmproj.

The runtime is llama.cpp's ``tools/mtmd/models/gemma4a.cpp`` (graph) with ``clip.cpp`` (loader) and
``mtmd-audio.cpp`` (log-mel front end). Both hard-code much of the architecture, so this module only
converts configs that match those constants (``RUNTIME_FIXED``, ``FRONT_END_FIXED``) and refuses the rest
with the runtime's assumption in the message.

Tensor map (HF ``model.audio_tower.*`` / ``model.embed_audio.*`` → GGUF), as clip.cpp loads it:

* subsampling: ``layer{0,1}.conv`` → ``a.conv1d.{i}.weight`` (np(C_out, C_in, 3, 3) as is: ggml's
  {3 mel, 3 time, C_in, C_out} is the conv over (time, mel) that transformers runs), ``layer{i}.norm`` →
  ``a.conv1d.{i}.norm.weight`` (LayerNorm without bias), ``input_proj_linear`` → ``a.input_projection``
  (its input is time-major (mel', channel) flattened, the same order ggml's permute produces).
* per block: ``feed_forward1`` / ``feed_forward2`` → ``ffn_{norm,up,down,post_norm}`` and the same with
  ``_1``; ``norm_pre_attn`` / ``norm_post_attn`` / ``norm_out`` → ``attn_pre_norm`` / ``attn_post_norm``
  / ``ln2``; ``self_attn.{q,k,v}_proj`` / ``post`` / ``relative_k_proj`` → ``attn_q/k/v/out/k_rel``;
  ``self_attn.per_dim_scale`` → ``per_dim_scale.weight`` through softplus (transformers applies
  softplus at run time, the graph multiplies by the stored vector); ``lconv1d.linear_start`` /
  ``linear_end`` → ``conv_pw1`` / ``conv_pw2``; ``lconv1d.depthwise_conv1d`` np(C, 1, K) → ``conv_dw``
  squeezed to ggml {K, C} (``ggml_ssm_conv``'s kernel layout); ``lconv1d.pre_layer_norm`` →
  ``conv_norm`` and ``lconv1d.conv_norm`` → ``norm_conv`` (the names cross: clip.cpp loads them crossed,
  following gguf-py's mapping). RMSNorm weights are used as stored (no +1).
* ClippableLinear bounds (0-D ``input_min`` ... ``output_max``) → 1-element F32 tensors next to their
  weight (``a.blk.N.attn_q.input_max``); clip.cpp finds them by replacing ``.weight`` in the weight name.
* ``output_proj`` (with bias) → ``a.pre_encode.out``; ``embed_audio.embedding_projection`` →
  ``mm.a.input_projection.weight`` (the RMSNorm before it has no weight).

Storage follows llama.cpp's reference converter: every audio tensor whose HF name contains ``conv``
(the two conv kernels, the depthwise kernel and — by the same name test — the subsampling input
projection) is F32; the other matrices take the file type.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from convert.mmproj.base import (
    AUDIO, Encoder, EncoderConfig, EncoderRule, Field, UnsupportedConfig, exact_rule, f32, keep_f32, squeeze, u32,
)

# transformers 5.23 Gemma4AudioConfig defaults of every field read here (official configs omit defaults).
DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 8, "hidden_act": "silu",
    "subsampling_conv_channels": [128, 32], "conv_kernel_size": 5, "residual_weight": 0.5,
    "attention_chunk_size": 12, "attention_context_left": 13, "attention_context_right": 0,
    "attention_logit_cap": 50.0, "rms_norm_eps": 1e-6, "gradient_clipping": 1e10,
}

# audio_config field → (the value gemma4a.cpp / clip.cpp hard-code, what the runtime does with it)
RUNTIME_FIXED: dict[str, tuple[Any, str]] = {
    "attention_chunk_size": (12, "chunks of 12 frames"),
    "attention_context_left": (13, "12 past frames of context"),
    "attention_context_right": (0, "no future context"),
    "attention_logit_cap": (50.0, "an attention logit soft-cap of 50"),
    "residual_weight": (0.5, "half-step feed-forward residuals (x 0.5)"),
    "conv_kernel_size": (5, "a depthwise conv of kernel 5 (4 frames of left padding)"),
    "rms_norm_eps": (1e-6, "every norm with eps 1e-6"),
    "hidden_act": ("silu", "SiLU feed-forward and conv activations"),
}
MIN_GRADIENT_CLIPPING = 1e10  # transformers' default: never reached, and the runtime never clamps activations

# Gemma4AudioFeatureExtractor setting → the value mtmd-audio.cpp's gemma4a front end hard-codes.
# Saved configs hold samples (frame_length, hop_length, fft_length); older ones the milliseconds.
FRONT_END_FIXED: dict[str, Any] = {
    "sampling_rate": 16_000, "frame_length": 320, "frame_length_ms": 20.0, "hop_length": 160,
    "hop_length_ms": 10.0, "fft_length": 512, "fft_overdrive": False, "min_frequency": 0.0,
    "max_frequency": 8000.0, "preemphasis": 0.0, "input_scale_factor": 1.0, "dither": 0.0,
    "mel_floor": 1e-3, "per_bin_mean": None, "per_bin_stddev": None,
}
DEFAULT_MEL_BINS = 128  # Gemma4AudioFeatureExtractor's feature_size
FEATURE_EXTRACTOR_TYPE = "Gemma4AudioFeatureExtractor"
SUBSAMPLING_LAYERS = 2  # gemma4a.cpp runs exactly two stride-2 3x3 convs

# ---------------------------------------------------------------- metadata


def feature_extractor(preprocessor: Mapping[str, Any]) -> Mapping[str, Any]:
    """The audio feature extractor's settings: ``processor_config.json``'s ``feature_extractor`` section,
    or a ``preprocessor_config.json`` that is the feature extractor itself; {} (defaults) otherwise."""
    nested = preprocessor.get("feature_extractor")
    if isinstance(nested, Mapping):
        return nested
    if preprocessor.get("feature_extractor_type") == FEATURE_EXTRACTOR_TYPE:
        return preprocessor
    return {}


def _same(value: Any, fixed: Any) -> bool:
    if isinstance(fixed, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.isclose(value, fixed, rel_tol=1e-6)
    return value == fixed


def check_runtime_fit(hp: Mapping[str, Any], front_end: Mapping[str, Any]) -> None:
    """Refuse a config whose audio tower or feature extractor differs from what llama.cpp hard-codes."""
    for key, (fixed, meaning) in RUNTIME_FIXED.items():
        if not _same(hp[key], fixed):
            raise UnsupportedConfig(f"llama.cpp's gemma4a runs {meaning}, but audio_config.{key} is {hp[key]!r}")
    if float(hp["gradient_clipping"]) < MIN_GRADIENT_CLIPPING:
        raise UnsupportedConfig(f"audio_config.gradient_clipping is {hp['gradient_clipping']!r}: transformers clamps "
                                "activations there, llama.cpp's gemma4a never does")
    if len(hp["subsampling_conv_channels"]) != SUBSAMPLING_LAYERS:
        raise UnsupportedConfig(f"llama.cpp's gemma4a runs {SUBSAMPLING_LAYERS} subsampling convs, but "
                                f"subsampling_conv_channels is {hp['subsampling_conv_channels']!r}")
    if hp["hidden_size"] % hp["num_attention_heads"]:
        raise UnsupportedConfig(f"audio hidden_size {hp['hidden_size']} is not a multiple of "
                                f"num_attention_heads {hp['num_attention_heads']}")
    for key, fixed in FRONT_END_FIXED.items():
        if key in front_end and not _same(front_end[key], fixed):
            raise UnsupportedConfig(f"llama.cpp's gemma4a log-mel front end uses {key} = {fixed!r}, but the "
                                    f"feature extractor has {front_end[key]!r}")


def mel_bins(hp: Mapping[str, Any], front_end: Mapping[str, Any]) -> int:
    """The feature extractor's mel bin count, checked against the subsampling stack it feeds:
    transformers sizes the input projection for (channels[0] // 4) mel columns after two stride-2 convs."""
    n_mel = int(front_end.get("feature_size", DEFAULT_MEL_BINS))
    after = n_mel
    for _ in range(SUBSAMPLING_LAYERS):
        after = (after - 1) // 2 + 1
    expected = hp["subsampling_conv_channels"][0] // 4
    if after != expected:
        raise UnsupportedConfig(f"the feature extractor gives {n_mel} mel bins ({after} after subsampling), but "
                                f"the audio tower's input projection expects {expected}")
    return n_mel


def metadata(cfg: EncoderConfig) -> list[Field]:
    hp = cfg.hp
    front_end = feature_extractor(cfg.preprocessor)
    check_runtime_fit(hp, front_end)
    return [
        u32("clip.audio.num_mel_bins", mel_bins(hp, front_end)),
        u32("clip.audio.embedding_length", hp["hidden_size"]),
        u32("clip.audio.feed_forward_length", 4 * hp["hidden_size"]),  # transformers' fixed FFN width
        u32("clip.audio.block_count", hp["num_hidden_layers"]),
        u32("clip.audio.attention.head_count", hp["num_attention_heads"]),
        f32("clip.audio.attention.layer_norm_epsilon", hp["rms_norm_eps"]),
    ]


# ---------------------------------------------------------------- tensors


def softplus(x: np.ndarray) -> np.ndarray:
    """transformers scales queries by softplus(per_dim_scale) at run time; gemma4a.cpp by the stored vector.
    Computed in float64 and rounded once (torch's float32 softplus, which the reference converter runs, can
    differ from it by 1 ulp)."""
    return np.logaddexp(0.0, x.astype(np.float64)).astype(np.float32)


LAYER = r"audio_tower\.layers\.(?P<bid>\d+)\."
BLOCK = "a.blk.{bid}."
CLIP_BOUNDS = ("input_min", "input_max", "output_min", "output_max")

# ClippableLinear module (under a layer) → GGUF stem; its weight is "<module>.linear.weight"
LINEARS = {
    "feed_forward1.ffw_layer_1": "ffn_up", "feed_forward1.ffw_layer_2": "ffn_down",
    "feed_forward2.ffw_layer_1": "ffn_up_1", "feed_forward2.ffw_layer_2": "ffn_down_1",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.post": "attn_out",
    "lconv1d.linear_start": "conv_pw1", "lconv1d.linear_end": "conv_pw2",
}
# RMSNorm (under a layer) → GGUF stem
NORMS = {
    "feed_forward1.pre_layer_norm": "ffn_norm", "feed_forward1.post_layer_norm": "ffn_post_norm",
    "feed_forward2.pre_layer_norm": "ffn_norm_1", "feed_forward2.post_layer_norm": "ffn_post_norm_1",
    "norm_pre_attn": "attn_pre_norm", "norm_post_attn": "attn_post_norm", "norm_out": "ln2",
    "lconv1d.pre_layer_norm": "conv_norm", "lconv1d.conv_norm": "norm_conv",
}


def _layer_rule(hf_suffix: str, gguf_suffix: str, **kwargs: Any) -> EncoderRule:
    return EncoderRule(hf=LAYER + re.escape(hf_suffix), gguf=BLOCK + gguf_suffix, **kwargs)


TENSORS: tuple[EncoderRule, ...] = (
    *(exact_rule(f"audio_tower.subsample_conv_projection.layer{i}.conv.weight", f"a.conv1d.{i}.weight",
                 storage=keep_f32) for i in range(SUBSAMPLING_LAYERS)),
    *(exact_rule(f"audio_tower.subsample_conv_projection.layer{i}.norm.weight", f"a.conv1d.{i}.norm.weight")
      for i in range(SUBSAMPLING_LAYERS)),
    exact_rule("audio_tower.subsample_conv_projection.input_proj_linear.weight", "a.input_projection.weight",
               storage=keep_f32),
    *(_layer_rule(f"{module}.linear.weight", f"{stem}.weight") for module, stem in LINEARS.items()),
    *(_layer_rule(f"{module}.{bound}", f"{stem}.{bound}", reshape=squeeze, required=False)
      for module, stem in LINEARS.items() for bound in CLIP_BOUNDS),
    *(_layer_rule(f"{module}.weight", f"{stem}.weight") for module, stem in NORMS.items()),
    _layer_rule("self_attn.relative_k_proj.weight", "attn_k_rel.weight"),
    _layer_rule("self_attn.per_dim_scale", "per_dim_scale.weight", transform=softplus),
    # np(C, 1, K) → np(C, K), i.e. ggml {K, C}: the kernel layout ggml_ssm_conv reads (F32 only)
    _layer_rule("lconv1d.depthwise_conv1d.weight", "conv_dw.weight", reshape=squeeze, storage=keep_f32),
    exact_rule("audio_tower.output_proj.weight", "a.pre_encode.out.weight"),
    exact_rule("audio_tower.output_proj.bias", "a.pre_encode.out.bias"),
    exact_rule("embed_audio.embedding_projection.weight", "mm.a.input_projection.weight"),
)

GEMMA4_AUDIO = Encoder(
    name="Gemma 4 audio (conformer)",
    hf_architectures=("Gemma4ForConditionalGeneration",),
    modality=AUDIO,
    config_key="audio_config",
    owns=r"(audio_tower|embed_audio)\.",
    projector_type="gemma4a",
    defaults=DEFAULTS,
    metadata=metadata,
    tensors=TENSORS,
)
