"""Tiny seeded Gemma 4 checkpoints that see and hear, as the runtime meets them: the REAL Gemma 4 vocabulary
(262,144 tokens, so `<|image>` 255999, `<|image|>` 258880, `<image|>` 258882, `<|audio>` 256000, `<|audio|>`
258881, `<audio|>` 258883 are the real tokens with their real ids), a text GGUF and its
`mmproj-<stem>.gguf` written by OUR converter (F32), and the transformers side (Gemma4Processor built from
the checkpoint, the model itself).

Three kinds, shaped like the real families:
* "e2b" — tiny_gemma4's E2B-like text (per-layer embeddings kept small as REAL_VOCAB_OVERRIDES does for a
  262,144-row table, KV sharing, double-wide MLP) with tiny_gemma4_audio's audio tower and
  tiny_gemma4_vision's vision tower (real E2B/E4B have both);
* "dense" — tiny_gemma4's 31B-like text with the vision tower only (the large models hear nothing);
* "unified" — tiny_gemma4_unified's Gemma 4 12B Unified (encoder-free vision and audio embedders).
  Its processor is Gemma4UnifiedProcessor with the Gemma 4 PIL image processor: transformers' Unified
  image processor needs torchvision, and both size images by the same rule, so the soft-token counts
  (all the prompt needs) are the same.

Attention over image positions: llama.cpp's mtmd decodes gemma4v images non-causally (bidirectional on
the sliding-window layers, causal on the full-attention ones) unless the text hidden size is 1536 or 2560
(real E2B/E4B, whose configs leave `use_bidirectional_attention` unset). The tiny texts are 64 wide, so
their configs say `use_bidirectional_attention="vision"` — transformers' switch for exactly that mask —
and both sides attend alike.

The image processor budget (`max_soft_tokens`) is 70, transformers' smallest, with the tiny tower's
patch 4 and pooling 3: a soft token is 12×12 pixels, so images are resized to ≤ 70 of them.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

BUILDER_VERSION = 1  # bump when what is built changes
MEDIA_TOKENS = {"image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>",
                "audio_token": "<|audio|>", "boa_token": "<|audio>", "eoa_token": "<audio|>"}
KINDS = ("e2b", "dense", "unified")


def recipe(kind: str) -> dict:
    from tests.convert import tiny_gemma4, tiny_gemma4_audio, tiny_gemma4_unified, tiny_gemma4_vision

    if kind == "unified":
        return {**tiny_gemma4_unified.recipe(), "vocab": "real", "media_builder": BUILDER_VERSION}

    text = {**copy.deepcopy(tiny_gemma4.RECIPES[kind]), **tiny_gemma4.REAL_VOCAB_OVERRIDES.get(kind, {}),
            "use_bidirectional_attention": "vision"}
    spec = {"builder": tiny_gemma4.BUILDER_VERSION, "media_builder": BUILDER_VERSION, "kind": kind,
            "vocab": "real", "dtype": "float32", "seed": 0, "text": text,
            "vision": tiny_gemma4_vision.VISION_CONFIG, "processor": tiny_gemma4_vision.IMAGE_PROCESSOR,
            "vision_clip": [tiny_gemma4_vision.CLIP_INPUT_RANGE, tiny_gemma4_vision.CLIP_OUTPUT_RANGE]}
    if kind == "e2b":
        spec.update(audio_builder=tiny_gemma4_audio.AUDIO_BUILDER_VERSION, audio=tiny_gemma4_audio.AUDIO_CONFIG,
                    clip=[tiny_gemma4_audio.CLIP_INPUT_RANGE, tiny_gemma4_audio.CLIP_OUTPUT_RANGE])
    return spec


def _name_media_tokens(out: Path) -> None:
    """tokenizer_config.json names the media markers (`image_token`, `boi_token`, … entries), so
    transformers' tokenizer has the attributes Gemma4Processor reads."""
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(MEDIA_TOKENS)
    path.write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")


def gemma4_media_checkpoint(kind: str = "e2b") -> Path:
    """The cached checkpoint directory of `kind` (config, safetensors, real-vocabulary tokenizer,
    processor_config.json)."""
    from tests.convert import tiny_gemma4_audio, tiny_gemma4_unified, tiny_gemma4_vision
    from tests.convert.tiny import cached_dir
    from tests.convert.tiny_gemma4 import read_real_vocab, real_vocab_gguf, save_checkpoint, write_tokenizer_files

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    spec = recipe(kind)
    source = real_vocab_gguf()

    def build(out: Path) -> None:
        vocab = read_real_vocab(source)
        write_tokenizer_files(vocab, out)
        _name_media_tokens(out)
        n_vocab = len(vocab["tokens"])
        if kind == "unified":
            model = tiny_gemma4_unified.build_model(spec, n_vocab)
            tiny_gemma4_unified.write_side_files(out, spec)
        elif kind == "e2b":
            model = tiny_gemma4_audio.build_model(spec, n_vocab)
            tiny_gemma4_audio.write_processor_config(out)
        else:
            model = tiny_gemma4_vision.build_model(spec, n_vocab)
            tiny_gemma4_vision.write_processor_config(out, spec["processor"])
        save_checkpoint(model, out, spec["dtype"])

    return cached_dir(f"gemma4-{kind}-media", spec, build)


def gemma4_media_pair(kind: str = "e2b") -> tuple[Path, Path]:
    """(text GGUF, mmproj) of `kind` from our converter (F32); the mmproj lies beside the text GGUF
    under the name `load()` looks for."""
    from convert.api import convert_checkpoint
    from tests.convert.tiny import cached_dir

    checkpoint = gemma4_media_checkpoint(kind)
    stem = f"tiny-gemma4-{kind}-media"
    recipe = {"checkpoint": checkpoint.name, "type": "f32", "converter": converter_digest()}
    directory = cached_dir("gemma4-media-pair", recipe,
                           lambda d: convert_checkpoint(checkpoint, d / f"{stem}.gguf", "f32", mmproj=True))
    return directory / f"{stem}.gguf", directory / f"mmproj-{stem}.gguf"


def converter_digest() -> str:
    """A hash of our converter's sources: a converter change rebuilds the cached GGUF pair."""
    import hashlib

    root = Path(__file__).resolve().parents[2] / "convert"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def gemma4_processor(checkpoint: Path):
    """transformers' Gemma4Processor of the checkpoint: its tokenizer, image processor (the PIL one, which
    AutoImageProcessor picks too without torchvision) and audio feature extractor, as processor_config.json
    sets them; no video processor (Gemma4VideoProcessor needs torchvision; no test here has video)."""
    from transformers import (
        AutoTokenizer, Gemma4AudioFeatureExtractor, Gemma4ImageProcessorPil, Gemma4Processor,
        Gemma4UnifiedAudioFeatureExtractor, Gemma4UnifiedProcessor,
    )

    config = json.loads((checkpoint / "processor_config.json").read_text())
    unified = config.get("processor_class") == "Gemma4UnifiedProcessor"
    processor_class = Gemma4UnifiedProcessor if unified else Gemma4Processor
    extractor_class = Gemma4UnifiedAudioFeatureExtractor if unified else Gemma4AudioFeatureExtractor

    class Gemma4ProcessorWithoutVideo(processor_class):
        def check_argument_for_proper_class(self, argument_name, argument):
            # transformers' class check of a video processor fails without torchvision, even for None
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    image = {k: v for k, v in config["image_processor"].items() if k != "image_processor_type"}
    extractor = config.get("feature_extractor")
    features = (extractor_class(**{k: v for k, v in extractor.items() if k != "feature_extractor_type"})
                if extractor else extractor_class())
    return Gemma4ProcessorWithoutVideo(feature_extractor=features, image_processor=Gemma4ImageProcessorPil(**image),
                           tokenizer=AutoTokenizer.from_pretrained(checkpoint), video_processor=None,
                           image_seq_length=config.get("image_seq_length", 280))


def image_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A seeded uint8 RGB image (smooth gradients, structure across soft tokens, plus noise)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack([255 * x / max(1, width - 1), 255 * y / max(1, height - 1),
                     127.5 * (1 + np.sin((x + 3 * seed) / 7.0) * np.cos(y / 5.0))], axis=-1)
    noise = np.random.default_rng(seed).normal(0.0, 20.0, base.shape)
    return np.clip(np.rint(base + noise), 0, 255).astype(np.uint8)


def image_png(height: int, width: int, seed: int = 0) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image_rgb(height, width, seed)).save(buffer, "PNG")
    return buffer.getvalue()


def wav_bytes(waveform: np.ndarray, rate: int = 16_000) -> bytes:
    """16-bit mono PCM WAV of a float waveform in [-1, 1]."""
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.clip(np.rint(waveform * 32767), -32768, 32767).astype("<i2").tobytes())
    return buffer.getvalue()
