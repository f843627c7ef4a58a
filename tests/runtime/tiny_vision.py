"""The tiny seeded Gemma 3 vision checkpoint (tests/convert/tiny_gemma3_vision.py) as the runtime sees
it: a text GGUF and its `mmproj-<stem>.gguf` beside it, written by OUR converter (F32, so llama.cpp and
transformers can be compared closely) and cached like the converter tests' files; plus the transformers
side (a Gemma3Processor on the checkpoint's own tokenizer and image processor) and seeded images at the
encoder's native size (64x64, 16 image positions). Shared by the runtime, CLI and server media tests."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# What transformers' Gemma 3 tokenizer names these (Google's tokenizer_config.json)
GEMMA3_MEDIA_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                       "image_token": "<image_soft_token>"}


def gemma3_vision_pair() -> tuple[Path, Path]:
    """(text GGUF, mmproj) of the tiny Gemma 3 vision checkpoint; the mmproj lies beside the text GGUF
    under the name `load()` looks for by itself."""
    from convert.api import convert_checkpoint
    from tests.convert.tiny import cached_dir
    from tests.convert.tiny_gemma3_vision import tiny_gemma3_vision

    checkpoint = tiny_gemma3_vision()
    recipe = {"checkpoint": checkpoint.name, "type": "f32", "v": 1}
    directory = cached_dir("gemma3-vision-pair", recipe, lambda d: convert_checkpoint(
        checkpoint, d / "tiny-gemma3-vision.gguf", "f32", mmproj=True))
    return directory / "tiny-gemma3-vision.gguf", directory / "mmproj-tiny-gemma3-vision.gguf"


def image_png(seed: int, size: int) -> bytes:
    """A seeded RGB image (smooth gradients plus noise) as PNG bytes, `size`×`size` pixels."""
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    base = np.stack([255 * x / (size - 1), 255 * y / (size - 1), 127.5 * (1 + np.sin((x + seed) / 5.0))], axis=-1)
    noise = np.random.default_rng(seed).normal(0.0, 30.0, base.shape)
    pixels = np.clip(np.rint(base + noise), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def write_image(path: Path, seed: int = 0, size: int | None = None) -> Path:
    """`image_png` written to `path` (at the encoder's native size unless `size` says otherwise)."""
    from tests.convert.tiny_gemma3_vision import IMAGE_SIZE

    path.write_bytes(image_png(seed, size or IMAGE_SIZE))
    return path


def gemma3_tokenizer(checkpoint: Path):
    """transformers' GemmaTokenizer for the checkpoint's SentencePiece model, built the way transformers'
    converter builds it (vocab + merges ordered by piece score; control pieces special), without the
    protobuf dependency; with the Gemma 3 media token names."""
    import sentencepiece as spm
    from transformers import GemmaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    sp = spm.SentencePieceProcessor(model_file=str(checkpoint / "tokenizer.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())}
    controls = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i)]
    tokenizer = GemmaTokenizer(vocab=vocab, merges=generate_merges(vocab, scores), add_bos_token=False,
                               extra_special_tokens=GEMMA3_MEDIA_TOKENS)
    tokenizer.add_tokens(controls + [GEMMA3_MEDIA_TOKENS["image_token"]], special_tokens=True)
    return tokenizer


def gemma3_processor(checkpoint: Path):
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    from tests.convert.tiny_gemma3_vision import MM_TOKENS_PER_IMAGE

    return Gemma3Processor(image_processor=Gemma3ImageProcessor.from_pretrained(checkpoint),
                           tokenizer=gemma3_tokenizer(checkpoint), image_seq_length=MM_TOKENS_PER_IMAGE)
