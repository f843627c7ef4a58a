"""Tiny seeded random Gemma 4 checkpoints WITH their vision encoder, and the transformers side of the
image oracle.

The text part is one of tiny_gemma4's recipes ("dense": 31B-like, "e2b": per-layer embeddings, KV
sharing) with its 512-token prefix of the real Gemma 4 vocabulary; the vision tower is
Gemma4VisionConfig scaled down (hidden 32, 2 layers, 2 heads of 16, patch 4) with the official pooling
kernel 3 and rope (axial, θ 100), ClippableLinears on, and the soft-token standardisation on.

Weights follow tiny_gemma4.perturb_; in addition every vision ClippableLinear gets finite, seeded clip
bounds tight enough to bite (the defaults, ±inf, would hide a misnamed bound tensor), and the
standardisation buffers (``std_bias``/``std_scale``, left uninitialised by transformers) get seeded
values.

The oracle image is already at the encoder's native size on both sides: with patch 4 and kernel 3 a
soft token covers 12×12 pixels, and an 84×120 (H×W) image is 7×10 = 70 soft tokens — exactly the
processor's ``max_soft_tokens`` (70, so its aspect-ratio-preserving resize is the identity) and
llama.cpp's minimum for gemma4v (70 tokens, so its dyn-size resize is the identity too). A variant
with pooling kernel 2 (56×80 pixels, same 70 tokens) exercises ``clip.vision.projector.scale_factor``.

* `gemma4_vision_checkpoint(kind, vision)` — the cached checkpoint directory (config, safetensors,
  tokenizer, processor_config.json with the image processor's settings); `vision` overrides
  VISION_CONFIG (other pooling kernels, head layouts).
* `test_image(pooling_kernel)` — the fixed synthetic RGB uint8 image at its native size (H, W, 3).
* `hf_image_embeddings(model_dir, image)` — image processor → vision tower → embed_vision:
  (n_tokens, text hidden size) float32.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from tests.convert.tiny import cached_dir
from tests.convert.tiny_gemma4 import (
    BUILDER_VERSION, RECIPES, TINY_VOCAB_SIZE, perturb_, read_real_vocab, real_vocab_gguf, save_checkpoint,
    write_tokenizer_files,
)

VISION_CONFIG = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
    head_dim=16, patch_size=4, pooling_kernel_size=3, position_embedding_size=64,
    use_clipped_linears=True, standardize=True,
)
OFFICIAL_POOL = VISION_CONFIG["pooling_kernel_size"]
# The native image: 7 × 10 soft tokens of (patch × kernel)² pixels each.
SOFT_TOKEN_GRID = (7, 10)  # (rows, columns)
N_IMAGE_TOKENS = SOFT_TOKEN_GRID[0] * SOFT_TOKEN_GRID[1]


def image_processor(pooling_kernel: int = OFFICIAL_POOL) -> dict:
    """The image processor section of processor_config.json: transformers' Gemma4ImageProcessor defaults
    with the tiny tower's patch size and kernel and the smallest soft-token budget (JSON-ready)."""
    return {"image_processor_type": "Gemma4ImageProcessor", "do_convert_rgb": True, "do_resize": True,
            "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": False,
            "image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0], "patch_size": VISION_CONFIG["patch_size"],
            "max_soft_tokens": N_IMAGE_TOKENS, "pooling_kernel_size": pooling_kernel}


IMAGE_PROCESSOR = image_processor()  # the section for VISION_CONFIG as is (tiny_gemma4_audio uses it too)


def image_shape(pooling_kernel: int = OFFICIAL_POOL) -> tuple[int, int, int]:
    """(H, W, 3) of the native image: SOFT_TOKEN_GRID soft tokens of (patch · kernel)² pixels."""
    side = VISION_CONFIG["patch_size"] * pooling_kernel
    return SOFT_TOKEN_GRID[0] * side, SOFT_TOKEN_GRID[1] * side, 3
# (input bound, output bound) ranges of the seeded clip values, in units of the typical activation.
CLIP_INPUT_RANGE = (1.5, 3.0)
CLIP_OUTPUT_RANGE = (0.3, 1.5)


def recipe(kind: str = "dense", vision: dict | None = None, dtype: str = "float32", seed: int = 0) -> dict:
    config = {**VISION_CONFIG, **(vision or {})}
    return {"builder": BUILDER_VERSION, "kind": f"{kind}+vision", "vocab": "tiny", "dtype": dtype, "seed": seed,
            "text": copy.deepcopy(RECIPES[kind]), "vision": config, "clip": [CLIP_INPUT_RANGE, CLIP_OUTPUT_RANGE],
            "processor": image_processor(config["pooling_kernel_size"])}


def set_vision_buffers_(model, seed: int) -> None:
    """Finite seeded bounds on every vision ClippableLinear (inputs clamped to ±U(CLIP_INPUT_RANGE),
    outputs to ±U(CLIP_OUTPUT_RANGE), each bound drawn independently), and standardisation values
    (bias ~ N(0, 1), scale ~ U(0.5, 1.5); the pooled tokens are ~√hidden in size)."""
    import torch

    gen = torch.Generator().manual_seed(seed + 2)
    draw = lambda lo, hi: float(lo + (hi - lo) * torch.rand((), generator=gen))  # noqa: E731
    bounds = {".input_max": (1, CLIP_INPUT_RANGE), ".input_min": (-1, CLIP_INPUT_RANGE),
              ".output_max": (1, CLIP_OUTPUT_RANGE), ".output_min": (-1, CLIP_OUTPUT_RANGE)}
    with torch.no_grad():
        for name, buf in sorted(model.named_buffers()):
            if "vision_tower" not in name:
                continue
            suffix = "." + name.rsplit(".", 1)[-1]
            if suffix in bounds:
                sign, span = bounds[suffix]
                buf.fill_(sign * draw(*span))
            elif name.endswith("std_bias"):
                buf.copy_(torch.randn(buf.shape, generator=gen))
            elif name.endswith("std_scale"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))


def build_model(spec: dict, n_vocab: int):
    import torch
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration, Gemma4TextConfig, Gemma4VisionConfig

    text = Gemma4TextConfig(vocab_size=n_vocab, vocab_size_per_layer_input=n_vocab, pad_token_id=0,
                            eos_token_id=1, bos_token_id=2, **spec["text"])
    config = Gemma4Config(text_config=text, vision_config=Gemma4VisionConfig(**spec["vision"]))
    torch.manual_seed(spec["seed"])
    model = Gemma4ForConditionalGeneration(config).eval()
    perturb_(model, spec["seed"])
    set_vision_buffers_(model, spec["seed"])
    return model


def write_processor_config(out: Path, processor: dict) -> None:
    config = {"processor_class": "Gemma4Processor", "image_processor": processor,
              "image_seq_length": processor["max_soft_tokens"]}
    (out / "processor_config.json").write_text(json.dumps(config, indent=2))


def gemma4_vision_checkpoint(kind: str = "dense", vision: dict | None = None, dtype: str = "float32",
                             seed: int = 0) -> Path:
    """A cached Gemma4ForConditionalGeneration checkpoint: text `kind` ("dense" or "e2b") + the tiny
    vision tower, `vision` overriding VISION_CONFIG."""
    spec = recipe(kind, vision, dtype, seed)
    source = real_vocab_gguf()

    def build(out: Path) -> None:
        real = read_real_vocab(source)
        write_tokenizer_files(real, out, TINY_VOCAB_SIZE)
        save_checkpoint(build_model(spec, TINY_VOCAB_SIZE), out, dtype)
        write_processor_config(out, spec["processor"])

    return cached_dir(f"gemma4-{kind}-vision-{dtype}", spec, build)


def test_image(pooling_kernel: int = OFFICIAL_POOL, seed: int = 0) -> np.ndarray:
    """The native image (`image_shape`), uint8 RGB: smooth colour gradients (structure across soft tokens)
    plus seeded noise."""
    height, width, _ = image_shape(pooling_kernel)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([255 * x / (width - 1), 255 * y / (height - 1),
                     127.5 * (1 + np.sin(x / 7.0) * np.cos(y / 5.0))], axis=-1)
    noise = np.random.default_rng(seed).normal(0.0, 20.0, base.shape)
    return np.clip(np.rint(base + noise), 0, 255).astype(np.uint8)


test_image.__test__ = False  # not a pytest test


def hf_pixels(model_dir: Path, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The checkpoint's own image processor on `image`: (pixel patches (n_patches, 3·p²), patch positions
    (n_patches, 2) as (x, y), number of soft tokens), padding included as the processor returns it."""
    from PIL import Image
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(model_dir)
    batch = processor(images=[Image.fromarray(image)], return_tensors="np")
    return (np.asarray(batch["pixel_values"][0]), np.asarray(batch["image_position_ids"][0]),
            int(batch["num_soft_tokens_per_image"][0]))


def hf_image_embeddings(model_dir: Path, image: np.ndarray) -> np.ndarray:
    """Projected image embeddings (n_tokens, n_embd_text), float32: get_image_features' pooler output."""
    import torch
    from transformers import Gemma4ForConditionalGeneration

    pixels, positions, n_tokens = hf_pixels(model_dir, image)
    model = Gemma4ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.model.get_image_features(torch.from_numpy(pixels)[None].float(),
                                             torch.from_numpy(positions)[None].long())
    (tokens,) = out.pooler_output
    assert tokens.shape[0] == n_tokens, (tokens.shape, n_tokens)
    return tokens.float().numpy()
