"""Gemma 3n (``Gemma3nForCausalLM``; the text part of ``Gemma3nForConditionalGeneration``) → llama.cpp arch
``gemma3n`` (docs/converter-spec.md §6).

Gemma 3n adds altup (4 parallel residual streams; the 3 extra projections in and out are stacked into one
tensor each), laurel (a low-rank residual branch), per-layer inputs (a second embedding table with 256
values per layer and token, zero-padded to the token count), KV sharing across the last layers and
Gaussian activation sparsity on the first 10 FFNs. Norms are stored as they are (no +1 shift).

llama.cpp's gemma3n runtime reads few of its GGUF keys and hard-codes the published E2B/E4B shapes; a
config that differs would convert and load but compute other logits, so :func:`refuse_runtime_mismatch`
refuses it, naming the assumption. transformers 5.x checkpoints omit ``k_proj``/``v_proj``/``k_norm`` of
KV-shared layers, which the runtime nevertheless requires (it never reads them): :func:`kv_placeholders`
writes zero tensors there — llama.cpp's own converter writes nothing and its GGUF fails to load.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from convert.generations.base import (
    ConversionTable, Field, HParams, PlannedTensor, TensorRule, UnsupportedConfig, ZerosSource, bool_array, f32,
    f32_array, i32_array, layer_rule, rope_parameters, top_rule, u32,
)
from convert.generations.common import (FULL, SLIDING, core_metadata, layer_types, refuse_common,
                                        text_only_notes)
from convert.generations.rope import layered_rope
from convert.vocab import sentencepiece_vocab

ARCH = "gemma3n"

DEFAULTS = {  # transformers 5.23 Gemma3nTextConfig()
    "vocab_size": 262400, "vocab_size_per_layer_input": 262144, "hidden_size": 2048,
    "intermediate_size": 16384, "num_hidden_layers": 35, "num_attention_heads": 8, "num_key_value_heads": 2,
    "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6, "sliding_window": 512, "layer_types": None, "final_logit_softcapping": 30.0,
    "hidden_size_per_layer_input": 256, "altup_active_idx": 0, "altup_coef_clip": 120.0,
    "altup_correct_scale": True, "altup_num_inputs": 4, "num_kv_shared_layers": 15, "laurel_rank": 64,
    "activation_sparsity_pattern": None, "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
    "tie_word_embeddings": True, "attention_bias": False,
}

# What llama.cpp's gemma3n runtime hard-codes (src/models/gemma3n.cpp, src/llama-hparams.h, models.h).
RUNTIME_FIXED = {  # config key → the only value the runtime computes with
    "altup_num_inputs": 4, "altup_active_idx": 0, "laurel_rank": 64, "hidden_size_per_layer_input": 256,
    "final_logit_softcapping": 30.0, "altup_correct_scale": True,
}
RUNTIME_KV_LAYERS = 20  # layers 0..19 own a KV cache; later layers reuse layer 18 (sliding) or 19 (full)
RUNTIME_SPARSE_LAYERS = 10  # layers 0..9 apply Gaussian top-k sparsity with Φ⁻¹(0.95), others none
RUNTIME_SPARSITY = 0.95


def gemma3n_layer_types(hp: HParams) -> list[str]:
    return layer_types(hp, lambda i: (i + 1) % 5 == 0)


def sparsity_pattern(hp: HParams) -> list[float]:
    """``activation_sparsity_pattern``, or transformers' default: 0.95 on the first 10 of > 10 layers."""
    n_layer = int(hp["num_hidden_layers"])
    pattern = hp.get("activation_sparsity_pattern")
    if pattern is None:
        n_sparse = RUNTIME_SPARSE_LAYERS if n_layer > RUNTIME_SPARSE_LAYERS else 0
        return [RUNTIME_SPARSITY] * n_sparse + [0.0] * (n_layer - n_sparse)
    if not isinstance(pattern, list) or len(pattern) != n_layer:  # transformers refuses a single number too
        raise UnsupportedConfig(f"activation_sparsity_pattern must list {n_layer} values, it is {pattern!r}")
    return [float(p) for p in pattern]


def sparsity_scale(p: float) -> float:
    """The Gaussian cut-off multiplier Φ⁻¹(p) without torch, bit-identical (as float32) to the reference's
    ``torch.distributions.Normal(0, 1).icdf(float32(p))``: torch evaluates √2·erfinv(2p − 1) in float32,
    so the same float32 roundings are applied around an exact erfinv (via ``statistics.NormalDist``).
    −inf for p = 0 (NormalDist raises there; torch gives −inf), +inf for p = 1."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    two_p_minus_1 = float(np.float32(2) * np.float32(p) - np.float32(1))
    erfinv = np.float32(NormalDist().inv_cdf((two_p_minus_1 + 1) / 2) / math.sqrt(2))
    return float(erfinv * np.float32(math.sqrt(2)))


def refuse_runtime_mismatch(hp: HParams, types: Sequence[str]) -> None:
    """Refuse configs whose logits llama.cpp's gemma3n runtime would compute differently (module docstring)."""
    for key, value in RUNTIME_FIXED.items():
        if hp.get(key) != value:
            raise UnsupportedConfig(f"llama.cpp's gemma3n runtime hard-codes {key} = {value}, "
                                    f"but the config has {hp.get(key)!r}")
    n_layer, shared = len(types), int(hp.get("num_kv_shared_layers") or 0)
    if shared == 0 and n_layer > RUNTIME_KV_LAYERS or shared and n_layer - shared != RUNTIME_KV_LAYERS:
        raise UnsupportedConfig(
            f"llama.cpp's gemma3n runtime hard-codes {RUNTIME_KV_LAYERS} layers with their own KV cache and makes "
            f"all later layers share it, but the config has {n_layer} layers with num_kv_shared_layers={shared}"
        )
    last, before = RUNTIME_KV_LAYERS - 1, RUNTIME_KV_LAYERS - 2
    if shared and (types[last] != FULL or types[before] != SLIDING):
        raise UnsupportedConfig(
            f"llama.cpp's gemma3n runtime makes KV-shared layers reuse layer {before} (sliding) and layer {last} "
            f"(full), but layer {before} is {types[before]} and layer {last} is {types[last]}"
        )
    expected = [RUNTIME_SPARSITY if i < RUNTIME_SPARSE_LAYERS else 0.0 for i in range(n_layer)]
    if sparsity_pattern(hp) != expected:
        raise UnsupportedConfig(
            f"llama.cpp's gemma3n runtime hard-codes activation sparsity {RUNTIME_SPARSITY} on layers "
            f"0-{RUNTIME_SPARSE_LAYERS - 1} and none after, but activation_sparsity_pattern is {sparsity_pattern(hp)}"
        )
    full, swa = rope_parameters(hp)
    if full.get("rope_type", "default") != "default" or swa.get("rope_type", "default") != "default":
        raise UnsupportedConfig("llama.cpp's gemma3n runtime applies plain rope, but the config scales it")


def metadata(hp: HParams) -> list[Field]:
    refuse_common(ARCH, hp, "hidden_activation")
    types = gemma3n_layer_types(hp)
    refuse_runtime_mismatch(hp, types)
    full, swa = rope_parameters(hp)
    n_ff = hp.require("intermediate_size")
    # core_metadata writes a scalar FFN width; 3n configs may list one per layer (written as an array)
    scalar_ffn = HParams({**hp, "intermediate_size": n_ff[0] if isinstance(n_ff, list) else n_ff})
    fields = [f for f in core_metadata(ARCH, scalar_ffn) if not f.key.endswith(".feed_forward_length")]
    if isinstance(n_ff, list):
        fields.append(i32_array(f"{ARCH}.feed_forward_length", n_ff))
    else:
        fields.append(u32(f"{ARCH}.feed_forward_length", n_ff))
    fields += [
        f32(f"{ARCH}.rope.freq_base", full.get("rope_theta", 1_000_000.0)),
        f32(f"{ARCH}.rope.freq_base_swa", swa.get("rope_theta", 10_000.0)),
        f32(f"{ARCH}.final_logit_softcapping", hp["final_logit_softcapping"]),
        u32(f"{ARCH}.attention.sliding_window", hp.require("sliding_window")),
        u32(f"{ARCH}.altup.active_idx", hp["altup_active_idx"]),
        u32(f"{ARCH}.altup.num_inputs", hp["altup_num_inputs"]),
        u32(f"{ARCH}.embedding_length_per_layer_input", hp["hidden_size_per_layer_input"]),
        u32(f"{ARCH}.attention.shared_kv_layers", hp.get("num_kv_shared_layers") or 0),
        f32_array(f"{ARCH}.activation_sparsity_scale", [sparsity_scale(p) for p in sparsity_pattern(hp)]),
        bool_array(f"{ARCH}.attention.sliding_window_pattern", [t == SLIDING for t in types]),
    ]
    return fields


def kv_placeholders(hp: HParams, n_tokens: int, present: set[str]) -> list[PlannedTensor]:
    """Zero K/V/K-norm tensors for layers whose checkpoint has none (KV-shared layers saved by transformers
    5.x): the gemma3n loader requires them for every layer, though shared layers never read them."""
    hidden, head_dim = int(hp["hidden_size"]), int(hp["head_dim"])
    kv_width = int(hp["num_key_value_heads"]) * head_dim
    shapes = {"attn_k.weight": (kv_width, hidden), "attn_v.weight": (kv_width, hidden), "attn_k_norm.weight": (head_dim,)}
    return [
        PlannedTensor(f"blk.{i}.{suffix}", ZerosSource(shape))
        for i in range(int(hp["num_hidden_layers"]))
        for suffix, shape in shapes.items()
        if f"blk.{i}.{suffix}" not in present
    ]


_OPTIONAL = {"required": False}
TENSORS: tuple[TensorRule, ...] = (
    top_rule("model.embed_tokens.weight", "token_embd.weight", match_vocab=True),
    top_rule("model.embed_tokens_per_layer.weight", "per_layer_token_embd.weight", match_vocab=True),
    top_rule("model.per_layer_model_projection.weight", "per_layer_model_proj.weight"),
    top_rule("model.per_layer_projection_norm.weight", "per_layer_proj_norm.weight"),
    TensorRule(hf=r"model\.altup_projections\.(?P<xid>\d+)\.weight", gguf="altup_proj.weight", stack=3),
    TensorRule(hf=r"model\.altup_unembed_projections\.(?P<xid>\d+)\.weight", gguf="altup_unembd_proj.weight",
               stack=3),
    top_rule("model.norm.weight", "output_norm.weight"),
    top_rule("lm_head.weight", "output.weight", match_vocab=True, **_OPTIONAL),  # untied exports only
    layer_rule("input_layernorm.weight", "attn_norm.weight"),
    layer_rule("self_attn.q_proj.weight", "attn_q.weight"),
    # absent on KV-shared layers of transformers 5.x checkpoints: kv_placeholders fills them in
    layer_rule("self_attn.k_proj.weight", "attn_k.weight", **_OPTIONAL),
    layer_rule("self_attn.v_proj.weight", "attn_v.weight", **_OPTIONAL),
    layer_rule("self_attn.k_norm.weight", "attn_k_norm.weight", **_OPTIONAL),
    layer_rule("self_attn.q_norm.weight", "attn_q_norm.weight"),
    layer_rule("self_attn.o_proj.weight", "attn_output.weight"),
    layer_rule("post_attention_layernorm.weight", "post_attention_norm.weight"),
    layer_rule("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
    layer_rule("mlp.gate_proj.weight", "ffn_gate.weight"),
    layer_rule("mlp.up_proj.weight", "ffn_up.weight"),
    layer_rule("mlp.down_proj.weight", "ffn_down.weight"),
    layer_rule("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
    layer_rule("per_layer_input_gate.weight", "inp_gate.weight"),
    layer_rule("per_layer_projection.weight", "proj.weight"),
    layer_rule("post_per_layer_input_norm.weight", "post_norm.weight"),
    layer_rule("altup.correction_coefs.weight", "altup_correct_coef.weight", keep_f32=True),
    layer_rule("altup.prediction_coefs.weight", "altup_predict_coef.weight", keep_f32=True),
    layer_rule("altup.correct_output_scale", "altup_correct_scale.weight"),
    layer_rule("altup.modality_router.weight", "altup_router.weight"),
    layer_rule("altup.router_norm.weight", "altup_router_norm.weight"),
    layer_rule("laurel.linear_left.weight", "laurel_l.weight"),
    layer_rule("laurel.linear_right.weight", "laurel_r.weight"),
    layer_rule("laurel.post_laurel_norm.weight", "laurel_post_norm.weight"),
)


GEMMA3N = ConversionTable(
    name="gemma3n",
    hf_architectures=("Gemma3nForCausalLM", "Gemma3nForConditionalGeneration"),
    gguf_arch=ARCH,
    defaults=DEFAULTS,
    metadata=metadata,
    tensors=TENSORS,
    vocab=sentencepiece_vocab,
    rope=layered_rope,
    layer_types=gemma3n_layer_types,
    extra_tensors=kv_placeholders,
    notes=text_only_notes,
)
