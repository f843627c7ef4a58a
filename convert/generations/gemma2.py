"""Gemma 2 (``Gemma2ForCausalLM``) → llama.cpp arch ``gemma2`` (docs/converter-spec.md §4)."""
from __future__ import annotations

from convert.generations.base import (
    ConversionTable, Field, HParams, TensorRule, UnsupportedConfig, f32, top_rule, u32,
)
from convert.generations.common import (
    core_metadata, gemma_tensor_rules, layer_types, plain_rope_theta, refuse_common, refuse_query_scale,
    refuse_untied_output, swa_pattern_if_not_periodic,
)
from convert.generations.rope import shared_rope
from convert.vocab import sentencepiece_vocab

ARCH = "gemma2"
RUNTIME_ROPE_THETA = 10000.0
BIG_LAYER_COUNT = 46  # llama.cpp treats a 46-layer gemma2 as the 27B and changes its query scale

DEFAULTS = {  # transformers 5.23 Gemma2Config()
    "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "query_pre_attn_scalar": 256, "sliding_window": 4096, "final_logit_softcapping": 30.0,
    "attn_logit_softcapping": 50.0, "tie_word_embeddings": True, "attention_bias": False,
}


def gemma2_layer_types(hp: HParams) -> list[str]:  # transformers: layer i slides iff (i + 1) % 2 != 0
    return layer_types(hp, lambda i: (i + 1) % 2 == 0)


def metadata(hp: HParams) -> list[Field]:
    refuse_common(ARCH, hp, "hidden_activation")
    refuse_untied_output(ARCH, hp)
    refuse_query_scale(ARCH, hp, BIG_LAYER_COUNT)
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if not hp.get(key):
            raise UnsupportedConfig(f"llama.cpp's gemma2 runtime always applies {key}, but the config disables it")
    theta = plain_rope_theta(ARCH, hp)
    fields = core_metadata(ARCH, hp) + [
        f32(f"{ARCH}.attn_logit_softcapping", hp["attn_logit_softcapping"]),
        f32(f"{ARCH}.final_logit_softcapping", hp["final_logit_softcapping"]),
        u32(f"{ARCH}.attention.sliding_window", hp.require("sliding_window")),
    ]
    if theta != RUNTIME_ROPE_THETA:
        fields.append(f32(f"{ARCH}.rope.freq_base", theta))
    fields += swa_pattern_if_not_periodic(ARCH, gemma2_layer_types(hp), period=2)
    return fields


TENSORS: tuple[TensorRule, ...] = gemma_tensor_rules(post_norms=True, qk_norms=False) + (
    top_rule("lm_head.weight", None, required=False),  # runtime always ties the output to token_embd
)

GEMMA2 = ConversionTable(
    name="gemma2",
    hf_architectures=("Gemma2ForCausalLM",),
    gguf_arch=ARCH,
    defaults=DEFAULTS,
    metadata=metadata,
    tensors=TENSORS,
    vocab=sentencepiece_vocab,
    rope=shared_rope,
    layer_types=gemma2_layer_types,
    nullable=frozenset({"sliding_window", "final_logit_softcapping", "attn_logit_softcapping"}),
)
