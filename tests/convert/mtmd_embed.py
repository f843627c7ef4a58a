"""mtmd oracle: the projected embeddings llama.cpp's mtmd computes for one image or one audio clip.

    image_embeddings(text_gguf, mmproj_gguf, rgb)            # rgb: uint8 (H, W, 3), e.g. synthetic_image(size)
    audio_embeddings(text_gguf, mmproj_gguf, pcm, rate)      # pcm: float32 mono, rate in Hz

both return float32 ``(n_tokens, n_embd_text)``: the text model is loaded (mtmd needs it), an mtmd
context is made from the mmproj, ``<marker>`` with one bitmap is tokenized (``mtmd_tokenize``, the
default media marker), every media chunk is encoded (``mtmd_encode_chunk``) and its output
(``mtmd_get_output_embd``) copied; chunks in order are concatenated (long audio may make several).
Everything is freed before returning; llama.cpp's and mtmd's logs are silenced while it runs (mtmd's
are routed through llama-cpp-python's logger, raised above CRITICAL for the duration).
Audio must already be at mtmd's sample rate (resampling would be a second variable in a comparison).
"""
from __future__ import annotations

import ctypes
import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class MtmdError(RuntimeError):
    pass


@contextmanager
def _silenced():
    import llama_cpp
    import llama_cpp._logger as llama_logger
    from llama_cpp import mtmd_cpp

    mtmd_cpp.mtmd_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
    mtmd_cpp.mtmd_helper_log_set(llama_logger.llama_log_callback, ctypes.c_void_p(0))
    log = logging.getLogger("llama-cpp-python")
    previous = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        llama_cpp.llama_backend_init()
        yield
    finally:
        log.setLevel(previous)


@contextmanager
def _mtmd_context(text_gguf: Path, mmproj_gguf: Path, threads: int):
    import llama_cpp
    from llama_cpp import mtmd_cpp

    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    model = llama_cpp.llama_model_load_from_file(str(text_gguf).encode(), params)
    if not model:
        raise MtmdError(f"llama.cpp could not load {text_gguf}")
    try:
        ctx_params = mtmd_cpp.mtmd_context_params_default()
        ctx_params.use_gpu = False
        ctx_params.print_timings = False
        ctx_params.n_threads = threads
        ctx_params.warmup = False
        ctx = mtmd_cpp.mtmd_init_from_file(str(mmproj_gguf).encode(), model, ctx_params)
        if not ctx:
            raise MtmdError(f"mtmd could not load {mmproj_gguf}")
        try:
            yield model, ctx
        finally:
            mtmd_cpp.mtmd_free(ctx)
    finally:
        llama_cpp.llama_model_free(model)


def _encode(model, ctx, bitmap) -> np.ndarray:
    import llama_cpp
    from llama_cpp import mtmd_cpp

    marker = mtmd_cpp.mtmd_default_marker()
    text = mtmd_cpp.mtmd_input_text(text=marker, text_len=len(marker), add_special=False, parse_special=True)
    bitmaps = (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap)
    chunks = mtmd_cpp.mtmd_input_chunks_init()
    try:
        status = mtmd_cpp.mtmd_tokenize(ctx, chunks, ctypes.byref(text), bitmaps, 1)
        if status != 0:
            raise MtmdError(f"mtmd_tokenize failed (status {status})")
        n_embd = llama_cpp.llama_model_n_embd(model)
        pieces = []
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            if mtmd_cpp.mtmd_input_chunk_get_type(chunk) == mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_TEXT:
                continue
            n_tokens = mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)
            status = mtmd_cpp.mtmd_encode_chunk(ctx, chunk)
            if status != 0:
                raise MtmdError(f"mtmd_encode_chunk failed (status {status})")
            output = mtmd_cpp.mtmd_get_output_embd(ctx)
            pieces.append(np.ctypeslib.as_array(output, shape=(n_tokens * n_embd,)).reshape(n_tokens, n_embd).copy())
        if not pieces:
            raise MtmdError("mtmd made no media chunk")
        return np.concatenate(pieces, axis=0).astype(np.float32, copy=False)
    finally:
        mtmd_cpp.mtmd_input_chunks_free(chunks)


def image_embeddings(text_gguf: Path, mmproj_gguf: Path, rgb: np.ndarray, threads: int = 2) -> np.ndarray:
    """mtmd's projected embeddings of one RGB image (uint8, shape (H, W, 3)): (n_tokens, n_embd_text)."""
    from llama_cpp import mtmd_cpp

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    with _silenced(), _mtmd_context(Path(text_gguf), Path(mmproj_gguf), threads) as (model, ctx):
        if not mtmd_cpp.mtmd_support_vision(ctx):
            raise MtmdError(f"{mmproj_gguf} has no vision encoder")
        bitmap = mtmd_cpp.mtmd_bitmap_init(width, height, rgb.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        try:
            return _encode(model, ctx, bitmap)
        finally:
            mtmd_cpp.mtmd_bitmap_free(bitmap)


def audio_embeddings(text_gguf: Path, mmproj_gguf: Path, pcm: np.ndarray, sample_rate: int,
                     threads: int = 2) -> np.ndarray:
    """mtmd's projected embeddings of mono float32 PCM at mtmd's own sample rate: (n_tokens, n_embd_text)."""
    from llama_cpp import mtmd_cpp

    pcm = np.ascontiguousarray(pcm, dtype=np.float32)
    if pcm.ndim != 1:
        raise ValueError(f"expected mono PCM (1-D), got shape {pcm.shape}")
    with _silenced(), _mtmd_context(Path(text_gguf), Path(mmproj_gguf), threads) as (model, ctx):
        if not mtmd_cpp.mtmd_support_audio(ctx):
            raise MtmdError(f"{mmproj_gguf} has no audio encoder")
        expected = mtmd_cpp.mtmd_get_audio_sample_rate(ctx)
        if expected != sample_rate:
            raise ValueError(f"mtmd expects {expected} Hz audio, got {sample_rate} Hz (resample first)")
        bitmap = mtmd_cpp.mtmd_bitmap_init_from_audio(len(pcm), pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        try:
            return _encode(model, ctx, bitmap)
        finally:
            mtmd_cpp.mtmd_bitmap_free(bitmap)


def synthetic_image(size: int, seed: int = 0) -> np.ndarray:
    """A fixed RGB uint8 image, `size` x `size` (pass the encoder's native size, so that neither side
    resizes it): smooth gradients plus seeded noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    smooth = np.stack([x, y, (x + y) / 2], axis=-1) * 255
    return np.clip(smooth * 0.6 + rng.integers(0, 102, smooth.shape), 0, 255).astype(np.uint8)


def per_token_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row (token) of two (n_tokens, n_embd) arrays, computed in float64."""
    reference, candidate = reference.astype(np.float64), candidate.astype(np.float64)
    dots = np.sum(reference * candidate, axis=1)
    return dots / (np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1))
