"""Gemma 4 vision encoder → the ``gemma4v`` half of the mmproj (docs/converter-spec.md §11; runtime: llama.cpp
``tools/mtmd/models/gemma4v.cpp``, loader ``clip.cpp``, dyn-size preprocessing in ``mtmd-image.cpp``).

What the runtime computes (and so what a config must mean to be converted): pixels ×2−1 (the image
processor only rescales to [0, 1]), a bias-free conv patch embedding, x and y position rows added, a ViT
with RMSNorms (no +1), per-head q/k norms, a weightless v norm, 2-D NEOX rope (first half of each head
rotated by the column, second half by the row, θ **100** hard-coded), attention scale 1, a gated MLP
(``clip.use_gelu`` → tanh GELU), k×k average pooling × √hidden (k = ``clip.vision.projector.scale_factor``,
3 when absent), optional standardisation, a weightless RMSNorm and the projection into the text model.

Tensor map (``model.`` already stripped by the pipeline):

* ``vision_tower.patch_embedder.input_proj.weight`` np(hidden, p·p·3), its columns in the processor's
  (row, column, channel) patch order → np(hidden, 3, p, p) = ggml {p, p, 3, hidden}, the conv kernel.
* ``vision_tower.patch_embedder.position_embedding_table`` np(2, P, hidden) → ``v.position_embd.weight``
  ggml {hidden, P, 2} as is (the graph views the x table then the y table), F32.
* per block ``N``: ``self_attn.{q,k,v,o}_proj.linear.weight`` → ``v.blk.N.attn_{q,k,v,out}.weight``;
  ``mlp.{gate,up,down}_proj.linear.weight`` → ``ffn_{gate,up,down}``; norms ``input_layernorm`` → ``ln1``,
  ``post_attention_layernorm`` → ``attn_post_norm``, ``pre_feedforward_layernorm`` → ``ln2``,
  ``post_feedforward_layernorm`` → ``ffn_post_norm``, ``self_attn.{q,k}_norm`` → ``attn_{q,k}_norm``.
* ClippableLinear bounds (0-D buffers ``input_min`` / ``input_max`` / ``output_min`` / ``output_max``,
  present when ``use_clipped_linears``) → 1-element F32 tensors named after their weight
  (``v.blk.N.attn_q.input_max``): clip.cpp finds them by replacing ``.weight`` and reads them as F32.
* ``vision_tower.std_bias`` / ``std_scale`` (only with ``standardize``) → ``v.std_bias`` / ``v.std_scale``.
* ``embed_vision.embedding_projection.weight`` np(text hidden, hidden) → ``mm.input_projection.weight``
  (the RMSNorm before it has no weight).
"""
from __future__ import annotations

import math
import re


from convert.generations.base import rope_parameters
from convert.mmproj.base import (
    VISION, ArraySource, Encoder, EncoderConfig, EncoderRule, Field, TensorSource, UnsupportedCheckpoint,
    UnsupportedConfig, boolean, f32, f32_array, keep_f32, squeeze, u32,
)

DEFAULTS = {  # transformers 5.23 Gemma4VisionConfig() for every field read here
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 16, "num_attention_heads": 12,
    "num_key_value_heads": 12, "head_dim": 64, "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
    "pooling_kernel_size": 3, "patch_size": 16, "rope_parameters": None,
}
RUNTIME_ROPE_THETA = 100.0  # clip.cpp sets hparams.rope_theta = 100 for gemma4v; no key overrides it
RUNTIME_POOL = 3  # clip.cpp's n_merge for gemma4v unless clip.vision.projector.scale_factor says otherwise
# clip.cpp requires clip.vision.image_size, but gemma4v sizes every image dynamically (70–1120 tokens)
# and never reads it; the reference converter writes this placeholder
UNUSED_IMAGE_SIZE = 224
TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_tanh")
MTMD_RESCALE = 1 / 255  # mtmd turns uint8 pixels into [0, 1] before the graph's ×2−1
# transformers' Gemma4ImageProcessor default soft-token budget per image (processor_config.json's
# max_soft_tokens overrides it). clip.cpp 0.3.36 ignores clip.vision.image_max_pixels for gemma4v (it
# aims for 70–1120 tokens); gemma_edge's projector reads it to size images as transformers does.
MAX_SOFT_TOKENS = 280


def _rope_theta(hp) -> float:
    params, _ = rope_parameters(hp)
    rope_type = params.get("rope_type", "axial")
    if rope_type != "axial":
        raise UnsupportedConfig(f"llama.cpp's gemma4v runs axial 2-D rope, but the vision rope_type is {rope_type!r}")
    return float(params.get("rope_theta", RUNTIME_ROPE_THETA))


def _head_dim(hp) -> int:
    return int(hp.get("head_dim") or int(hp["hidden_size"]) // int(hp["num_attention_heads"]))


def normalisation(pre) -> tuple[list[float], list[float]]:
    """(mean, std) mtmd must apply: the processor's when it normalises, else the identity
    (Gemma4ImageProcessor only rescales to [0, 1]; the model itself maps to [-1, 1])."""
    if abs(float(pre.get("rescale_factor", MTMD_RESCALE)) - MTMD_RESCALE) > 1e-9 or not pre.get("do_rescale", True):
        raise UnsupportedConfig(f"mtmd scales pixels by 1/255, but the image processor's rescale is "
                                f"{pre.get('rescale_factor') if pre.get('do_rescale', True) else 'off'}")
    if pre.get("do_normalize", False):
        return list(pre["image_mean"]), list(pre["image_std"])
    return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]


def max_pixels(hp, pre) -> int:
    """The image processor's budget in pixels of the resized image: max_soft_tokens soft tokens of
    (patch · pooling kernel)² pixels each."""
    side = int(hp["patch_size"]) * int(hp["pooling_kernel_size"])
    return int(pre.get("max_soft_tokens", MAX_SOFT_TOKENS)) * side * side


def metadata(cfg: EncoderConfig) -> list[Field]:
    hp = cfg.hp
    if hp["hidden_activation"] not in TANH_GELU:
        raise UnsupportedConfig(f"llama.cpp's gemma4v MLP uses the tanh-approximated GELU, but hidden_activation "
                                f"is {hp['hidden_activation']!r}")
    theta = _rope_theta(hp)
    if theta != RUNTIME_ROPE_THETA:
        raise UnsupportedConfig(f"llama.cpp's gemma4v hard-codes vision rope theta {RUNTIME_ROPE_THETA:g}, "
                                f"but the config asks for {theta:g}")
    head_dim, heads, kv_heads = _head_dim(hp), int(hp["num_attention_heads"]), int(hp["num_key_value_heads"])
    if head_dim % 4:
        raise UnsupportedConfig(f"llama.cpp's gemma4v rotates each half of a head by NEOX pairs, which needs a "
                                f"head_dim divisible by 4, got {head_dim}")
    if heads % kv_heads:
        raise UnsupportedConfig(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    mean, std = normalisation(cfg.preprocessor)
    fields = [
        u32("clip.vision.image_size", UNUSED_IMAGE_SIZE),
        u32("clip.vision.patch_size", hp["patch_size"]),
        u32("clip.vision.embedding_length", hp["hidden_size"]),
        u32("clip.vision.feed_forward_length", hp["intermediate_size"]),
        u32("clip.vision.block_count", hp["num_hidden_layers"]),
        u32("clip.vision.attention.head_count", heads),
        f32("clip.vision.attention.layer_norm_epsilon", hp["rms_norm_eps"]),
        f32_array("clip.vision.image_mean", mean),
        f32_array("clip.vision.image_std", std),
        boolean("clip.use_gelu", True),
        u32("clip.vision.image_max_pixels", max_pixels(hp, cfg.preprocessor)),
    ]
    # keys whose absence means the runtime's default: written only when the checkpoint differs from it
    if kv_heads != heads:
        fields.append(u32("clip.vision.attention.head_count_kv", kv_heads))
    if head_dim * heads != int(hp["hidden_size"]):
        fields.append(u32("clip.vision.attention.head_dim", head_dim))
    if int(hp["pooling_kernel_size"]) != RUNTIME_POOL:
        fields.append(u32("clip.vision.projector.scale_factor", hp["pooling_kernel_size"]))
    return fields


def patch_kernel(source: TensorSource) -> TensorSource:
    """input_proj np(hidden, p·p·3) in (row, column, channel) order → conv kernel np(hidden, 3, p, p)."""
    hidden, width = source.shape
    patch = math.isqrt(width // 3)
    if patch * patch * 3 != width:
        raise UnsupportedCheckpoint(f"patch_embedder.input_proj has {width} inputs, not 3·p² for a square patch")
    weight = source.read(0, source.rows).reshape(hidden, patch, patch, 3)
    return ArraySource(weight.transpose(0, 3, 1, 2))


_LAYER = r"vision_tower\.encoder\.layers\.(?P<bid>\d+)\."
_LINEARS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
            "self_attn.o_proj": "attn_out", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down"}
_NORMS = {"input_layernorm": "ln1", "post_attention_layernorm": "attn_post_norm", "pre_feedforward_layernorm": "ln2",
          "post_feedforward_layernorm": "ffn_post_norm", "self_attn.q_norm": "attn_q_norm",
          "self_attn.k_norm": "attn_k_norm"}
_BOUND = r"(?P<bound>input_min|input_max|output_min|output_max)"


def _layer(hf_suffix: str, gguf_suffix: str, **kwargs) -> EncoderRule:
    return EncoderRule(_LAYER + hf_suffix, "v.blk.{bid}." + gguf_suffix, **kwargs)


TENSORS = (
    EncoderRule(r"vision_tower\.patch_embedder\.input_proj\.weight", "v.patch_embd.weight", reshape=patch_kernel),
    EncoderRule(r"vision_tower\.patch_embedder\.position_embedding_table", "v.position_embd.weight",
                storage=keep_f32),
    *(_layer(re.escape(hf) + r"\.linear\.weight", f"{gg}.weight") for hf, gg in _LINEARS.items()),
    # the graph clamps each ClippableLinear's input and output with these; get_vector reads them as F32
    *(_layer(re.escape(hf) + r"\." + _BOUND, gg + ".{bound}", reshape=squeeze, storage=keep_f32, required=False)
      for hf, gg in _LINEARS.items()),
    *(_layer(re.escape(hf) + r"\.weight", f"{gg}.weight") for hf, gg in _NORMS.items()),
    # older layouts carry a per-layer output scale (the reference maps it to out_scale; the graph
    # multiplies the layer output by it); transformers 5.23 has none
    _layer(r"layer_scalar", "out_scale.weight", reshape=squeeze, required=False),
    EncoderRule(r"vision_tower\.std_bias", "v.std_bias", required=False),
    EncoderRule(r"vision_tower\.std_scale", "v.std_scale", required=False),
    EncoderRule(r"embed_vision\.embedding_projection\.weight", "mm.input_projection.weight"),
)


GEMMA4_VISION = Encoder(
    name="Gemma 4 vision",
    hf_architectures=("Gemma4ForConditionalGeneration",),
    modality=VISION,
    config_key="vision_config",
    owns=r"(vision_tower|embed_vision)\.",
    projector_type="gemma4v",
    defaults=DEFAULTS,
    metadata=metadata,
    tensors=TENSORS,
)
