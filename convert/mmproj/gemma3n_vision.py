"""Gemma 3n vision (timm's MobileNetV5 encoder + ``embed_vision``) → mmproj projector type ``gemma3nv``
(runtime: llama.cpp ``tools/mtmd/models/mobilenetv5.cpp``, loaded by ``clip.cpp``).

The tower is ``model.vision_tower.timm_model.*`` (transformers wraps ``timm.create_model(
"mobilenetv5_300m_enc")``). clip.cpp finds its blocks by name, stage by stage: ``v.blk.<stage>.<block>.*``
with timm's own suffixes (``conv_exp``/``bn1``/``conv_pwl``/``bn2`` for edge-residual blocks,
``dw_start``/``pw_exp``/``dw_mid``/``pw_proj`` + ``layer_scale.gamma`` for universal inverted residuals,
``attn.{query,key,value,output}.proj`` + ``attn.{key,value}.{down_conv,norm}`` + ``norm`` for
multi-query attention), plus ``v.conv_stem.*`` and ``v.msfa.*``. Every "bn" is an RMSNorm2d weight (no
bias, no running statistics): nothing to fold. Conv kernels keep PyTorch's (out, in, kh, kw) order,
which is ggml's {kw, kh, in, out}; the stem bias and the layer scales become (1, C, 1, 1) so they
broadcast over ggml's [W, H, C] feature maps. ``embed_vision.embedding_projection`` (np(text, vision))
is ``mm.input_projection.weight`` and ``soft_embedding_norm`` is ``mm.soft_emb_norm.weight`` as is
(Gemma3nRMSNorm multiplies by the weight itself, unlike Gemma 3's 1 + w).

What the runtime hard-codes, and is therefore checked here rather than converted into something else:
the stride-2 first block of each of the 4 stages, MSFA fusing the ends of stages 2 and 3 into a 16×16
grid (256 tokens; ``vision_soft_tokens_per_image``), SAME padding, tanh GELU, RMSNorm eps 1e-6, K/V
down-sampling by 2, and a projection whose input width is read as the output width — mtmd only accepts
it when the text ``hidden_size`` equals the vision one (2048, as in Gemma 3n E2B and E4B).
mtmd resizes every image (bilinear) to ``image_size``², which must be a multiple of 256 so that the
stage-2 grid pools evenly to 16×16.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping

from gguf import GGMLQuantizationType

from convert.mmproj.base import (
    VISION, Encoder, EncoderConfig, EncoderRule, EncoderTensor, Field, ReshapedSource, TensorSource,
    UnsupportedCheckpoint, UnsupportedConfig, exact_rule, f16_only_in_f16, f32, f32_array, keep_f32, u32,
)
from convert.storage import OutputType

ARCHITECTURE = "mobilenetv5_300m_enc"  # the only MobileNetV5 *encoder* timm registers
DEFAULTS = {  # transformers 5.23 Gemma3nVisionConfig()
    "architecture": ARCHITECTURE, "hidden_size": 2048, "rms_norm_eps": 1e-6, "model_args": None,
}
IMAGE_TOKENS = 256  # mobilenetv5.cpp's fixed 16×16 output; Gemma3nConfig().vision_soft_tokens_per_image
IMAGE_SIZE = 768  # Gemma 3n's image processor size when the preprocessor config names none
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)  # SiglipImageProcessor's, used only with do_normalize
RUNTIME_EPS = 1e-6  # every RMSNorm in mobilenetv5.cpp
STAGES = 4
# timm.create_model arguments that change only sizes the tensors carry, or nothing at inference
SIZE_ONLY_MODEL_ARGS = {"block_args", "stem_size", "channel_multiplier", "stem_bias", "layer_scale_init_value",
                        "drop_rate", "drop_path_rate"}


def _image_size(preprocessor: Mapping) -> int:
    size = preprocessor.get("size") or {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    height, width = (size.get("height"), size.get("width")) if isinstance(size, dict) else (size, size)
    if height != width:
        raise UnsupportedConfig(f"mtmd resizes images to a square, but the image processor's size is {size}")
    return int(height)


def _check_block_args(block_args) -> None:
    """The runtime strides the first block of every stage by 2 and every other by 1, and down-samples
    attention keys/values by 2 whenever they have a down-sampling conv."""
    if len(block_args) != STAGES:
        raise UnsupportedConfig(f"mtmd's MobileNetV5 graph has {STAGES} stages, the tower has {len(block_args)}")
    for stage, blocks in enumerate(block_args):
        for index, block in enumerate(blocks):
            expected, stride, kv_stride = 2 if index == 0 else 1, block.get("stride", 1), block.get("kv_stride", 1)
            if int(stride) != expected:
                raise UnsupportedConfig(f"mtmd strides block {stage}.{index} by {expected}, the tower by {stride}")
            if int(kv_stride) not in (1, 2):
                raise UnsupportedConfig(
                    f"mtmd down-samples attention keys/values by 2, block {stage}.{index} by {kv_stride}"
                )


def _check_tower(hp: Mapping, text_hidden: int) -> None:
    if hp["architecture"] != ARCHITECTURE:
        raise UnsupportedConfig(f"mtmd runs timm's {ARCHITECTURE}, the vision tower is {hp['architecture']!r}")
    model_args = hp["model_args"] or {}
    changing = sorted(set(model_args) - SIZE_ONLY_MODEL_ARGS)
    if changing:
        raise UnsupportedConfig(f"mtmd's MobileNetV5 graph is fixed; model_args {changing} change it")
    if "block_args" in model_args:
        _check_block_args(model_args["block_args"])
    if not math.isclose(float(hp["rms_norm_eps"]), RUNTIME_EPS, rel_tol=1e-6):
        raise UnsupportedConfig(f"mtmd's Gemma 3n projector uses RMSNorm eps {RUNTIME_EPS}, not {hp['rms_norm_eps']}")
    if int(hp["hidden_size"]) != text_hidden:
        raise UnsupportedConfig(
            f"llama.cpp's gemma3nv reads the projection's input width ({hp['hidden_size']}) as its output width, "
            f"so mtmd only loads it beside a text model of the same hidden_size, not {text_hidden}"
        )


def _check_geometry(cfg: EncoderConfig) -> int:
    """The image size mtmd resizes to, checked against the runtime's fixed 16×16 output."""
    tokens = int(cfg.top.get("vision_soft_tokens_per_image") or IMAGE_TOKENS)
    if tokens != IMAGE_TOKENS:
        raise UnsupportedConfig(f"mtmd's MobileNetV5 always makes {IMAGE_TOKENS} image tokens, the config {tokens}")
    image_size = _image_size(cfg.preprocessor)
    if image_size % IMAGE_TOKENS:
        raise UnsupportedConfig(
            f"mtmd pools the stage-2 grid of a {image_size}-pixel image to 16x16 only for multiples of 256"
        )
    rescale = float(cfg.preprocessor.get("rescale_factor", 1 / 255))
    if abs(rescale - 1 / 255) > 1e-9:
        raise UnsupportedConfig(f"mtmd scales pixels by 1/255, but rescale_factor is {rescale}")
    return image_size


def metadata(cfg: EncoderConfig) -> list[Field]:
    hp, pre = cfg.hp, cfg.preprocessor
    _check_tower(hp, int(cfg.text["hidden_size"]))
    image_size = _check_geometry(cfg)
    # Gemma 3n's processor rescales to [0, 1] without normalising (do_normalize false, also when absent)
    normalize = bool(pre.get("do_normalize", False))
    mean = (pre.get("image_mean") or IMAGE_MEAN) if normalize else (0.0, 0.0, 0.0)
    std = (pre.get("image_std") or IMAGE_STD) if normalize else (1.0, 1.0, 1.0)
    return [
        u32("clip.vision.image_size", image_size),
        u32("clip.vision.patch_size", image_size // IMAGE_TOKENS),  # clip.cpp's token count: size / patch
        u32("clip.vision.embedding_length", hp["hidden_size"]),
        # read for every vision tower, used by none of mobilenetv5.cpp: it has no transformer blocks
        u32("clip.vision.block_count", 0),
        u32("clip.vision.feed_forward_length", 0),
        u32("clip.vision.attention.head_count", 0),
        f32("clip.vision.attention.layer_norm_epsilon", hp["rms_norm_eps"]),
        f32_array("clip.vision.image_mean", mean),
        f32_array("clip.vision.image_std", std),
    ]


def channel_vector(source: TensorSource) -> TensorSource:
    """(C,) → (1, C, 1, 1): ggml {1, 1, C, 1}, broadcast over [W, H, C] feature maps."""
    return ReshapedSource(source, (1, source.shape[0], 1, 1))


def depthwise_kernel(output: OutputType) -> GGMLQuantizationType:
    """F16 in every file type: ``ggml_conv_2d_dw`` unfolds its input to F16 (im2col) and the CPU backend
    has no F32-kernel × F16-input product, so an F32 depthwise kernel aborts the graph."""
    return GGMLQuantizationType.F16


_TOWER = r"vision_tower\.timm_model\."
_BLOCK = _TOWER + r"blocks\.(?P<stage>\d+)\.(?P<block>\d+)\."
_CONVS = r"conv_exp|conv_pwl|pw_exp\.conv|pw_proj\.conv|attn\.(?:query|key|value|output)\.proj"
_DEPTHWISE = r"dw_start\.conv|dw_mid\.conv|attn\.(?:key|value)\.down_conv"  # ggml_conv_2d_dw
_NORMS = r"bn1|bn2|dw_start\.bn|dw_mid\.bn|pw_exp\.bn|pw_proj\.bn|attn\.(?:key|value)\.norm|norm"
_BLOCK_GGUF = "v.blk.{stage}.{block}.{part}"

TENSORS = (
    # the reference keeps the stem F32 in every file type (a 3-channel kernel: nothing to save)
    exact_rule("vision_tower.timm_model.conv_stem.conv.weight", "v.conv_stem.conv.weight", storage=keep_f32),
    exact_rule("vision_tower.timm_model.conv_stem.conv.bias", "v.conv_stem.conv.bias", reshape=channel_vector,
               storage=keep_f32, required=False),
    exact_rule("vision_tower.timm_model.conv_stem.bn.weight", "v.conv_stem.bn.weight"),
    # ggml's conv ops take F16 or F32 kernels only
    EncoderRule(_BLOCK + rf"(?P<part>(?:{_CONVS})\.weight)", _BLOCK_GGUF, storage=f16_only_in_f16,
                required=False),
    EncoderRule(_BLOCK + rf"(?P<part>(?:{_DEPTHWISE})\.weight)", _BLOCK_GGUF, storage=depthwise_kernel,
                required=False),
    EncoderRule(_BLOCK + rf"(?P<part>(?:{_NORMS})\.weight)", _BLOCK_GGUF, required=False),
    EncoderRule(_BLOCK + r"(?P<part>layer_scale\.gamma)", _BLOCK_GGUF, reshape=channel_vector, storage=keep_f32,
                required=False),
    *(exact_rule(f"vision_tower.timm_model.msfa.{part}.weight", f"v.msfa.{part}.weight",
                 storage=f16_only_in_f16 if part.endswith(".conv") else None)
      for part in ("ffn.pw_exp.conv", "ffn.pw_exp.bn", "ffn.pw_proj.conv", "ffn.pw_proj.bn", "norm")),
    exact_rule("embed_vision.embedding_projection.weight", "mm.input_projection.weight"),
    exact_rule("embed_vision.soft_embedding_norm.weight", "mm.soft_emb_norm.weight"),
    # the text model's vision-token embedding (ids from vocab_offset), never used for soft tokens
    EncoderRule(r"embed_vision\.(?:embedding|hard_embedding_norm)\.weight", None, required=False),
    # with_scale=False: a constant 1 when a checkpoint stores it at all; mtmd normalises without a weight
    EncoderRule(r"embed_vision\.embedding_post_projection_norm\.weight", None, required=False),
)


def check_structure(cfg: EncoderConfig, owned: Mapping[str, TensorSource]) -> list[EncoderTensor]:
    """Refuse block tables mtmd would run differently (it strides by position in the table, fuses the
    ends of stages 2 and 3 and puts a stage's stride into ``dw_mid``); adds no tensor."""
    blocks: dict[int, dict[int, set[str]]] = {}
    for name in owned:
        match = re.match(_BLOCK + r"(.+)", name)
        if match:
            parts = blocks.setdefault(int(match["stage"]), {}).setdefault(int(match["block"]), set())
            parts.add(match[3])
    if sorted(blocks) != list(range(STAGES)):
        raise UnsupportedCheckpoint(
            f"mtmd's MobileNetV5 graph needs stages 0-{STAGES - 1}, the tower has {sorted(blocks)}"
        )
    for stage, stage_blocks in blocks.items():
        if sorted(stage_blocks) != list(range(len(stage_blocks))):
            raise UnsupportedCheckpoint(f"stage {stage} of the tower has gaps in its blocks: {sorted(stage_blocks)}")
        first = stage_blocks[0]
        if not any(p.startswith(("conv_exp.", "dw_mid.")) for p in first):
            raise UnsupportedCheckpoint(
                f"block {stage}.0 has no conv_exp/dw_mid for mtmd to put the stage's stride 2 into"
            )
    return []


GEMMA3N_VISION = Encoder(
    name="Gemma 3n vision (MobileNetV5)",
    hf_architectures=("Gemma3nForConditionalGeneration",),
    modality=VISION,
    config_key="vision_config",
    owns=r"(vision_tower|embed_vision)\.",
    projector_type="gemma3nv",
    defaults=DEFAULTS,
    metadata=metadata,
    tensors=TENSORS,
    extra_tensors=check_structure,
)
