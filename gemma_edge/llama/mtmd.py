"""A multimodal projector run by llama.cpp's mtmd: turns a `Media` into a chunk of embedding positions
and evaluates that chunk into a llama context.

One `Projector` owns one mtmd context for one loaded text model (CPU, the engine's threads, logs
silenced unless GEMMA_EDGE_DEBUG). `chunk(media)` tokenizes the media alone — mtmd's default marker
with one bitmap — and keeps a copy of the media chunk (`MediaChunk`), cached by the media's digest
(bounded). The text around media (begin/end markers, blank lines) is the turn format's business
(`formats.MediaExpansion`), not mtmd's: mtmd's own text chunks are discarded. `eval` runs
mtmd_helper_eval_chunk_single, which encodes the media and decodes its embeddings with the
attention the projector needs (Gemma 3 images: non-causal, the whole image in one ubatch). A Gemma 4
image is resized to transformers' size first (`gemma_edge.projector` says why).
"""
from __future__ import annotations

import ctypes
import importlib
from collections import OrderedDict
from pathlib import Path

from gemma_edge.llama import llama_cpp
from gemma_edge.llama.logs import silence_mtmd_logs
from gemma_edge.projector import ProjectorError, read_projector_file

CHUNK_CACHE_SIZE = 8  # media chunks kept by digest (a Gemma 3 image holds ~10 MB of preprocessed pixels)


def _mtmd():
    """llama-cpp-python's mtmd bindings, once its version is checked."""
    llama_cpp()
    return importlib.import_module("llama_cpp.mtmd_cpp")


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
        silence_mtmd_logs(mtmd)
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
