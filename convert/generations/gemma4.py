"""Gemma 4 (``Gemma4ForCausalLM``; the text part of ``Gemma4ForConditionalGeneration``) → llama.cpp arch
``gemma4`` (docs/converter-spec.md §7): dense 31B-like, E2B/E4B-like and MoE 26B-A4B-like checkpoints; and the
text part of Gemma 4 12B "Unified" (``Gemma4UnifiedForConditionalGeneration``, :data:`GEMMA4_UNIFIED`).

What makes Gemma 4 different from Gemma 3, and where each piece is handled here:
* full-attention layers have their own head dim (``global_head_dim``, or the full layers' ``head_dim`` in
  ``per_layer_config`` — transformers ≥ 5.2x moves it there) and, with ``attention_k_eq_v``, their own
  KV-head count and no ``v_proj`` (the runtime then uses K as V): :func:`full_layer_head_dim`,
  :func:`full_layer_kv_heads`, ``head_count_kv`` as a per-layer array;
* "proportional" RoPE on full layers (only ``partial_rotary_factor`` of the pairs rotate, with exponents
  over the whole head dim) is expressed with a generated ``rope_freqs`` tensor: factor 1 for rotating
  pairs, 1e30 (frozen) for the rest — :func:`rope_freqs`;
* E2B/E4B: per-layer embeddings, KV-shared layers (llama.cpp hard-codes which layer they reuse:
  :func:`refuse_kv_reuse_mismatch`), double-wide MLPs on shared layers (``feed_forward_length`` array);
* MoE: stacked experts (gate and up fused), router scale and per-expert output scale, F32 router;
* norms are stored as they are (Gemma4RMSNorm multiplies by ``w``, no +1 shift);
* the vocabulary is the ``gemma4`` BPE tokenizer (``convert/vocab_bpe.py``).

Unified is the same decoder with its own config class (``Gemma4UnifiedTextConfig``): other defaults (window
1024, 262,144 positions), and no per-layer embeddings or experts at all — a config saved by transformers
5.23 omits ``hidden_size_per_layer_input`` / ``enable_moe_block`` / ``moe_intermediate_size`` (llama.cpp's
converter then stops with a KeyError), and transformers ignores them if present. Its vocabulary adds
``tokenizer.ggml.suppress_tokens`` from ``generation_config.json``: ids the runtime must never sample.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from convert.generations.base import (
    ArraySource, ConversionTable, Field, HParams, PlannedTensor, TensorRule, UnsupportedConfig, Vocab, bool_array, f32,
    i32_array, layer_rule, rope_parameters, top_rule, u32,
)
from convert.generations.common import (FULL, SLIDING, core_metadata, layer_types, refuse_common,
                                        text_only_notes)
from convert.generations.rope import given_rope
from convert.vocab_bpe import gemma4_vocab

ARCH = "gemma4"
FROZEN_ROPE_FACTOR = 1e30  # llama.cpp divides a pair's frequency by its factor: 1e30 stops it rotating

DEFAULTS = {  # transformers 5.23 Gemma4TextConfig()
    "vocab_size": 262144, "vocab_size_per_layer_input": 262144, "hidden_size": 2304,
    "intermediate_size": 9216, "num_hidden_layers": 30, "num_attention_heads": 8, "num_key_value_heads": 4,
    "head_dim": 256, "global_head_dim": 512, "num_global_key_value_heads": None,
    "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
    "sliding_window": 512, "layer_types": None, "final_logit_softcapping": None,
    "use_bidirectional_attention": None, "hidden_size_per_layer_input": 256, "attention_k_eq_v": False,
    "num_kv_shared_layers": 0, "enable_moe_block": False, "use_double_wide_mlp": False, "num_experts": None,
    "top_k_experts": None, "moe_intermediate_size": None, "tie_word_embeddings": True, "attention_bias": False,
}
DEFAULT_ROPE = {  # Gemma4TextConfig.__post_init__'s rope_parameters when the file has none
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}


def gemma4_layer_types(hp: HParams) -> list[str]:
    """``layer_types`` (default: every 6th layer full), with the last layer forced full as transformers does."""
    types = layer_types(hp, lambda i: (i + 1) % 6 == 0)
    types[-1] = FULL
    return types


def _full_layer_override(hp: HParams, key: str):
    """``per_layer_config[i][key]`` of the first full-attention layer that sets it (transformers ≥ 5.2x format)."""
    types = gemma4_layer_types(hp)
    for index, override in sorted((hp.get("per_layer_config") or {}).items(), key=lambda kv: int(kv[0])):
        if int(index) < len(types) and types[int(index)] == FULL and key in override:
            return override[key]
    return None


def full_layer_head_dim(hp: HParams) -> int:
    """As Gemma4TextConfig resolves it: a file with ``per_layer_config`` (transformers ≥ 5.2x) gives the full
    layers' overrides (``head_dim`` where none is given); an older file gives ``global_head_dim`` (default 512)."""
    if "per_layer_config" in hp:
        value = _full_layer_override(hp, "head_dim")
        return int(hp.require("head_dim") if value is None else value)
    return int(hp.require("global_head_dim"))


def full_layer_kv_heads(hp: HParams) -> int | None:
    """The full layers' KV-head count when it differs from the sliding layers' (31B, 26B-A4B). In the legacy
    format transformers applies ``num_global_key_value_heads`` only with ``attention_k_eq_v``."""
    if "per_layer_config" in hp:
        return _full_layer_override(hp, "num_key_value_heads")
    if hp.get("attention_k_eq_v"):
        return hp.get("num_global_key_value_heads")
    return None


def refuse_kv_reuse_mismatch(hp: HParams, types: Sequence[str]) -> None:
    """llama.cpp makes a KV-shared sliding layer read layer L−shared−2's cache and a shared full layer
    L−shared−1's; transformers reads the last non-shared layer of the same kind. They agree only when
    layer L−shared−1 is full and L−shared−2 sliding (true for E2B and E4B)."""
    shared = int(hp.get("num_kv_shared_layers") or 0)
    if not shared:
        return
    first_shared = len(types) - shared
    last, before = first_shared - 1, first_shared - 2
    if before < 0 or types[last] != FULL or types[before] != SLIDING:
        found = ", ".join(f"layer {i} is {types[i]}" for i in (before, last) if i >= 0)
        raise UnsupportedConfig(
            f"llama.cpp's gemma4 runtime makes KV-shared layers reuse layer {before} (sliding) and layer {last} "
            f"(full), so with num_kv_shared_layers={shared} layer {last} must be full_attention and layer "
            f"{before} sliding_attention, but {found or 'there are too few layers'}"
        )


def _refuse_unsupported(hp: HParams) -> tuple[dict, dict]:
    # "vision" (26B-A4B, 31B) makes only image tokens attend both ways; text stays causal, like llama.cpp
    bidirectional = hp.get("use_bidirectional_attention")
    if bidirectional not in (None, False, "vision"):
        raise UnsupportedConfig(f"llama.cpp's gemma4 runtime keeps text attention causal, but "
                                f"use_bidirectional_attention is {bidirectional!r}")
    refuse_common(ARCH, HParams({**hp, "use_bidirectional_attention": None}), "hidden_activation")
    full, swa = rope_parameters(hp)
    if full.get("rope_type") != "proportional":
        raise UnsupportedConfig(f"llama.cpp's gemma4 converter supports only proportional rope on full-attention "
                                f"layers, but the config asks for {full.get('rope_type')!r}")
    if swa.get("rope_type", "default") != "default" or float(swa.get("partial_rotary_factor", 1.0)) != 1.0:
        raise UnsupportedConfig("llama.cpp's gemma4 runtime rotates all dimensions of sliding layers with plain "
                                "rope, but the config scales or limits their rope")
    if hp.get("enable_moe_block") and not (hp.get("num_experts") and hp.get("top_k_experts")
                                           and hp.get("moe_intermediate_size")):
        raise UnsupportedConfig("enable_moe_block is set but num_experts, top_k_experts or "
                                "moe_intermediate_size is missing")
    return full, swa


def metadata(hp: HParams) -> list[Field]:
    fields = decoder_metadata(ARCH, hp)
    refuse_kv_reuse_mismatch(hp, gemma4_layer_types(hp))
    return fields


def decoder_metadata(arch: str, hp: HParams) -> list[Field]:
    """The Gemma 4 decoder's keys under ``arch`` (``gemma4``; the MTP drafter's ``gemma4-assistant`` shares them)."""
    full, swa = _refuse_unsupported(hp)
    types = gemma4_layer_types(hp)
    n_layer = len(types)
    head_dim_full, head_dim_swa = full_layer_head_dim(hp), int(hp.require("head_dim"))
    shared = int(hp.get("num_kv_shared_layers") or 0)

    fields = [f for f in core_metadata(arch, hp)
              if not f.key.endswith((".key_length", ".value_length", ".feed_forward_length", ".head_count_kv"))]
    n_ff = int(hp.require("intermediate_size"))
    if hp.get("use_double_wide_mlp"):
        fields.append(i32_array(f"{arch}.feed_forward_length",
                                [n_ff if i < n_layer - shared else 2 * n_ff for i in range(n_layer)]))
    else:
        fields.append(u32(f"{arch}.feed_forward_length", n_ff))
    kv_heads_swa, kv_heads_full = int(hp.require("num_key_value_heads")), full_layer_kv_heads(hp)
    if kv_heads_full is None:
        fields.append(u32(f"{arch}.attention.head_count_kv", kv_heads_swa))
    else:
        fields.append(i32_array(f"{arch}.attention.head_count_kv",
                                [kv_heads_swa if t == SLIDING else int(kv_heads_full) for t in types]))
    fields += [
        f32(f"{arch}.rope.freq_base", full.get("rope_theta", 1_000_000.0)),
        f32(f"{arch}.rope.freq_base_swa", swa.get("rope_theta", 10_000.0)),
        u32(f"{arch}.attention.key_length", head_dim_full),
        u32(f"{arch}.attention.value_length", head_dim_full),
        u32(f"{arch}.attention.key_length_swa", head_dim_swa),
        u32(f"{arch}.attention.value_length_swa", head_dim_swa),
        # full layers rotate all dims; rope_freqs freezes the pairs "proportional" rope leaves alone
        u32(f"{arch}.rope.dimension_count", head_dim_full),
        u32(f"{arch}.rope.dimension_count_swa", head_dim_swa),
        u32(f"{arch}.attention.sliding_window", hp.require("sliding_window")),
        bool_array(f"{arch}.attention.sliding_window_pattern", [t == SLIDING for t in types]),
        u32(f"{arch}.attention.shared_kv_layers", shared),
        u32(f"{arch}.embedding_length_per_layer_input", hp.get("hidden_size_per_layer_input") or 0),
    ]
    if hp.get("final_logit_softcapping"):
        fields.append(f32(f"{arch}.final_logit_softcapping", hp["final_logit_softcapping"]))
    if hp.get("enable_moe_block"):
        fields += [
            u32(f"{arch}.expert_count", hp["num_experts"]),
            u32(f"{arch}.expert_used_count", hp["top_k_experts"]),
            u32(f"{arch}.expert_feed_forward_length", hp["moe_intermediate_size"]),
        ]
    return fields


def rope_freqs(hp: HParams) -> np.ndarray:
    """Per-pair frequency factors for full layers: transformers' proportional rope rotates the first
    ``int(partial_rotary_factor · Dg / 2)`` pairs with exponents over the full head dim and leaves the others
    unrotated; llama.cpp rotates all Dg dims (same exponents), so freezing the other pairs matches it."""
    full, _ = rope_parameters(hp)
    head_dim = full_layer_head_dim(hp)
    n_rotating = int(head_dim * float(full.get("partial_rotary_factor", 1.0)) / 2)
    return np.array([1.0] * n_rotating + [FROZEN_ROPE_FACTOR] * (head_dim // 2 - n_rotating), dtype=np.float32)


def extra_tensors(hp: HParams, n_tokens: int, present: set[str]) -> list[PlannedTensor]:
    return [PlannedTensor("rope_freqs.weight", ArraySource(rope_freqs(hp)))]


_OPTIONAL = {"required": False}
# the tensors every Gemma 4 decoder has, the MTP drafter's (convert/generations/gemma4_assistant.py) included
EMBEDDING_AND_NORM: tuple[TensorRule, ...] = (
    top_rule("model.embed_tokens.weight", "token_embd.weight", match_vocab=True),
    top_rule("model.norm.weight", "output_norm.weight"),
)
QUERY_ATTENTION: tuple[TensorRule, ...] = (
    layer_rule("input_layernorm.weight", "attn_norm.weight"),
    layer_rule("self_attn.q_proj.weight", "attn_q.weight"),
    layer_rule("self_attn.q_norm.weight", "attn_q_norm.weight"),
    layer_rule("self_attn.o_proj.weight", "attn_output.weight"),
    layer_rule("post_attention_layernorm.weight", "post_attention_norm.weight"),
)
# dense FFN (on MoE layers: the always-on branch next to the experts) and the layer's output scale
DENSE_FFN: tuple[TensorRule, ...] = (
    layer_rule("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
    layer_rule("mlp.gate_proj.weight", "ffn_gate.weight"),
    layer_rule("mlp.up_proj.weight", "ffn_up.weight"),
    layer_rule("mlp.down_proj.weight", "ffn_down.weight"),
    layer_rule("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
    layer_rule("layer_scalar", "layer_output_scale.weight"),
)
TENSORS: tuple[TensorRule, ...] = (
    *EMBEDDING_AND_NORM,
    top_rule("lm_head.weight", "output.weight", match_vocab=True, **_OPTIONAL),  # untied exports only
    # per-layer embeddings (E2B/E4B)
    top_rule("model.embed_tokens_per_layer.weight", "per_layer_token_embd.weight", match_vocab=True, **_OPTIONAL),
    top_rule("model.per_layer_model_projection.weight", "per_layer_model_proj.weight", **_OPTIONAL),
    top_rule("model.per_layer_projection_norm.weight", "per_layer_proj_norm.weight", **_OPTIONAL),
    layer_rule("per_layer_input_gate.weight", "inp_gate.weight", **_OPTIONAL),
    layer_rule("per_layer_projection.weight", "proj.weight", **_OPTIONAL),
    layer_rule("post_per_layer_input_norm.weight", "post_norm.weight", **_OPTIONAL),
    # attention; K/K-norm are absent on KV-shared layers, V on full layers that reuse K as V
    *QUERY_ATTENTION,
    layer_rule("self_attn.k_proj.weight", "attn_k.weight", **_OPTIONAL),
    layer_rule("self_attn.v_proj.weight", "attn_v.weight", **_OPTIONAL),
    layer_rule("self_attn.k_norm.weight", "attn_k_norm.weight", **_OPTIONAL),
    *DENSE_FFN,
    # experts (26B-A4B): router in F32, gate and up stay fused as the runtime splits them
    layer_rule("router.proj.weight", "ffn_gate_inp.weight", keep_f32=True, **_OPTIONAL),
    layer_rule("router.scale", "ffn_gate_inp.scale", **_OPTIONAL),
    layer_rule("router.per_expert_scale", "ffn_down_exps.scale", **_OPTIONAL),
    layer_rule("experts.gate_up_proj", "ffn_gate_up_exps.weight", **_OPTIONAL),
    layer_rule("experts.down_proj", "ffn_down_exps.weight", **_OPTIONAL),
    layer_rule("pre_feedforward_layernorm_2.weight", "pre_ffw_norm_2.weight", **_OPTIONAL),
    layer_rule("post_feedforward_layernorm_1.weight", "post_ffw_norm_1.weight", **_OPTIONAL),
    layer_rule("post_feedforward_layernorm_2.weight", "post_ffw_norm_2.weight", **_OPTIONAL),
)


GEMMA4 = ConversionTable(
    name="gemma4",
    hf_architectures=("Gemma4ForCausalLM", "Gemma4ForConditionalGeneration"),
    gguf_arch=ARCH,
    defaults=DEFAULTS,
    metadata=metadata,
    tensors=TENSORS,
    vocab=gemma4_vocab,
    rope=given_rope(DEFAULT_ROPE),
    layer_types=gemma4_layer_types,
    extra_tensors=extra_tensors,
    notes=text_only_notes,
)


# transformers 5.23 Gemma4UnifiedTextConfig() where it differs from Gemma4TextConfig(); the Unified decoder has
# no per-layer embeddings and no experts whatever the config says (transformers never builds them)
UNIFIED_DEFAULTS = {**DEFAULTS, "sliding_window": 1024, "max_position_embeddings": 262144,
                    "use_bidirectional_attention": "vision"}
UNIFIED_FIXED = {"hidden_size_per_layer_input": 0, "enable_moe_block": False}


def suppress_tokens(directory: Path) -> list[int] | None:
    """``generation_config.json``'s ``suppress_tokens`` (ids transformers' generate never samples), if any."""
    path = directory / "generation_config.json"
    if not path.is_file():
        return None
    try:
        ids = json.loads(path.read_text(encoding="utf-8")).get("suppress_tokens")
    except (ValueError, AttributeError):
        raise UnsupportedConfig("generation_config.json is not a valid JSON object") from None
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise UnsupportedConfig("generation_config.json's suppress_tokens must be a list of token ids")
    return ids


def unified_vocab(checkpoint: Any, hp: HParams) -> Vocab:
    vocab = gemma4_vocab(checkpoint, hp)
    ids = suppress_tokens(Path(checkpoint.directory))
    if ids is not None:
        vocab.fields.append(i32_array("tokenizer.ggml.suppress_tokens", ids))
    return vocab


GEMMA4_UNIFIED = replace(
    GEMMA4,
    name="gemma4-unified",
    hf_architectures=("Gemma4UnifiedForConditionalGeneration", "Gemma4UnifiedForCausalLM"),
    defaults=UNIFIED_DEFAULTS,
    fixed=UNIFIED_FIXED,
    nullable=frozenset({"use_bidirectional_attention"}),  # default "vision" here; null = causal, as in Gemma 4
    vocab=unified_vocab,
)
