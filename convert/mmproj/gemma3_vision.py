"""Gemma 3 vision (SigLIP encoder + average-pool / RMSNorm / linear projector) → mmproj projector type
``gemma3`` (docs/converter-spec.md §11; runtime: llama.cpp ``tools/mtmd/models/siglip.cpp``).

Every tensor layout is read: legacy ``vision_tower.vision_model.*`` / ``multi_modal_projector.*``,
the ``model.``-prefixed one (the pipeline strips ``model.``), and ``vision_tower.*`` without
``vision_model.``, which is how transformers 5 saves the tower. mtmd resizes any image to
``image_size`` × ``image_size`` (bilinear) before the encoder, as Gemma 3's image processor does.
"""
from __future__ import annotations

import math
import re

from convert.mmproj.base import (
    VISION, Encoder, EncoderConfig, EncoderRule, Field, UnsupportedConfig, boolean, f16_except_in_f32,
    f32, f32_array, keep_f32, plus_one, u32,
)

DEFAULTS = {  # transformers 5.23 SiglipVisionConfig()
    "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
    "num_channels": 3, "image_size": 224, "patch_size": 16, "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
MM_TOKENS_PER_IMAGE = 256  # Gemma3Config().mm_tokens_per_image
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)  # Gemma3ImageProcessor's IMAGENET_STANDARD_MEAN / _STD
RUNTIME_POOL = 4  # clip.cpp's n_merge for gemma3 unless clip.vision.projector.scale_factor says otherwise
TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_tanh")


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise UnsupportedConfig(f"llama.cpp's gemma3 projector needs a square {name}, got {list(value)}")
        value = value[0]
    return int(value)


def pool_kernel(cfg: EncoderConfig) -> int:
    """Patches per side / image tokens per side: the average-pool kernel of the projector."""
    image_size, patch_size = _square(cfg.hp["image_size"], "image_size"), _square(cfg.hp["patch_size"], "patch_size")
    tokens = int(cfg.top.get("mm_tokens_per_image") or MM_TOKENS_PER_IMAGE)
    per_side = math.isqrt(tokens)
    patches = image_size // patch_size
    if image_size % patch_size or per_side * per_side != tokens or patches % per_side:
        raise UnsupportedConfig(
            f"llama.cpp's gemma3 projector pools a whole patch grid into a square of tokens, but image_size "
            f"{image_size} / patch_size {patch_size} does not pool evenly into mm_tokens_per_image {tokens}"
        )
    return patches // per_side


def metadata(cfg: EncoderConfig) -> list[Field]:
    hp, pre = cfg.hp, cfg.preprocessor
    if hp["hidden_act"] not in TANH_GELU:
        raise UnsupportedConfig(f"llama.cpp's SigLIP uses the tanh-approximated GELU, but hidden_act is {hp['hidden_act']!r}")
    if int(hp["num_channels"]) != 3:
        raise UnsupportedConfig(f"llama.cpp's SigLIP takes RGB images, but num_channels is {hp['num_channels']}")
    if int(hp["intermediate_size"]) == int(hp["hidden_size"]):
        # clip.cpp treats a gemma3 ffn_down whose rows equal n_embd as a legacy file with up/down swapped
        raise UnsupportedConfig("llama.cpp's gemma3 loader swaps the MLP weights when intermediate_size == hidden_size")
    if abs(float(pre.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise UnsupportedConfig(f"mtmd scales pixels by 1/255, but rescale_factor is {pre['rescale_factor']}")
    kernel = pool_kernel(cfg)
    fields = [
        u32("clip.vision.image_size", _square(hp["image_size"], "image_size")),
        u32("clip.vision.patch_size", _square(hp["patch_size"], "patch_size")),
        u32("clip.vision.embedding_length", hp["hidden_size"]),
        u32("clip.vision.feed_forward_length", hp["intermediate_size"]),
        u32("clip.vision.block_count", hp["num_hidden_layers"]),
        u32("clip.vision.attention.head_count", hp["num_attention_heads"]),
        f32("clip.vision.attention.layer_norm_epsilon", hp["layer_norm_eps"]),
        f32_array("clip.vision.image_mean", pre.get("image_mean") or IMAGE_MEAN),
        f32_array("clip.vision.image_std", pre.get("image_std") or IMAGE_STD),
        boolean("clip.use_gelu", True),
    ]
    if kernel != RUNTIME_POOL:
        fields.append(u32("clip.vision.projector.scale_factor", kernel))
    return fields


# transformers < 5 saves ``vision_tower.vision_model.*``, 5.x ``vision_tower.*`` (``model.`` already stripped)
_VIT = r"vision_tower\.(?:vision_model\.)?"
_LAYER = _VIT + r"encoder\.layers\.(?P<bid>\d+)\."
_PROJECTOR = r"multi_modal_projector\."


def _vit(hf_suffix: str, gguf: str | None, **kwargs) -> EncoderRule:
    return EncoderRule(_VIT + re.escape(hf_suffix), gguf, **kwargs)


def _layer(hf_suffix: str, gguf_suffix: str, **kwargs) -> EncoderRule:
    return EncoderRule(_LAYER + re.escape(hf_suffix), "v.blk.{bid}." + gguf_suffix, **kwargs)


def _projector(hf_suffix: str, gguf: str, **kwargs) -> EncoderRule:
    return EncoderRule(_PROJECTOR + re.escape(hf_suffix), gguf, **kwargs)


TENSORS = (
    # conv np(hidden, 3, p, p) → ggml {p, p, 3, hidden}; the reference keeps every .embeddings. tensor F32
    _vit("embeddings.patch_embedding.weight", "v.patch_embd.weight", storage=keep_f32),
    _vit("embeddings.patch_embedding.bias", "v.patch_embd.bias", storage=keep_f32),
    _vit("embeddings.position_embedding.weight", "v.position_embd.weight", storage=keep_f32),
    *(_layer(f"self_attn.{hf}_proj.{part}", f"attn_{gg}.{part}")
      for hf, gg in (("q", "q"), ("k", "k"), ("v", "v"), ("out", "out")) for part in ("weight", "bias")),
    # SigLIP LayerNorms: weight and bias as is (no Gemma +1)
    *(_layer(f"{hf}.{part}", f"{gg}.{part}")
      for hf, gg in (("layer_norm1", "ln1"), ("layer_norm2", "ln2")) for part in ("weight", "bias")),
    *(_layer(f"mlp.{hf}.{part}", f"{gg}.{part}")
      for hf, gg in (("fc1", "ffn_up"), ("fc2", "ffn_down")) for part in ("weight", "bias")),
    _vit("post_layernorm.weight", "v.post_ln.weight"),
    _vit("post_layernorm.bias", "v.post_ln.bias"),
    # SigLIP's attention-pooling head (vision_use_head): Gemma 3 reads last_hidden_state, never the head
    EncoderRule(_VIT + r"head\..+", None, required=False),
    # a raw parameter np(vision hidden, text hidden) → ggml {text, vision}; the graph transposes it
    # (ggml_cont of a transposed quantized tensor is unsupported, hence F16 unless the file is F32)
    _projector("mm_input_projection_weight", "mm.input_projection.weight", storage=f16_except_in_f32),
    # Gemma RMSNorm: transformers multiplies by (1 + w), clip.cpp by the stored weight
    _projector("mm_soft_emb_norm.weight", "mm.soft_emb_norm.weight", transform=plus_one),
)


GEMMA3_VISION = Encoder(
    name="Gemma 3 vision (SigLIP)",
    hf_architectures=("Gemma3ForConditionalGeneration",),
    modality=VISION,
    config_key="vision_config",
    owns=r"(vision_tower|multi_modal_projector)\.",
    projector_type="gemma3",
    defaults=DEFAULTS,
    metadata=metadata,
    tensors=TENSORS,
)
