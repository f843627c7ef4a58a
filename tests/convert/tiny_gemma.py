"""Tiny Gemma 1/2/3 checkpoints (docs/converter-spec.md §9.3), cached by recipe.

``gemma-hub`` is the ``gemma`` checkpoint (same seed, same weights) whose config.json is rewritten in the form
the official Gemma 1 releases ship (:func:`hub_gemma1_config`), so tests convert the file users have.
"""
from __future__ import annotations

import json
from pathlib import Path

from tests.convert.tiny import VOCAB_SIZE, build_checkpoint, cached_dir

COMMON = {
    "vocab_size": VOCAB_SIZE, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256,
    "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
}

RECIPES = {
    "gemma": ("GemmaForCausalLM", "GemmaConfig", {**COMMON, "num_hidden_layers": 2}),
    "gemma-hub": ("GemmaForCausalLM", "GemmaConfig", {**COMMON, "num_hidden_layers": 2}),
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", {
        **COMMON, "num_hidden_layers": 4, "query_pre_attn_scalar": 16, "sliding_window": 4,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
    }),
    "gemma3": ("Gemma3ForCausalLM", "Gemma3TextConfig", {
        **COMMON, "num_hidden_layers": 7, "query_pre_attn_scalar": 16, "sliding_window": 4,
    }),
    # 4B-like: linear rope scaling on full layers only, final softcap
    "gemma3-linear": ("Gemma3ForCausalLM", "Gemma3TextConfig", {
        **COMMON, "num_hidden_layers": 7, "query_pre_attn_scalar": 16, "sliding_window": 4,
        "final_logit_softcapping": 30.0,
        "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
    }),
    # Gemma 3 4B-style multimodal checkpoint (legacy layout: language_model.model.*, vision_tower.*)
    "gemma3-mm": ("Gemma3ForConditionalGeneration", "Gemma3Config", {
        "text_config": {**COMMON, "num_hidden_layers": 7, "query_pre_attn_scalar": 16, "sliding_window": 4},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "image_size": 28, "patch_size": 14},
        "mm_tokens_per_image": 4, "boi_token_index": 397, "eoi_token_index": 398, "image_token_index": 399,
    }),
    # layer_types that differ from llama.cpp's period-6 default: needs the sliding_window_pattern array
    "gemma3-pattern": ("Gemma3ForCausalLM", "Gemma3TextConfig", {
        **COMMON, "num_hidden_layers": 7, "query_pre_attn_scalar": 16, "sliding_window": 4,
        "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention",
                        "sliding_attention", "sliding_attention", "sliding_attention"],
    }),
    # H and F multiples of 256 so K-quants apply without fallbacks
    "gemma3-k": ("Gemma3ForCausalLM", "Gemma3TextConfig", {
        **COMMON, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 3,
        "query_pre_attn_scalar": 16, "sliding_window": 4,
    }),
}


def hub_gemma1_config(saved: dict) -> dict:
    """A transformers-5.23 Gemma 1 config.json rewritten as google/gemma-2b's (transformers 4.38, see
    tests/convert/hub_configs.py): ``hidden_act: "gelu"``, ``rope_theta`` with ``rope_scaling: null`` instead
    of ``rope_parameters``, ``torch_dtype`` instead of ``dtype``, and none of the keys 4.38 did not write."""
    dropped = ("rope_parameters", "dtype", "tie_word_embeddings", "use_bidirectional_attention")
    hub = {key: value for key, value in saved.items() if key not in dropped}
    hub.update(hidden_act="gelu", rope_scaling=None, rope_theta=saved["rope_parameters"]["rope_theta"],
               torch_dtype=saved["dtype"], transformers_version="4.38.0.dev0")
    return dict(sorted(hub.items()))


HUB_FORMS = {"gemma-hub": hub_gemma1_config}  # case → config.json rewrite applied after saving


def tiny_checkpoint(case: str, seed: int = 0, dtype: str = "float32") -> Path:
    model_name, config_name, config = RECIPES[case]
    recipe = {"case": case, "model": model_name, "config": config, "seed": seed, "dtype": dtype, "v": 1}

    def build(directory: Path) -> None:
        import transformers

        model_class = getattr(transformers, model_name)
        config_object = getattr(transformers, config_name)(**config)
        build_checkpoint(directory, model_class, config_object, seed, dtype)
        if case in HUB_FORMS:
            path = directory / "config.json"
            path.write_text(json.dumps(HUB_FORMS[case](json.loads(path.read_text())), indent=2) + "\n")

    return cached_dir(f"hf-{case}", recipe, build)
