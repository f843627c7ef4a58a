"""What a multimodal projector (an mmproj GGUF) is, from its header alone (no llama.cpp): which media
it encodes, the ubatch its largest non-causal image needs, and how a variable-size encoder's images are
sized. llama.cpp's mtmd runs it: `gemma_edge.llama.mtmd`.

Image size: Gemma 3's encoder takes one fixed size, which mtmd resizes to as transformers does. Gemma 4's
takes any size: transformers' image processor resizes an image (aspect ratio kept, each side a multiple
of patch × pooling pixels) to the largest size within a budget of `max_soft_tokens` soft tokens
(`ImageBudget`), while mtmd's gemma4v preprocessor aims for 70–1120 tokens by other rounding (it rounds
each side to the nearest multiple and, below its minimum, rounds up: a 512×512 image under a 280-token
budget is 16×16 = 256 tokens for transformers, 17×17 = 289 for mtmd with min = max = 280) and letterboxes
with black instead of stretching. So the projector resizes a Gemma 4 image itself, to transformers' size
with Pillow's bicubic filter (what transformers' PIL image processor runs), and gives mtmd limits of
1…budget tokens, within which its preprocessor leaves an already aligned image as it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gemma_edge.errors import GemmaEdgeError
from gemma_edge.gguf_file import GGUFFile

class ProjectorError(GemmaEdgeError):
    """An mmproj file mtmd cannot use, or a media input it cannot encode."""


def _gemma3_image_positions(gguf: GGUFFile) -> int:
    # siglip: (image_size / patch_size)^2 patches, average-pooled n_merge x n_merge (default 4)
    side = int(gguf.get("clip.vision.image_size", 0)) // max(1, int(gguf.get("clip.vision.patch_size", 1)))
    merge = int(gguf.get("clip.vision.projector.scale_factor", 4) or 4)
    return (side // merge) ** 2


@dataclass(frozen=True)
class ImageBudget:
    """How transformers' processor sizes an image for a variable-size encoder: the largest size with the
    image's aspect ratio whose sides are multiples of `side` pixels (patch × pooling kernel: one soft
    token) and that holds at most `max_tokens` soft tokens (Gemma4ImageProcessor, max_soft_tokens)."""
    side: int
    max_tokens: int

    def size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the image is resized to; its soft tokens are (width/side)·(height/side)."""
        side = self.side
        scale = math.sqrt(self.max_tokens * side * side / (width * height))
        columns, rows = math.floor(width * scale / side), math.floor(height * scale / side)
        longest = self.max_tokens  # soft tokens along one side when the other has one
        if rows == 0:  # a very wide image: one row, as many columns as the aspect ratio gives
            rows, columns = 1, min(width // height, longest)
        elif columns == 0:
            columns, rows = 1, min(height // width, longest)
        return columns * side, rows * side


# transformers' Gemma4ImageProcessor default max_soft_tokens (our converter writes the checkpoint's own
# budget as clip.vision.image_max_pixels; mmproj files from elsewhere may lack it)
GEMMA4_MAX_SOFT_TOKENS = 280
GEMMA4_POOLING = 3  # clip.cpp's gemma4v pooling kernel unless clip.vision.projector.scale_factor says otherwise


def _gemma4_image_budget(gguf: GGUFFile) -> ImageBudget:
    side = int(gguf.get("clip.vision.patch_size", 16)) * int(gguf.get("clip.vision.projector.scale_factor",
                                                                      GEMMA4_POOLING) or GEMMA4_POOLING)
    max_pixels = int(gguf.get("clip.vision.image_max_pixels", 0) or 0)
    if max_pixels and max_pixels < side * side:
        raise ProjectorError(f"clip.vision.image_max_pixels {max_pixels} is less than one soft token "
                             f"({side}x{side} pixels)")
    return ImageBudget(side, max_pixels // (side * side) if max_pixels else GEMMA4_MAX_SOFT_TOKENS)


# Vision projector types whose encoder takes images of any size, with transformers' sizing rule for them.
IMAGE_BUDGETS: dict[str, Callable[[GGUFFile], ImageBudget]] = {
    "gemma4v": _gemma4_image_budget,
    "gemma4uv": _gemma4_image_budget,  # Gemma 4 Unified: the same processor rule, merged patches as tokens
}


def _gemma4_image_positions(gguf: GGUFFile) -> int:
    return _gemma4_image_budget(gguf).max_tokens  # the projector never lets mtmd exceed the budget


# Vision projector types whose images mtmd may decode with non-causal attention
# (mtmd_decode_use_non_causal), with the most positions one image can take.
# llama.cpp asserts (aborts the process) when a non-causal batch is larger than n_ubatch, so the
# engine sizes n_ubatch from this before the context exists (mtmd itself needs the loaded model).
NON_CAUSAL_IMAGE_POSITIONS: dict[str, Callable[[GGUFFile], int]] = {
    "gemma3": _gemma3_image_positions,
    "gemma4v": _gemma4_image_positions,
    "gemma4uv": _gemma4_image_positions,
}


@dataclass(frozen=True)
class ProjectorFile:
    """An mmproj GGUF's header facts."""
    path: Path
    size: int
    vision_type: str | None
    audio_type: str | None
    non_causal_positions: int  # the ubatch its largest non-causal image needs (0: none needs one)
    image_budget: ImageBudget | None = None  # how images are sized for a variable-size encoder


def read_projector_file(path: str | Path) -> ProjectorFile:
    """Raises ProjectorError for a file that is not an mmproj GGUF."""
    path = Path(path)
    try:
        gguf = GGUFFile(path)
    except GemmaEdgeError as e:
        raise ProjectorError(f"{path}: not a readable mmproj GGUF ({e})") from None
    try:
        if gguf.architecture != "clip":
            raise ProjectorError(f"{path}: not an mmproj file (architecture {gguf.architecture or '?'!r}, expected "
                                 "'clip'); pass the model's mmproj-*.gguf")
        has_vision = bool(gguf.get("clip.has_vision_encoder", False))
        has_audio = bool(gguf.get("clip.has_audio_encoder", False))
        shared = gguf.get("clip.projector_type")
        vision = (gguf.get("clip.vision.projector_type") or shared) if has_vision else None
        audio = (gguf.get("clip.audio.projector_type") or shared) if has_audio else None
        bound = NON_CAUSAL_IMAGE_POSITIONS.get(vision or "")
        budget = IMAGE_BUDGETS.get(vision or "")
        return ProjectorFile(path, path.stat().st_size, vision, audio, bound(gguf) if bound else 0,
                             budget(gguf) if budget else None)
    finally:
        gguf.close()
