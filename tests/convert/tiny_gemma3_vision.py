"""A tiny seeded Gemma 3 vision-language checkpoint (``Gemma3ForConditionalGeneration``), cached by recipe.

Text: the tiny Gemma 3 text model (docs/converter-spec.md §9.3, 2 layers) and the shared tiny tokenizer
(it has ``<start_of_image>`` / ``<end_of_image>``, the markers mtmd wraps Gemma 3 images in).
Vision: SigLIP with 64×64 images of 8×8 patches (an 8×8 grid) pooled to ``mm_tokens_per_image`` 16 (4×4,
so the pooling kernel is 2, not the runtime's default 4: ``clip.vision.projector.scale_factor`` is
exercised). ``intermediate_size`` differs from ``hidden_size`` (clip.cpp would swap equal-sized MLP
weights). The image processor config has non-default mean/std, so both sides must read it, and
``image_seq_length`` as Google's files have it (the reference converter reads the pooling from it).
transformers 5 saves the tower as ``vision_tower.*``; ``legacy_layout`` rewrites a copy to the
``vision_tower.vision_model.*`` names of older checkpoints (the only ones the reference converter maps).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from tests.convert.tiny import VOCAB_SIZE, build_checkpoint, cached_dir
from tests.convert.tiny_gemma import COMMON

IMAGE_SIZE = 64
MM_TOKENS_PER_IMAGE = 16
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]

CONFIG = {
    "text_config": {**COMMON, "num_hidden_layers": 2, "query_pre_attn_scalar": 16, "sliding_window": 4},
    "vision_config": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 3,
                      "image_size": IMAGE_SIZE, "patch_size": 8, "vision_use_head": False},
    "mm_tokens_per_image": MM_TOKENS_PER_IMAGE,
    "boi_token_index": 5, "eoi_token_index": 6, "image_token_index": VOCAB_SIZE - 1,
}
PREPROCESSOR = {"size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "image_mean": IMAGE_MEAN, "image_std": IMAGE_STD}


def tiny_gemma3_vision(seed: int = 0) -> Path:
    recipe = {"case": "gemma3-vision", "config": CONFIG, "preprocessor": PREPROCESSOR, "seed": seed, "v": 1}

    def build(directory: Path) -> None:
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor

        build_checkpoint(directory, Gemma3ForConditionalGeneration, Gemma3Config(**CONFIG), seed)
        Gemma3ImageProcessor(**PREPROCESSOR).save_pretrained(directory)
        path = directory / "preprocessor_config.json"
        config = json.loads(path.read_text())
        config["image_seq_length"] = MM_TOKENS_PER_IMAGE
        path.write_text(json.dumps(config, indent=2))

    return cached_dir("hf-gemma3-vision", recipe, build)


def rename_tensors(safetensors: Path, rename) -> None:
    """Rewrite the header of a safetensors file with every tensor name passed through ``rename``."""
    data = safetensors.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    header = {(key if key == "__metadata__" else rename(key)): value for key, value in header.items()}
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    safetensors.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[8 + length:])


def legacy_layout(model_dir: Path, target: Path) -> Path:
    """A copy of ``model_dir`` whose vision tensors carry the pre-v5 ``vision_tower.vision_model.`` names."""
    import shutil

    shutil.copytree(model_dir, target)
    rename_tensors(target / "model.safetensors",
                   lambda name: name.replace("vision_tower.", "vision_tower.vision_model.", 1))
    return target
