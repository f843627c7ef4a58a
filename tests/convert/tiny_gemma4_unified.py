"""Tiny seeded random Gemma 4 12B "Unified" checkpoints (``Gemma4UnifiedForConditionalGeneration``), built
and saved by transformers 5.23, and the transformers side of their image and audio oracles.

The text decoder is tiny_gemma4's dense recipe (31B-like: K reused as V on full layers, per-layer KV heads
and head dims) without per-layer embeddings or experts, which the Unified model does not have; its
config is saved by transformers itself, so it lacks ``hidden_size_per_layer_input``,
``enable_moe_block`` and ``moe_intermediate_size`` as the official 5.23 files do. The 512-token prefix
of the real Gemma 4 vocabulary is its tokenizer; ``generation_config.json`` names ``SUPPRESS_TOKENS``.

The encoder-free vision embedder is scaled down (patch 4, merge kernel 3: one soft token per 12×12
pixels; embed dim 32) and the audio embedder takes llama.cpp's fixed frame of 640 samples. The oracle
image is 84×120 pixels, 7×10 = 70 soft tokens, the processor's ``max_soft_tokens`` and mtmd's gemma4uv
minimum, so neither side resizes it.

* `unified_checkpoint(dtype)` — the cached checkpoint directory (config, safetensors, tokenizer,
  generation_config.json, processor_config.json).
* `hf_image_embeddings(dir, image)` / `hf_audio_embeddings(dir, samples)` — (n_tokens, text hidden) float32.

transformers' Unified image processor needs torchvision, which this environment lacks (PyPI's build needs
CUDA torch, see tiny_gemma3n_vision.py). For a native-size image its steps are those of the Gemma 4
image processor (no resize; rescale; 4×4 patches with (x, y) positions, which the PIL backend computes)
followed by ``patches_merge`` (pure torch), so the oracle runs exactly those two transformers functions:
``patches_merge`` is imported with tiny_gemma3n_vision's inert torchvision placeholder, and every module
that import added is dropped again, so nothing else in the process sees the placeholder.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

from tests.convert.tiny import cached_dir, linked_copy
from tests.convert.tiny_gemma4 import (
    BUILDER_VERSION, RECIPES, TINY_VOCAB_SIZE, perturb_, read_real_vocab, real_vocab_gguf, save_checkpoint,
    write_tokenizer_files,
)
from tests.convert.tiny_gemma4_vision import N_IMAGE_TOKENS, image_processor

TEXT = {k: v for k, v in RECIPES["dense"].items() if k != "hidden_size_per_layer_input"}
TEXT_HIDDEN = TEXT["hidden_size"]
VISION_CONFIG = dict(patch_size=4, pooling_kernel_size=3, mm_embed_dim=32, mm_posemb_size=64, output_proj_dims=32)
AUDIO_CONFIG = dict(audio_embed_dim=640)  # llama.cpp's gemma4ua frame: 640 samples (40 ms at 16 kHz)
SAMPLES_PER_TOKEN = AUDIO_CONFIG["audio_embed_dim"]
# ids generate() must never pick: the markers that open a media block and a few ordinary tokens
# what text configs written before transformers 5.23 spelled out (the reference converter requires them)
OLDER_TEXT_KEYS = {"enable_moe_block": False, "moe_intermediate_size": None, "hidden_size_per_layer_input": 0}
SUPPRESS_TOKENS = [255, 256, 300, 301, 302, 400]
FEATURE_EXTRACTOR = {"feature_extractor_type": "Gemma4UnifiedAudioFeatureExtractor", "feature_size": 640,
                     "sampling_rate": 16000, "padding_value": 0.0, "audio_samples_per_token": 640,
                     "return_attention_mask": True, "padding_side": "right"}


def recipe(dtype: str = "float32", seed: int = 0) -> dict:
    processor = {**image_processor(), "image_processor_type": "Gemma4UnifiedImageProcessor"}
    return {"builder": BUILDER_VERSION, "kind": "unified", "vocab": "tiny", "dtype": dtype, "seed": seed,
            "text": copy.deepcopy(TEXT), "vision": VISION_CONFIG, "audio": AUDIO_CONFIG,
            "suppress": SUPPRESS_TOKENS, "processor": processor, "feature_extractor": FEATURE_EXTRACTOR}


def build_model(spec: dict, n_vocab: int):
    import torch
    from transformers import (
        Gemma4UnifiedAudioConfig, Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration,
        Gemma4UnifiedTextConfig, Gemma4UnifiedVisionConfig,
    )

    text = Gemma4UnifiedTextConfig(vocab_size=n_vocab, pad_token_id=0, eos_token_id=1, bos_token_id=2, **spec["text"])
    config = Gemma4UnifiedConfig(text_config=text, vision_config=Gemma4UnifiedVisionConfig(**spec["vision"]),
                                 audio_config=Gemma4UnifiedAudioConfig(**spec["audio"]))
    torch.manual_seed(spec["seed"])
    model = Gemma4UnifiedForConditionalGeneration(config).eval()
    perturb_(model, spec["seed"])
    return model


def unified_checkpoint(dtype: str = "float32", seed: int = 0) -> Path:
    spec = recipe(dtype, seed)
    source = real_vocab_gguf()

    def build(out: Path) -> None:
        write_tokenizer_files(read_real_vocab(source), out, TINY_VOCAB_SIZE)
        save_checkpoint(build_model(spec, TINY_VOCAB_SIZE), out, dtype)
        write_side_files(out, spec)

    return cached_dir(f"gemma4-unified-{dtype}", spec, build)


def older_text_config_copy(source: Path, directory: Path) -> Path:
    """``source`` (a Unified checkpoint or drafter) with its text config spelling out OLDER_TEXT_KEYS, as configs
    written before transformers 5.23 did: llama.cpp's reference converter requires them."""
    return linked_copy(source, directory, lambda raw: raw["text_config"].update(OLDER_TEXT_KEYS))


def write_side_files(out: Path, spec: dict) -> None:
    """generation_config.json (with the suppressed ids) and processor_config.json, as the official repo has."""
    generation = {"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0, "suppress_tokens": spec["suppress"]}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    processor = {"processor_class": "Gemma4UnifiedProcessor", "image_processor": spec["processor"],
                 "feature_extractor": spec["feature_extractor"],
                 "image_seq_length": spec["processor"]["max_soft_tokens"], "audio_seq_length": 750}
    (out / "processor_config.json").write_text(json.dumps(processor, indent=2))


def hf_model(model_dir: Path):
    import torch
    from transformers import Gemma4UnifiedForConditionalGeneration

    return Gemma4UnifiedForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32,
                                                                 attn_implementation="eager").eval()


def transformers_patches_merge():
    """transformers' ``patches_merge`` (its module imports torchvision, used by other functions only)."""
    import importlib
    import sys

    from tests.convert.tiny_gemma3n_vision import _TorchvisionPlaceholder

    before = set(sys.modules)
    placeholder = _TorchvisionPlaceholder()
    sys.meta_path.insert(0, placeholder)
    try:
        module = importlib.import_module("transformers.models.gemma4_unified.image_processing_gemma4_unified")
        return module.patches_merge
    finally:
        sys.meta_path.remove(placeholder)
        for name in set(sys.modules) - before:
            del sys.modules[name]


def hf_pixels(model_dir: Path, image: np.ndarray):
    """The Unified processor's (merged patches (1, n, (p·k)²·3), positions (1, n, 2)) of a native-size image."""
    from PIL import Image
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    settings = json.loads((model_dir / "processor_config.json").read_text())["image_processor"]
    kernel = settings["pooling_kernel_size"]
    teacher = Gemma4ImageProcessorPil(**{k: v for k, v in settings.items() if k != "image_processor_type"})
    batch = teacher(images=[Image.fromarray(image)], return_tensors="pt")
    n_patches = image.shape[0] * image.shape[1] // settings["patch_size"] ** 2
    assert int(batch["num_soft_tokens_per_image"][0]) * kernel ** 2 == n_patches  # no resize, no padding
    patches, positions = batch["pixel_values"][:, :n_patches], batch["image_position_ids"][:, :n_patches]
    return transformers_patches_merge()(patches.float(), positions.long(), n_patches // kernel ** 2)


def hf_image_embeddings(model_dir: Path, image: np.ndarray) -> np.ndarray:
    """The processor's merged patches → embed_vision: (n_tokens, text hidden) float32."""
    import torch

    pixels, positions = hf_pixels(model_dir, image)
    with torch.no_grad():
        out = hf_model(model_dir).model.get_image_features(pixels, positions)
    (tokens,) = out.pooler_output
    assert tokens.shape[0] == N_IMAGE_TOKENS
    return tokens.float().numpy()


def hf_audio_embeddings(model_dir: Path, samples: np.ndarray) -> np.ndarray:
    """The feature extractor's frames → embed_audio: (n_tokens, text hidden) float32."""
    import torch
    from transformers import AutoFeatureExtractor

    batch = AutoFeatureExtractor.from_pretrained(model_dir)(samples, return_tensors="pt")
    with torch.no_grad():
        out = hf_model(model_dir).model.get_audio_features(batch["input_features"].float(),
                                                            batch["input_features_mask"])
    return out.pooler_output[0][batch["input_features_mask"][0]].float().numpy()
