"""Gemma 1 (``GemmaForCausalLM``) → llama.cpp arch ``gemma`` (docs/converter-spec.md §3)."""
from __future__ import annotations

from convert.generations.base import ConversionTable, Field, HParams, LegacyValue, TensorRule, f32, top_rule
from convert.generations.common import (
    core_metadata, gemma_tensor_rules, plain_rope_theta, refuse_common, refuse_untied_output,
)
from convert.generations.rope import shared_rope
from convert.vocab import sentencepiece_vocab_with_eot

ARCH = "gemma"
RUNTIME_ROPE_THETA = 10000.0  # llama.cpp's default rope.freq_base; the reference writes none for gemma

DEFAULTS = {  # transformers 5.23 GemmaConfig()
    "vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576, "num_hidden_layers": 28,
    "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
    "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "tie_word_embeddings": True, "attention_bias": False,
}

# The official Gemma 1 / 1.1 config files say "gelu"; GemmaConfig reads it as the tanh approximation the
# models were trained with (and warns). Older files also carry a `hidden_activation` key: GemmaConfig
# ignores it (the MLP reads hidden_act only), and so does this table.
LEGACY_GELU = LegacyValue(
    "hidden_act", "gelu", "gelu_pytorch_tanh",
    'config.json has hidden_act "gelu", the legacy value of the official Gemma 1 releases: '
    'converted with the tanh-approximated GELU ("gelu_pytorch_tanh") these models use, as transformers does',
)


def metadata(hp: HParams) -> list[Field]:
    refuse_common(ARCH, hp, "hidden_act")
    refuse_untied_output(ARCH, hp)
    theta = plain_rope_theta(ARCH, hp)
    fields = core_metadata(ARCH, hp)
    if theta != RUNTIME_ROPE_THETA:
        fields.append(f32(f"{ARCH}.rope.freq_base", theta))
    return fields


TENSORS: tuple[TensorRule, ...] = gemma_tensor_rules(post_norms=False, qk_norms=False) + (
    # the runtime has no output tensor: it always multiplies by token_embd (tied)
    top_rule("lm_head.weight", None, required=False),
)

GEMMA1 = ConversionTable(
    name="gemma1",
    hf_architectures=("GemmaForCausalLM",),
    gguf_arch=ARCH,
    defaults=DEFAULTS,
    metadata=metadata,
    tensors=TENSORS,
    vocab=sentencepiece_vocab_with_eot,
    rope=shared_rope,
    legacy_values=(LEGACY_GELU,),
)
