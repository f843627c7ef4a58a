"""Gemma 3 (``Gemma3ForCausalLM``: 270M/1B/text exports; the text part of
``Gemma3ForConditionalGeneration``: 4B/12B/27B) → llama.cpp arch ``gemma3`` (docs/converter-spec.md §5)."""
from __future__ import annotations

from collections.abc import Sequence

from convert.generations.base import (
    ConversionTable, Field, HParams, TensorRule, UnsupportedConfig, f32, rope_parameters, string, top_rule, u32,
)
from convert.generations.common import (
    FULL, core_metadata, gemma_tensor_rules, layer_types, refuse_common, refuse_query_scale,
    swa_pattern_if_not_periodic,
)
from convert.generations.rope import layered_rope
from convert.vocab import sentencepiece_vocab

ARCH = "gemma3"
BIG_LAYER_COUNT = 62  # llama.cpp treats a 62-layer gemma3 as the 27B and changes its query scale
RUNTIME_SWA_PERIOD = 6

DEFAULTS = {  # transformers 5.23 Gemma3TextConfig()
    "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "query_pre_attn_scalar": 256,
    "sliding_window": 4096, "sliding_window_pattern": 6, "final_logit_softcapping": None,
    "attn_logit_softcapping": None, "rope_theta": 1_000_000.0, "rope_local_base_freq": 10_000.0,
    "tie_word_embeddings": True, "attention_bias": False, "use_bidirectional_attention": False,
}


def gemma3_layer_types(hp: HParams) -> list[str]:
    """``layer_types``, else every ``sliding_window_pattern``-th layer full. Gemma3TextConfig reads only that
    key: ``_sliding_window_pattern`` (written by transformers 4.5x beside ``layer_types``) is not used for it."""
    return layer_types(hp, lambda i: (i + 1) % int(hp.require("sliding_window_pattern")) == 0)


def metadata(hp: HParams) -> list[Field]:
    refuse_common(ARCH, hp, "hidden_activation")
    refuse_query_scale(ARCH, hp, BIG_LAYER_COUNT)
    return gemma3_layout_metadata(ARCH, hp)


def gemma3_layout_metadata(arch: str, hp: HParams) -> list[Field]:
    """The keys of a Gemma 3 decoder stack under llama.cpp architecture `arch` (``gemma3`` and
    ``gemma-embedding`` read them alike), refusing rope and softcapping variants neither runs."""
    if hp.get("attn_logit_softcapping") is not None:
        raise UnsupportedConfig(f"llama.cpp's {arch} runtime has no attention logit softcapping, "
                                "but the config sets it")
    full, swa = rope_parameters(hp)
    rope_type = full.get("rope_type", "default")
    if rope_type not in ("default", "linear"):
        raise UnsupportedConfig(f"llama.cpp's {arch} runtime supports default or linear rope, not {rope_type!r}")
    if swa.get("rope_type", "default") != "default":
        raise UnsupportedConfig(f"llama.cpp's {arch} runtime applies no rope scaling to sliding layers")

    types = gemma3_layer_types(hp)
    fields = core_metadata(arch, hp)
    if rope_type == "linear" and full.get("factor") is not None:
        fields += [string(f"{arch}.rope.scaling.type", "linear"), f32(f"{arch}.rope.scaling.factor", full["factor"])]
    fields.append(f32(f"{arch}.rope.freq_base", full.get("rope_theta", 1_000_000.0)))
    if swa.get("rope_theta") is not None:
        fields.append(f32(f"{arch}.rope.freq_base_swa", swa["rope_theta"]))
    if hp.get("final_logit_softcapping"):
        fields.append(f32(f"{arch}.final_logit_softcapping", hp["final_logit_softcapping"]))
    if any(t != FULL for t in types):
        fields.append(u32(f"{arch}.attention.sliding_window", hp.require("sliding_window")))
        fields += swa_pattern_if_not_periodic(arch, types, RUNTIME_SWA_PERIOD)
    return fields


TENSORS: tuple[TensorRule, ...] = gemma_tensor_rules(post_norms=True, qk_norms=True) + (
    # present only in untied exports; the runtime falls back to token_embd when it is absent
    top_rule("lm_head.weight", "output.weight", match_vocab=True, required=False),
)


def notes(hp: HParams, dropped: Sequence[str]) -> list[str]:
    if not dropped:
        return []
    return [f"skipped the vision tower and projector ({len(dropped)} tensors): this GGUF is text-only"]


GEMMA3 = ConversionTable(
    name="gemma3",
    hf_architectures=("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
    gguf_arch=ARCH,
    defaults=DEFAULTS,
    metadata=metadata,
    tensors=TENSORS,
    vocab=sentencepiece_vocab,
    rope=layered_rope,
    layer_types=gemma3_layer_types,
    notes=notes,
    nullable=frozenset({"sliding_window", "use_bidirectional_attention"}),
)
