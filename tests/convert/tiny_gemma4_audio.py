"""A tiny seeded random Gemma 4 E2B-like checkpoint WITH its audio encoder (conformer), and the
transformers side of the audio oracle.

The text part is tiny_gemma4's "e2b" recipe (per-layer embeddings, KV sharing, double-wide MLP) with its
512-token prefix of the real Gemma 4 vocabulary; the audio tower is Gemma4AudioConfig scaled down but
with the real front end: 128 mel bins (so the first subsampling conv has 128 channels, as transformers
sizes its input projection from `subsampling_conv_channels[0] // 4`) and the runtime's fixed chunked
attention (chunk 12, 12 past frames), softcap 50, conv kernel 5. tiny_gemma4_vision's vision tower rides
along (with its clip bounds and standardisation), because real E2B/E4B checkpoints have both towers and
their mmproj holds both encoders.

Weights follow tiny_gemma4.perturb_; in addition every ClippableLinear of the audio tower gets finite,
seeded clip bounds tight enough to bite (real checkpoints carry finite bounds; the defaults, ±inf,
would hide a misnamed bound tensor).

* `gemma4_audio_checkpoint()` — the cached checkpoint directory (config, safetensors, tokenizer,
  processor_config.json with the audio feature extractor).
* `test_waveform(seconds)` — a fixed seeded chirp + noise at 16 kHz, float32 in [-1, 1].
* `hf_audio_embeddings(model_dir, waveform)` — feature extractor → audio tower → embed_audio:
  (n_tokens, text hidden size) float32, with the log-mel features it used.
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
from tests.convert.tiny_gemma4_vision import IMAGE_PROCESSOR, VISION_CONFIG, set_vision_buffers_

AUDIO_BUILDER_VERSION = 2  # bump when audio_weights_ or the processor config change
SAMPLE_RATE = 16_000
AUDIO_CONFIG = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, subsampling_conv_channels=[128, 8],
    output_proj_dims=48,
)
# (input bound, output bound) ranges of the seeded clip values, in units of the typical activation.
CLIP_INPUT_RANGE = (0.5, 1.5)
CLIP_OUTPUT_RANGE = (0.2, 0.8)


def recipe(dtype: str = "float32", seed: int = 0) -> dict:
    return {"builder": BUILDER_VERSION, "audio_builder": AUDIO_BUILDER_VERSION, "kind": "e2b+audio", "vocab": "tiny",
            "dtype": dtype, "seed": seed,
            "text": copy.deepcopy(RECIPES["e2b"]), "audio": AUDIO_CONFIG, "vision": VISION_CONFIG,
            "clip": [CLIP_INPUT_RANGE, CLIP_OUTPUT_RANGE], "processor": IMAGE_PROCESSOR}


def audio_weights_(model, seed: int) -> None:
    """On top of perturb_: the output projection's bias ~ N(0, 0.05) (perturb_'s 1 + N(0, 0.1) for every
    1-D tensor would give all tokens one large common component), and finite seeded bounds on every
    audio ClippableLinear: inputs clamped to ±U(CLIP_INPUT_RANGE), outputs to ±U(CLIP_OUTPUT_RANGE),
    lower and upper drawn independently."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    draw = lambda lo, hi: float(lo + (hi - lo) * torch.rand((), generator=gen))  # noqa: E731
    bounds = {"input_max": (1, CLIP_INPUT_RANGE), "input_min": (-1, CLIP_INPUT_RANGE),
              "output_max": (1, CLIP_OUTPUT_RANGE), "output_min": (-1, CLIP_OUTPUT_RANGE)}
    with torch.no_grad():
        bias = model.model.audio_tower.output_proj.bias
        bias.copy_(0.05 * torch.randn(bias.shape, generator=gen))
        for name, buf in sorted(model.named_buffers()):
            kind = name.rsplit(".", 1)[-1]
            if "audio_tower" in name and kind in bounds:
                sign, (lo, hi) = bounds[kind]
                buf.fill_(sign * draw(lo, hi))


def build_model(spec: dict, n_vocab: int):
    import torch
    from transformers import Gemma4AudioConfig, Gemma4Config, Gemma4ForConditionalGeneration, Gemma4TextConfig
    from transformers import Gemma4VisionConfig

    text = Gemma4TextConfig(vocab_size=n_vocab, vocab_size_per_layer_input=n_vocab, pad_token_id=0,
                            eos_token_id=1, bos_token_id=2, **spec["text"])
    config = Gemma4Config(text_config=text, vision_config=Gemma4VisionConfig(**spec["vision"]),
                          audio_config=Gemma4AudioConfig(**spec["audio"]))
    torch.manual_seed(spec["seed"])
    model = Gemma4ForConditionalGeneration(config).eval()
    perturb_(model, spec["seed"])
    set_vision_buffers_(model, spec["seed"])
    audio_weights_(model, spec["seed"])
    return model


def write_processor_config(out: Path) -> None:
    """processor_config.json with the audio feature extractor's settings (transformers' defaults) and
    tiny_gemma4_vision's image processor section, as the official Gemma 4 repositories ship them."""
    from transformers import Gemma4AudioFeatureExtractor

    feature_extractor = Gemma4AudioFeatureExtractor().to_dict()
    feature_extractor.pop("mel_filters", None)
    feature_extractor.pop("window", None)
    feature_extractor["mel_floor"] = float(feature_extractor["mel_floor"])
    config = {"processor_class": "Gemma4Processor", "feature_extractor": feature_extractor,
              "image_processor": IMAGE_PROCESSOR, "image_seq_length": IMAGE_PROCESSOR["max_soft_tokens"]}
    (out / "processor_config.json").write_text(json.dumps(config, indent=2))


def gemma4_audio_checkpoint(dtype: str = "float32", seed: int = 0) -> Path:
    spec = recipe(dtype, seed)
    source = real_vocab_gguf()

    def build(out: Path) -> None:
        real = read_real_vocab(source)
        write_tokenizer_files(real, out, TINY_VOCAB_SIZE)
        save_checkpoint(build_model(spec, TINY_VOCAB_SIZE), out, dtype)
        write_processor_config(out)

    return cached_dir(f"gemma4-e2b-audio-{dtype}", spec, build)


def test_waveform(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A linear chirp 200 Hz → 6 kHz at amplitude 0.5, plus seeded white noise (σ 0.05), at 16 kHz."""
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    f0, f1 = 200.0, 6000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
    noise = np.random.default_rng(seed).normal(0.0, 0.05, n)
    return np.clip(0.5 * np.sin(phase) + noise, -1.0, 1.0).astype(np.float32)


test_waveform.__test__ = False  # not a pytest test


def hf_log_mel(model_dir: Path, waveform: np.ndarray) -> np.ndarray:
    """The feature extractor's log-mel features (n_frames, n_mel) for one unpadded waveform."""
    from transformers import Gemma4AudioFeatureExtractor

    config = json.loads((model_dir / "processor_config.json").read_text())["feature_extractor"]
    extractor = Gemma4AudioFeatureExtractor(**{k: v for k, v in config.items() if k != "feature_extractor_type"})
    features = extractor([waveform], sampling_rate=SAMPLE_RATE, return_tensors="np")
    mask = features["input_features_mask"][0]
    assert mask.all(), "the oracle waveform must not need padding (length a multiple of 128 samples)"
    return features["input_features"][0]


def hf_audio_embeddings(model_dir: Path, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(projected audio embeddings (n_tokens, n_embd_text), log-mel features (n_frames, n_mel)), float32."""
    import torch
    from transformers import Gemma4ForConditionalGeneration

    mel = hf_log_mel(model_dir, waveform)
    model = Gemma4ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    features = torch.from_numpy(mel)[None]
    with torch.no_grad():
        out = model.model.get_audio_features(features, torch.ones(features.shape[:2], dtype=torch.bool))
    tokens = out.pooler_output[0][out.attention_mask[0]]
    return tokens.float().numpy(), mel
