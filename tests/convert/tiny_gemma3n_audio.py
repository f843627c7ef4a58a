"""A tiny seeded random Gemma 3n checkpoint WITH its audio tower (USM conformer), laid out like
``Gemma3nForConditionalGeneration``'s files but without a vision tower.

transformers builds Gemma3nForConditionalGeneration's vision tower through timm (MobileNetV5), which is
not installed (and must not replace the pinned torch). The audio half needs no timm, so the checkpoint is
assembled from the transformers classes of each part, saved under the names the full model uses:

* text: tiny_gemma3n's recipe (``Gemma3nForCausalLM``) → ``model.language_model.*``;
* audio tower: ``Gemma3nAudioEncoder`` scaled down (hidden 32, 2 conformer layers, 4 heads, sub-sampling
  channels 8/4) with the real front end (128 mel bins) → ``model.audio_tower.*``;
* audio embedder: ``Gemma3nMultimodalEmbedder(audio, text)`` → ``model.embed_audio.*``.

``config.json`` is ``Gemma3nConfig``'s with ``text_config`` and ``audio_config`` and no ``vision_config``
(the checkpoint has no vision tensors). Weights are perturbed like tiny_gemma4's (no all-ones norms).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from tests.convert.tiny import cached_dir, write_tiny_tokenizer
from tests.convert.tiny_gemma3n import RECIPE, build_model as build_text_model
from tests.convert.tiny_gemma4 import perturb_

BUILDER_VERSION = 1
AUDIO_CONFIG = dict(hidden_size=32, conf_num_hidden_layers=2, conf_num_attention_heads=4,
                    sscp_conv_channel_size=[8, 4])


def audio_state_dict(text_config, seed: int) -> dict:
    """``model.audio_tower.*`` and ``model.embed_audio.*`` tensors of a seeded random audio tower."""
    import torch
    from transformers import Gemma3nAudioConfig
    from transformers.models.gemma3n.modeling_gemma3n import Gemma3nAudioEncoder, Gemma3nMultimodalEmbedder

    audio_config = Gemma3nAudioConfig(**AUDIO_CONFIG)
    torch.manual_seed(seed)
    parts = {"model.audio_tower.": Gemma3nAudioEncoder(audio_config).eval(),
             "model.embed_audio.": Gemma3nMultimodalEmbedder(audio_config, text_config).eval()}
    tensors = {}
    for prefix, module in parts.items():
        perturb_(module, seed)
        tensors.update({prefix + name: value for name, value in module.state_dict().items()})
    return tensors


def write_config(out: Path, text_config) -> None:
    from transformers import Gemma3nAudioConfig, Gemma3nConfig

    config = Gemma3nConfig(text_config=text_config, audio_config=Gemma3nAudioConfig(**AUDIO_CONFIG)).to_dict()
    config.pop("vision_config")
    config["architectures"] = ["Gemma3nForConditionalGeneration"]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def gemma3n_audio_checkpoint(dtype: str = "float32", seed: int = 0) -> Path:
    """The cached checkpoint directory (config.json, model.safetensors, tiny SentencePiece tokenizer)."""
    recipe = {"builder": BUILDER_VERSION, "dtype": dtype, "seed": seed, "text": copy.deepcopy(RECIPE),
              "audio": AUDIO_CONFIG}

    def build(out: Path) -> None:
        import torch
        from safetensors.torch import save_file

        text = build_text_model(recipe["text"], seed)
        tensors = {name.replace("model.", "model.language_model.", 1): value
                   for name, value in text.state_dict().items() if name != "lm_head.weight"}
        tensors.update(audio_state_dict(text.config, seed))
        dtype_ = getattr(torch, dtype)
        save_file({name: value.to(dtype_).contiguous() for name, value in tensors.items()},
                  out / "model.safetensors", metadata={"format": "pt"})
        write_config(out, text.config)
        write_tiny_tokenizer(out)

    return cached_dir(f"gemma3n-audio-{dtype}", recipe, build)
