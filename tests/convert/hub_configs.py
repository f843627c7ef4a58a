"""config.json of official Gemma releases on the Hugging Face Hub, as their files have them (JSON text: ``null``,
legacy keys and key order kept), with where each was checked. No Hub access here: every file was reconstructed
from copies vendored in public repositories (found with code search; ``id`` = the search index's file id) and
from the published model shapes. Vision/audio sub-configs are cut down to their ``model_type`` and geometry:
the text GGUF never reads them.

Each entry: name → (source, JSON text).
"""
from __future__ import annotations

import json

_GEMMA_1_LAYOUT = """
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 2,
  "eos_token_id": 1,
  "head_dim": 256,
  "hidden_act": "gelu",%s
  "hidden_size": %d,
  "initializer_range": 0.02,
  "intermediate_size": %d,
  "max_position_embeddings": 8192,
  "model_type": "gemma",
  "num_attention_heads": %d,
  "num_hidden_layers": %d,
  "num_key_value_heads": %d,
  "pad_token_id": 0,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "torch_dtype": "bfloat16",
  "transformers_version": "%s",
  "use_cache": true,
  "vocab_size": 256000
"""


def _gemma1(extra: str, hidden: int, ffn: int, heads: int, layers: int, kv_heads: int, version: str) -> str:
    return '{\n  "architectures": ["GemmaForCausalLM"],' + _GEMMA_1_LAYOUT % (
        extra, hidden, ffn, heads, layers, kv_heads, version) + "}"


_GEMMA_2_LAYOUT = """{
  "architectures": ["Gemma2ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "attn_logit_softcapping": 50.0,
  "bos_token_id": 2,
  "cache_implementation": "hybrid",
  "eos_token_id": %s,
  "final_logit_softcapping": 30.0,
  "head_dim": 256,
  "hidden_act": "gelu_pytorch_tanh",
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": %d,
  "initializer_range": 0.02,
  "intermediate_size": %d,
  "max_position_embeddings": 8192,
  "model_type": "gemma2",
  "num_attention_heads": %d,
  "num_hidden_layers": %d,
  "num_key_value_heads": %d,
  "pad_token_id": 0,
  "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06,
  "rope_theta": 10000.0,
  "sliding_window": 4096,%s
  "torch_dtype": "%s",
  "transformers_version": "%s",
  "use_cache": true,
  "vocab_size": 256000
}"""


def _gemma2(eos: str, hidden: int, ffn: int, heads: int, layers: int, kv_heads: int, extra: str, dtype: str,
            version: str) -> str:
    return _GEMMA_2_LAYOUT % (eos, hidden, ffn, heads, layers, kv_heads, extra, dtype, version)


# Gemma 3 4B-27B's SigLIP tower (896 px, patch 14), as their files list it
_SIGLIP_896 = json.dumps({
    "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304, "model_type": "siglip_vision_model",
    "num_attention_heads": 16, "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False,
})


def _layer_types(n: int, period: int) -> str:
    return json.dumps(["full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(n)])


HUB_CONFIGS: dict[str, tuple[str, str]] = {
    "google/gemma-2b": (
        "vendored verbatim (with _name_or_path google/gemma-2b) in a diffusion trainer's load_gemma2 "
        "(id 1285564616); the same keys in NVIDIA Megatron-Bridge's HF_GEMMA_TOY_MODEL_CONFIG (id 51785331688)",
        _gemma1("", 2048, 16384, 8, 18, 1, "4.38.0.dev0"),
    ),
    "google/gemma-2b-it": (
        "vendored verbatim as model_config (_name_or_path google/gemma-2b-it) in a KeeperConfig (id 40758997795)",
        _gemma1("", 2048, 16384, 8, 18, 1, "4.38.0.dev0"),
    ),
    "google/gemma-7b": (
        "gemma-2b's key set with the 7B shape (3072 / 24576 / 16 heads / 28 layers / 16 KV heads); hidden_act "
        '"gelu" and rope_scaling in the 7B repos: huggingface/trl PR #7217 ("Align tiny Gemma config with '
        'google/gemma-7b-it"); shape: the mllm Gemma README and a gemma_7b_config citing the Hub file',
        _gemma1("", 3072, 24576, 16, 28, 16, "4.38.0.dev0"),
    ),
    "google/gemma-1.1-2b-it": (
        "reconstructed: gemma-2b-it's keys plus the hidden_activation key transformers >= 4.39 writes "
        "(transformers PR #29402 / #29995 introduced it beside the legacy hidden_act); not checked byte for byte",
        _gemma1('\n  "hidden_activation": "gelu_pytorch_tanh",', 2048, 16384, 8, 18, 1, "4.40.0.dev0"),
    ),
    "google/gemma-2-2b-it": (
        "gemma-2-9b-it's key set (below) with the 2B shape of Gemma2Config's defaults (2304 / 9216 / 8 heads / "
        "26 layers / 4 KV heads) and eos [1, 107]; both activation keys: text-generation-inference PR #2381",
        _gemma2("[1, 107]", 2304, 9216, 8, 26, 4, "", "float32", "4.42.4"),
    ),
    "google/gemma-2-9b-it": (
        "quoted verbatim (cat models--google--gemma-2-9b-it/config.json) in a vLLM usage issue (id 56964966687)",
        _gemma2("1", 3584, 14336, 16, 42, 8, '\n  "sliding_window_size": 4096,', "bfloat16", "4.42.0.dev0"),
    ),
    "google/gemma-3-270m": (
        "vendored verbatim as gemma_3_config_dict in safety-research/circuit-tracer's Gemma 3 tests (id 11932151692)",
        """{
  "_sliding_window_pattern": 6,
  "architectures": ["Gemma3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "attn_logit_softcapping": null,
  "bos_token_id": 2,
  "eos_token_id": 1,
  "final_logit_softcapping": null,
  "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 640,
  "initializer_range": 0.02,
  "intermediate_size": 2048,
  "layer_types": %s,
  "max_position_embeddings": 32768,
  "model_type": "gemma3_text",
  "num_attention_heads": 4,
  "num_hidden_layers": 18,
  "num_key_value_heads": 1,
  "pad_token_id": 0,
  "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06,
  "rope_local_base_freq": 10000.0,
  "rope_scaling": null,
  "rope_theta": 1000000.0,
  "sliding_window": 512,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.55.0.dev0",
  "use_bidirectional_attention": false,
  "use_cache": true,
  "vocab_size": 262144
}""" % _layer_types(18, 6),
    ),
    "google/gemma-3-1b-it": (
        "the 4.50-era Gemma 3 text layout (as in the 270m file, without layer_types / _sliding_window_pattern, "
        "with sliding_window_pattern); shape and rope keys as brainsurgery's gemma-3-1b-it payload (id 60912244108)",
        """{
  "architectures": ["Gemma3ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "attn_logit_softcapping": null,
  "bos_token_id": 2,
  "cache_implementation": "hybrid",
  "eos_token_id": [1, 106],
  "final_logit_softcapping": null,
  "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 1152,
  "initializer_range": 0.02,
  "intermediate_size": 6912,
  "max_position_embeddings": 32768,
  "model_type": "gemma3_text",
  "num_attention_heads": 4,
  "num_hidden_layers": 26,
  "num_key_value_heads": 1,
  "pad_token_id": 0,
  "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06,
  "rope_local_base_freq": 10000,
  "rope_scaling": null,
  "rope_theta": 1000000,
  "sliding_window": 512,
  "sliding_window_pattern": 6,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.50.0.dev0",
  "use_cache": true,
  "vocab_size": 262144
}""",
    ),
    "google/gemma-3-4b-it": (
        "the Hub file's short text_config (only what differs from Gemma3TextConfig's defaults; linear rope x8); "
        "the resolved 4B text shape matches a translategemma fixture (id 68381995200), the SigLIP geometry "
        "tests/convert/test_mmproj_gemma3.py::test_official_geometry_writes_no_scale_factor",
        """{
  "architectures": ["Gemma3ForConditionalGeneration"],
  "boi_token_index": 255999,
  "eoi_token_index": 256000,
  "eos_token_id": [1, 106],
  "image_token_index": 262144,
  "initializer_range": 0.02,
  "mm_tokens_per_image": 256,
  "model_type": "gemma3",
  "text_config": {
    "hidden_size": 2560,
    "intermediate_size": 10240,
    "model_type": "gemma3_text",
    "num_hidden_layers": 34,
    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    "sliding_window": 1024
  },
  "torch_dtype": "bfloat16",
  "transformers_version": "4.50.0.dev0",
  "vision_config": %s
}""" % _SIGLIP_896,
    ),
    "google/gemma-3-12b-it": (
        "text_config vendored (a Gemma3Config(**{...}) for LTX-2's text encoder) in ostris/ai-toolkit (id 53185873524)",
        """{
  "architectures": ["Gemma3ForConditionalGeneration"],
  "boi_token_index": 255999,
  "bos_token_id": 2,
  "eoi_token_index": 256000,
  "eos_token_id": 106,
  "image_token_index": 262144,
  "initializer_range": 0.02,
  "mm_tokens_per_image": 256,
  "model_type": "gemma3",
  "pad_token_id": 0,
  "text_config": {
    "attention_bias": false,
    "attention_dropout": 0.0,
    "attn_logit_softcapping": null,
    "cache_implementation": "hybrid",
    "final_logit_softcapping": null,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 3840,
    "initializer_range": 0.02,
    "intermediate_size": 15360,
    "max_position_embeddings": 131072,
    "model_type": "gemma3_text",
    "num_attention_heads": 16,
    "num_hidden_layers": 48,
    "num_key_value_heads": 8,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000,
    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    "rope_theta": 1000000,
    "sliding_window": 1024,
    "sliding_window_pattern": 6,
    "torch_dtype": "bfloat16",
    "use_cache": true,
    "vocab_size": 262208
  },
  "torch_dtype": "bfloat16",
  "transformers_version": "4.51.3",
  "vision_config": %s
}""" % _SIGLIP_896,
    ),
    "google/gemma-3n-E2B-it": (
        "Gemma3nTextConfig keys as vendored 3n text configs list them (ids 45379166470, 58141470368); E2B shape: "
        "30 layers, 10 KV-shared, sparsity 0.95 on the first 10 (google-ai-edge get_model_config_e2b, id "
        "10919927326), FFN 8192 per layer",
        """{
  "architectures": ["Gemma3nForConditionalGeneration"],
  "audio_config": {"model_type": "gemma3n_audio"},
  "eos_token_id": [1, 106],
  "model_type": "gemma3n",
  "text_config": {
    "activation_sparsity_pattern": %s,
    "altup_active_idx": 0,
    "altup_coef_clip": 120.0,
    "altup_correct_scale": true,
    "altup_lr_multiplier": 1.0,
    "altup_num_inputs": 4,
    "attention_bias": false,
    "attention_dropout": 0.0,
    "final_logit_softcapping": 30.0,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 2048,
    "hidden_size_per_layer_input": 256,
    "initializer_range": 0.02,
    "intermediate_size": %s,
    "laurel_rank": 64,
    "layer_types": %s,
    "max_position_embeddings": 32768,
    "model_type": "gemma3n_text",
    "num_attention_heads": 8,
    "num_hidden_layers": 30,
    "num_key_value_heads": 2,
    "num_kv_shared_layers": 10,
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-06,
    "rope_local_base_freq": 10000.0,
    "rope_scaling": null,
    "rope_theta": 1000000.0,
    "sliding_window": 512,
    "torch_dtype": "bfloat16",
    "use_cache": true,
    "vocab_size": 262400,
    "vocab_size_per_layer_input": 262144
  },
  "torch_dtype": "bfloat16",
  "transformers_version": "4.53.0.dev0",
  "vision_config": {"model_type": "gemma3n_vision"}
}""" % (json.dumps([0.95] * 10 + [0.0] * 20), json.dumps([8192] * 30), _layer_types(30, 5)),
    ),
    "google/gemma-4-E2B-it": (
        "text_config as vendored from the checkpoint in a Rust GemmaModelSpec test (id 56355648385), a vLLM-based "
        "test's _text_config (id 66486419365) and GEMMA4_E2B_TEXT 'verified against the checkpoint's config.json' "
        "(id 61689293231): 35 layers, every 5th full, 20 KV-shared, double-wide MLP",
        """{
  "architectures": ["Gemma4ForConditionalGeneration"],
  "audio_config": {"model_type": "gemma4_audio"},
  "dtype": "bfloat16",
  "model_type": "gemma4",
  "text_config": {
    "attention_bias": false,
    "attention_dropout": 0.0,
    "attention_k_eq_v": false,
    "dtype": "bfloat16",
    "enable_moe_block": false,
    "final_logit_softcapping": 30.0,
    "global_head_dim": 512,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "hidden_size": 1536,
    "hidden_size_per_layer_input": 256,
    "intermediate_size": 6144,
    "layer_types": %s,
    "max_position_embeddings": 131072,
    "model_type": "gemma4_text",
    "moe_intermediate_size": null,
    "num_attention_heads": 8,
    "num_experts": null,
    "num_global_key_value_heads": null,
    "num_hidden_layers": 35,
    "num_key_value_heads": 1,
    "num_kv_shared_layers": 20,
    "rms_norm_eps": 1e-06,
    "rope_parameters": {
      "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"},
      "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}
    },
    "sliding_window": 512,
    "tie_word_embeddings": true,
    "top_k_experts": null,
    "use_double_wide_mlp": true,
    "vocab_size": 262144,
    "vocab_size_per_layer_input": 262144
  },
  "vision_config": {"model_type": "gemma4_vision"}
}""" % _layer_types(35, 5),
    ),
}
