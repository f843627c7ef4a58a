"""A tiny Gemma 3 text GGUF + its mmproj, written by OUR converter from the tiny seeded checkpoint of
tests/convert/tiny_gemma3_vision.py (64x64 images, 16 image positions), cached like the converter tests'
files. Shared by the CLI and server media tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.convert.tiny import cached_dir
from tests.convert.tiny_gemma3_vision import IMAGE_SIZE, MM_TOKENS_PER_IMAGE, tiny_gemma3_vision

__all__ = ["IMAGE_SIZE", "MM_TOKENS_PER_IMAGE", "gemma3_vision_pair", "write_image"]


def gemma3_vision_pair() -> Path:
    """The text GGUF; `mmproj-<stem>.gguf` lies beside it (so `load()` finds it by itself)."""
    from convert.api import convert_checkpoint

    checkpoint = tiny_gemma3_vision()
    recipe = {"checkpoint": checkpoint.name, "type": "f32", "v": 1}
    directory = cached_dir("gemma3-vision-pair", recipe,
                           lambda d: convert_checkpoint(checkpoint, d / "tiny-gemma3-vision.gguf", "f32"))
    return directory / "tiny-gemma3-vision.gguf"


def write_image(path: Path, seed: int = 0, size: int = IMAGE_SIZE) -> Path:
    """A seeded random RGB image at the encoder's native size."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path
