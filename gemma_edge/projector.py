"""The multimodal projector (an mmproj GGUF) through llama.cpp's mtmd: turns a `Media` into a
chunk of embedding positions and evaluates that chunk into a llama context.

One `Projector` owns one mtmd context for one loaded text model (CPU, the engine's threads, logs
silenced unless GEMMA_EDGE_DEBUG). `chunk(media)` tokenizes the media alone — mtmd's default marker
with one bitmap — and keeps a copy of the media chunk (`MediaChunk`), cached by the media's digest
(bounded). The text around media (begin/end markers, blank lines) is the turn format's business
(`formats.MediaExpansion`), not mtmd's: mtmd's own text chunks are discarded. `eval` runs
mtmd_helper_eval_chunk_single, which encodes the media and decodes its embeddings with the
attention the projector needs (Gemma 3 images: non-causal, the whole image in one ubatch).

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

import ctypes
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gemma_edge.errors import GemmaEdgeError
from gemma_edge.gguf_file import GGUFFile

CHUNK_CACHE_SIZE = 8  # media chunks kept by digest (a Gemma 3 image holds ~10 MB of preprocessed pixels)


class ProjectorError(GemmaEdgeError):
    """An mmproj file mtmd cannot use, or a media input it cannot encode."""


# -- what the mmproj header says (no llama.cpp needed) ----------------------------------------------------

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


# -- mtmd --------------------------------------------------------------------------------------------------

def _mtmd():
    from gemma_edge.llama import llama_cpp

    llama_cpp()  # the version check
    from llama_cpp import mtmd_cpp

    return mtmd_cpp


_LOG_CALLBACK = None


def _silence_mtmd_logs(mtmd) -> None:
    global _LOG_CALLBACK
    if os.environ.get("GEMMA_EDGE_DEBUG"):
        return
    if _LOG_CALLBACK is None:
        from llama_cpp import llama_cpp as lc

        _LOG_CALLBACK = lc.llama_log_callback(lambda level, text, user_data: None)
    mtmd.mtmd_helper_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))  # mtmd, clip and the helpers


class MediaChunk:
    """One image or audio input as mtmd tokenized it: `n_pos` prompt positions, identified by the
    media's digest (position i of it is `(digest, i)` for KV-cache reuse). Owns its mtmd chunk copy."""

    __slots__ = ("kind", "digest", "n_tokens", "n_pos", "non_causal", "_handle", "_free")

    def __init__(self, kind: str, digest: str, handle, mtmd):
        self.kind, self.digest, self._handle, self._free = kind, digest, handle, mtmd.mtmd_input_chunk_free
        self.n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(handle))
        self.n_pos = int(mtmd.mtmd_input_chunk_get_n_pos(handle))
        self.non_causal = False

    def positions(self) -> list[tuple[str, int]]:
        return [(self.digest, i) for i in range(self.n_pos)]

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle:
            self._free(handle)

    def __del__(self):
        self.close()

    def __repr__(self) -> str:
        return f"MediaChunk({self.kind}, {self.digest[:12]}, {self.n_pos} positions)"


class Projector:
    """An mtmd context for a loaded llama model. Not thread-safe: the engine's lock serialises it."""

    def __init__(self, path: str | Path, llama_model, *, n_threads: int, cache_size: int = CHUNK_CACHE_SIZE):
        # set first: close() (run by __del__ when a step below fails) needs them
        self._ctx, self._cache_size = None, cache_size
        self._cache: OrderedDict[tuple[str, str], MediaChunk] = OrderedDict()
        mtmd = _mtmd()
        _silence_mtmd_logs(mtmd)
        self.path = Path(path)
        self._mtmd = mtmd
        self.image_budget = read_projector_file(self.path).image_budget
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = int(n_threads)
        params.warmup = False  # encode buffers are allocated at the first image, not at load
        if self.image_budget is not None:  # images arrive sized (see the module docstring): mtmd keeps them
            params.image_min_tokens = 1
            params.image_max_tokens = self.image_budget.max_tokens
        self._ctx = mtmd.mtmd_init_from_file(str(self.path).encode(), llama_model, params)
        if not self._ctx:
            raise ProjectorError(f"{self.path}: llama.cpp's mtmd could not load this projector for the model (a "
                                 "projector of another model, or a type this llama.cpp does not support; "
                                 "GEMMA_EDGE_DEBUG=1 shows its log)")
        self.kinds = frozenset(
            kind for kind, present in (("image", mtmd.mtmd_support_vision(self._ctx)),
                                       ("audio", mtmd.mtmd_support_audio(self._ctx))) if present)

    def supports(self, kind: str) -> bool:
        return kind in self.kinds

    # -- media -> chunk ------------------------------------------------------------------------------
    def chunk(self, media) -> MediaChunk:
        """The chunk of a `gemma_edge.media.Media` (cached by kind and digest)."""
        key = (media.kind, media.digest)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        if not self.supports(media.kind):
            raise ProjectorError(f"this model's projector has no {_ENCODER[media.kind]}")
        chunk = self._tokenize(media)
        self._cache[key] = chunk
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)  # freed once no prompt holds it
        return chunk

    def _bitmap(self, media):
        mtmd = self._mtmd
        if media.kind == "image":
            expected = media.width * media.height * 3
            if media.width <= 0 or media.height <= 0 or len(media.rgb) != expected:
                raise ProjectorError(f"image {media.digest[:12]}: {len(media.rgb)} bytes of pixels for "
                                     f"{media.width}x{media.height} RGB (expected {expected})")
            width, height, rgb = self._sized(media)
            data = (ctypes.c_uint8 * len(rgb)).from_buffer_copy(rgb)
            bitmap = mtmd.mtmd_bitmap_init(width, height, data)
        else:
            data = (ctypes.c_uint8 * len(media.data)).from_buffer_copy(media.data)
            bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self._ctx, data, len(media.data), False)
        if not bitmap:
            raise ProjectorError(f"{media.kind} {media.digest[:12]}: mtmd could not decode it")
        mtmd.mtmd_bitmap_set_id(bitmap, media.digest.encode())
        return bitmap

    def _sized(self, media) -> tuple[int, int, bytes]:
        """(width, height, RGB pixels) of an image as the encoder takes it (see the module docstring)."""
        if self.image_budget is None:
            return media.width, media.height, media.rgb
        width, height = self.image_budget.size(media.width, media.height)
        if (width, height) == (media.width, media.height):
            return width, height, media.rgb
        from PIL import Image

        image = Image.frombytes("RGB", (media.width, media.height), media.rgb)
        return width, height, image.resize((width, height), Image.Resampling.BICUBIC).tobytes()

    def _tokenize(self, media) -> MediaChunk:
        mtmd = self._mtmd
        bitmap = self._bitmap(media)
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            marker = mtmd.mtmd_default_marker()
            text = mtmd.mtmd_input_text(marker, len(marker), False, True)
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            status = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), bitmaps, 1)
            if status != 0:
                raise ProjectorError(f"{media.kind} {media.digest[:12]}: mtmd could not preprocess it "
                                     f"(mtmd_tokenize returned {status})")
            wanted = mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE if media.kind == "image" else mtmd.MTMD_INPUT_CHUNK_TYPE_AUDIO
            found = [mtmd.mtmd_input_chunks_get(chunks, i) for i in range(mtmd.mtmd_input_chunks_size(chunks))]
            found = [c for c in found if mtmd.mtmd_input_chunk_get_type(c) == wanted]
            if len(found) != 1:
                raise ProjectorError(f"{media.kind} {media.digest[:12]}: mtmd made {len(found)} media chunks of it "
                                     "(sliced or split media is not supported)")
            chunk = MediaChunk(media.kind, media.digest, mtmd.mtmd_input_chunk_copy(found[0]), mtmd)
            if chunk.n_tokens <= 0:  # a projector whose pooling leaves nothing would abort in the encoder
                raise ProjectorError(f"{self.path.name}: the projector makes no embeddings of this {media.kind} "
                                     "(its image size, patch size and pooling do not fit together)")
            chunk.non_causal = bool(mtmd.mtmd_decode_use_non_causal(self._ctx, found[0]))
            return chunk
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bitmap)

    # -- chunk -> KV cache ---------------------------------------------------------------------------
    def eval(self, chunk: MediaChunk, llama_context, n_past: int, n_batch: int) -> int:
        """Encode the chunk and decode its embeddings at positions n_past.. ; returns the new n_past."""
        new_n_past = self._mtmd.llama_cpp.llama_pos(n_past)
        status = self._mtmd.mtmd_helper_eval_chunk_single(
            self._ctx, llama_context, chunk._handle, n_past, 0, n_batch, False, ctypes.byref(new_n_past))
        if status != 0:
            raise ProjectorError(f"{chunk.kind} {chunk.digest[:12]}: llama.cpp could not evaluate it "
                                 f"(status {status}; GEMMA_EDGE_DEBUG=1 shows its log)")
        return int(new_n_past.value)

    def close(self) -> None:
        for chunk in self._cache.values():
            chunk.close()
        self._cache.clear()
        ctx, self._ctx = self._ctx, None
        if ctx:
            self._mtmd.mtmd_free(ctx)

    def __del__(self):
        self.close()


_ENCODER = {"image": "vision encoder", "audio": "audio encoder"}
