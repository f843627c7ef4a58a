"""Pieces shared by several Gemma generation tables (each generation module stays one readable table)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from convert.generations.base import (
    Field,
    HParams,
    TensorRule,
    UnsupportedConfig,
    bool_array,
    f32,
    layer_rule,
    plus_one,
    rope_parameters,
    top_rule,
    u32,
)
from convert.generations.rope import FULL, SLIDING


def core_metadata(arch: str, hp: HParams) -> list[Field]:
    """The keys every Gemma text GGUF carries (llama.cpp ``conversion/gemma.py`` GemmaModel)."""
    head_dim = int(hp.require("head_dim"))
    n_head = int(hp.require("num_attention_heads"))
    n_head_kv = hp.require("num_key_value_heads")
    return [
        u32(f"{arch}.context_length", hp.require("max_position_embeddings")),
        u32(f"{arch}.embedding_length", hp.require("hidden_size")),
        u32(f"{arch}.block_count", hp.require("num_hidden_layers")),
        u32(f"{arch}.feed_forward_length", hp.require("intermediate_size")),
        u32(f"{arch}.attention.head_count", n_head),
        u32(f"{arch}.attention.head_count_kv", n_head_kv),
        f32(f"{arch}.attention.layer_norm_rms_epsilon", hp.require("rms_norm_eps")),
        u32(f"{arch}.attention.key_length", head_dim),
        u32(f"{arch}.attention.value_length", head_dim),
    ]


def refuse_common(arch: str, hp: HParams, activation_key: str) -> None:
    """Refusals that hold for every Gemma 1-3 runtime in llama.cpp."""
    activation = hp.require(activation_key)
    if activation not in ("gelu_pytorch_tanh", "gelu_tanh", "gelu_new"):
        raise UnsupportedConfig(
            f"llama.cpp's {arch} runtime hard-codes the tanh-approximated GELU, "
            f"but {activation_key} is {activation!r}"
        )
    if hp.get("use_bidirectional_attention"):
        raise UnsupportedConfig(
            f"llama.cpp's {arch} runtime is causal, but use_bidirectional_attention is true"
        )
    if hp.get("attention_bias"):
        raise UnsupportedConfig(
            f"llama.cpp's {arch} runtime has no attention biases, but attention_bias is true"
        )


def refuse_untied_output(arch: str, hp: HParams) -> None:
    if hp.get("tie_word_embeddings") is False:
        raise UnsupportedConfig(
            f"llama.cpp's {arch} runtime always reuses token_embd as the output layer, "
            "but tie_word_embeddings is false"
        )


def plain_rope_theta(arch: str, hp: HParams) -> float:
    """The one rope theta of llama.cpp's gemma/gemma2 runtimes, which rotate every layer with plain rope
    (``rope.freq_base``); a config that scales rope or gives the two attention kinds different thetas is refused."""
    full, swa = rope_parameters(hp)
    for params in (full, swa):
        if params.get("rope_type", "default") != "default":
            raise UnsupportedConfig(f"llama.cpp's {arch} runtime has no {params['rope_type']!r} rope scaling")
    theta = float(full["rope_theta"])
    if float(swa.get("rope_theta", theta)) != theta:
        raise UnsupportedConfig(f"llama.cpp's {arch} runtime uses one rope theta for all layers")
    return theta


def refuse_query_scale(arch: str, hp: HParams, big_layer_count: int | None) -> None:
    """llama.cpp scales Q by 1/sqrt(H/Hq) for the 27B layer count (gemma2/gemma3; None: no such count)
    and by 1/sqrt(head_dim) otherwise; transformers uses query_pre_attn_scalar**-0.5. No GGUF key can
    change the runtime's choice."""
    n_layer = int(hp["num_hidden_layers"])
    hidden, n_head = int(hp["hidden_size"]), int(hp["num_attention_heads"])
    if big_layer_count is None:
        expected, rule = int(hp["head_dim"]), "head_dim"
    elif n_layer == big_layer_count:
        expected, rule = hidden // n_head, f"hidden_size/num_attention_heads for {n_layer} layers"
    else:
        expected, rule = int(hp["head_dim"]), f"head_dim unless the model has {big_layer_count} layers"
    scalar = hp.get("query_pre_attn_scalar")
    if scalar is None or float(scalar) != float(expected):
        raise UnsupportedConfig(
            f"llama.cpp's {arch} runtime hard-codes the query scale to 1/sqrt({rule}) = 1/sqrt({expected}), "
            f"but query_pre_attn_scalar is {scalar}"
        )


def layer_types(hp: Mapping[str, Any], default_is_full: Any) -> list[str]:
    """Per-layer attention kind: ``layer_types`` when the config has it, else the generation's rule."""
    n_layer = int(hp["num_hidden_layers"])
    types = hp.get("layer_types")
    if types is None:
        return [FULL if default_is_full(i) else SLIDING for i in range(n_layer)]
    if len(types) != n_layer or any(t not in (SLIDING, FULL) for t in types):
        raise UnsupportedConfig(f"layer_types must list {n_layer} of {SLIDING!r}/{FULL!r}")
    return list(types)


def swa_pattern_if_not_periodic(arch: str, types: Sequence[str], period: int) -> list[Field]:
    """The runtime assumes layer i slides iff i % period < period - 1 unless the GGUF carries a bool
    array; write the array only when the checkpoint deviates, so standard files match the reference."""
    runtime = [i % period < period - 1 for i in range(len(types))]
    actual = [t == SLIDING for t in types]
    if actual == runtime:
        return []
    return [bool_array(f"{arch}.attention.sliding_window_pattern", actual)]


def gemma_tensor_rules(post_norms: bool, qk_norms: bool) -> tuple[TensorRule, ...]:
    """HF → GGUF names for the Gemma 1/2/3 decoder. Every ``*norm.weight`` gets +1 (GemmaRMSNorm)."""
    rules = [
        top_rule("model.embed_tokens.weight", "token_embd.weight", match_vocab=True),
        top_rule("model.norm.weight", "output_norm.weight", transform=plus_one),
        layer_rule("input_layernorm.weight", "attn_norm.weight", transform=plus_one),
        layer_rule("self_attn.q_proj.weight", "attn_q.weight"),
        layer_rule("self_attn.k_proj.weight", "attn_k.weight"),
        layer_rule("self_attn.v_proj.weight", "attn_v.weight"),
        layer_rule("self_attn.o_proj.weight", "attn_output.weight"),
        layer_rule("mlp.gate_proj.weight", "ffn_gate.weight"),
        layer_rule("mlp.up_proj.weight", "ffn_up.weight"),
        layer_rule("mlp.down_proj.weight", "ffn_down.weight"),
    ]
    if post_norms:
        rules += [
            layer_rule("post_attention_layernorm.weight", "post_attention_norm.weight", transform=plus_one),
            layer_rule("pre_feedforward_layernorm.weight", "ffn_norm.weight", transform=plus_one),
            layer_rule("post_feedforward_layernorm.weight", "post_ffw_norm.weight", transform=plus_one),
        ]
    else:
        rules.append(layer_rule("post_attention_layernorm.weight", "ffn_norm.weight", transform=plus_one))
    if qk_norms:
        rules += [
            layer_rule("self_attn.q_norm.weight", "attn_q_norm.weight", transform=plus_one),
            layer_rule("self_attn.k_norm.weight", "attn_k_norm.weight", transform=plus_one),
        ]
    return tuple(rules)


def text_only_notes(hp, dropped) -> list[str]:
    """The note for multimodal checkpoints whose vision/audio towers this text GGUF leaves out."""
    if not dropped:
        return []
    return [f"skipped the vision/audio towers ({len(dropped)} tensors): this GGUF is text-only"]
