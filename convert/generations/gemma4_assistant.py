"""Gemma 4 MTP drafters (``Gemma4AssistantForCausalLM``, ``Gemma4UnifiedAssistantForCausalLM``; transformers
``gemma4_assistant`` / ``gemma4_unified_assistant``) → llama.cpp arch ``gemma4-assistant``
(docs/converter-spec.md §7.1).

A drafter is a small Gemma 4 decoder (4 layers in the published ones) that never runs alone: each step it
takes the target's embedding of the last token concatenated with the target's last hidden state
(``pre_projection``: 2·target hidden → drafter hidden), attends with queries only over the **target's** KV
cache (every layer is KV-shared: no K/V projections), and returns logits over its own tied embedding table
plus the next hidden state for the target's width (``post_projection``). So the GGUF carries:

* the Gemma 4 decoder keys (:func:`~convert.generations.gemma4.decoder_metadata`) with
  ``shared_kv_layers`` = the layer count, as transformers resolves it (0 or absent → all layers);
* ``embedding_length_out`` = ``backbone_hidden_size``, the target's hidden size — required: llama.cpp sizes
  ``nextn.post_projection`` from it and refuses a drafter whose value equals its own hidden size;
* ``nextn_predict_layers`` = the layer count (llama.cpp's MTP context runs that many layers);
* ``rope_freqs`` for the full-attention layer, as for Gemma 4.

Refused as transformers refuses them (``Gemma4AssistantConfig.validate_architecture``): per-layer embeddings,
experts, double-wide MLPs, a KV-shared layer count other than all layers. Refused for llama.cpp: an untied
output head (its drafter always reads logits off ``token_embd``).

``use_ordered_embeddings`` drafters (E2B/E4B) also ship ``masked_embedding.*``: centroids that restrict the
logits to the top clusters' tokens. llama.cpp's runtime computes logits over the whole vocabulary and its
converter leaves these tensors out; so does this one, with a note. The embedding rows are in the target's
token order either way, so a full-vocabulary argmax is the masked one whenever that token lies in a selected
cluster, and a draft is only ever a proposal the target verifies.

The Unified drafter's decoder is the Unified text config (other defaults, no per-layer embeddings or
experts); llama.cpp's converter writes no ``suppress_tokens`` for either drafter, and neither does this one
(the target's GGUF carries them; the drafter's sampler is never used).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from convert.generations.base import (
    Field, HParams, TensorRule, UnsupportedConfig, Vocab, top_rule, u32,
)
from convert.generations.common import refuse_untied_output
from convert.generations.gemma4 import (
    DEFAULTS, DENSE_FFN, EMBEDDING_AND_NORM, GEMMA4, QUERY_ATTENTION, UNIFIED_DEFAULTS, UNIFIED_FIXED,
    decoder_metadata,
)
from convert.vocab import TokenizerError
from convert.vocab_bpe import gemma4_vocab

ARCH = "gemma4-assistant"

# transformers 5.23 Gemma4AssistantConfig() top-level fields; backbone_hidden_size has a default there (1536,
# E2B's) but is left out on purpose: a drafter converted for a guessed target is refused by llama.cpp at best
ASSISTANT_DEFAULTS = {"use_ordered_embeddings": False, "num_centroids": 2048, "centroid_intermediate_top_k": 32}
# transformers' drafter refuses these (validate_architecture); Unified fixes them (no such modules at all)
_NOT_IN_A_DRAFTER = {"hidden_size_per_layer_input": 0, "vocab_size_per_layer_input": 0, "enable_moe_block": False,
                     "use_double_wide_mlp": False}


def shared_layers(hp: HParams) -> int:
    """``num_kv_shared_layers`` as Gemma4AssistantConfig resolves it: 0 / absent means every layer."""
    return int(hp.get("num_kv_shared_layers") or hp.require("num_hidden_layers"))


def refuse_unlike_a_drafter(hp: HParams) -> None:
    for key, value in _NOT_IN_A_DRAFTER.items():
        if (hp.get(key) or 0) != value:
            raise UnsupportedConfig(f"a Gemma 4 drafter has no {key.replace('_', ' ')} ({key} must be {value!r}, "
                                    f"is {hp.get(key)!r}), as transformers' Gemma4AssistantConfig requires")
    n_layer = int(hp.require("num_hidden_layers"))
    if shared_layers(hp) != n_layer:
        raise UnsupportedConfig(f"every layer of a Gemma 4 drafter reads the target's KV cache, but "
                                f"num_kv_shared_layers is {hp.get('num_kv_shared_layers')} of {n_layer} layers")
    refuse_untied_output(ARCH, hp)


def target_hidden_size(hp: HParams) -> int:
    """``backbone_hidden_size``: the target's hidden size, which llama.cpp needs to differ from the drafter's."""
    if hp.get("backbone_hidden_size") is None:
        raise UnsupportedConfig("config.json has no backbone_hidden_size: the hidden size of the target this "
                                "drafter was trained with is needed (llama.cpp's embedding_length_out)")
    backbone, hidden = int(hp["backbone_hidden_size"]), int(hp.require("hidden_size"))
    if backbone == hidden:
        raise UnsupportedConfig(f"llama.cpp's {ARCH} runtime requires the target's hidden size "
                                f"(backbone_hidden_size) to differ from the drafter's, but both are {hidden}")
    return backbone


def metadata(hp: HParams) -> list[Field]:
    backbone = target_hidden_size(hp)  # first: a config without it is not a drafter's at all
    refuse_unlike_a_drafter(hp)
    n_layer = int(hp["num_hidden_layers"])
    fields = decoder_metadata(ARCH, HParams({**hp, "num_kv_shared_layers": shared_layers(hp)}))
    return fields + [u32(f"{ARCH}.embedding_length_out", backbone), u32(f"{ARCH}.nextn_predict_layers", n_layer)]


def notes(hp: HParams, dropped: Sequence[str]) -> list[str]:
    if not hp.get("use_ordered_embeddings"):
        return []
    return ["left out masked_embedding (the centroid mask on the drafter's logits): llama.cpp drafts from the "
            "whole vocabulary, as its own converter does"]


def drafter_vocab(checkpoint: Any, hp: HParams) -> Vocab:
    """The Gemma 4 vocabulary (a drafter's logits are over its target's tokens), with a hint where it is missing."""
    if not (Path(checkpoint.directory) / "tokenizer.json").is_file():
        raise TokenizerError(f"{checkpoint.directory} has no tokenizer.json: a drafter drafts in its target's "
                             "vocabulary, so copy the target's tokenizer.json and tokenizer_config.json next to it")
    return gemma4_vocab(checkpoint, hp)


_OPTIONAL = {"required": False}
TENSORS: tuple[TensorRule, ...] = (
    *EMBEDDING_AND_NORM,
    top_rule("lm_head.weight", None, **_OPTIONAL),  # tied to token_embd (untied configs are refused)
    top_rule("pre_projection.weight", "nextn.pre_projection.weight"),
    top_rule("post_projection.weight", "nextn.post_projection.weight"),
    top_rule("masked_embedding.centroids.weight", None, **_OPTIONAL),
    top_rule("masked_embedding.token_ordering", None, **_OPTIONAL),
    *QUERY_ATTENTION,  # no K/V: every layer attends over the target's cache
    *DENSE_FFN,
)

GEMMA4_ASSISTANT = replace(
    GEMMA4,
    name="gemma4-assistant",
    hf_architectures=("Gemma4AssistantForCausalLM",),
    gguf_arch=ARCH,
    defaults={**DEFAULTS, **ASSISTANT_DEFAULTS},
    metadata=metadata,
    tensors=TENSORS,
    vocab=drafter_vocab,
    notes=notes,
)

GEMMA4_UNIFIED_ASSISTANT = replace(
    GEMMA4_ASSISTANT,
    name="gemma4-unified-assistant",
    hf_architectures=("Gemma4UnifiedAssistantForCausalLM",),
    defaults={**UNIFIED_DEFAULTS, **ASSISTANT_DEFAULTS},
    fixed={**UNIFIED_FIXED, "vocab_size_per_layer_input": 0},
    nullable=frozenset({"use_bidirectional_attention"}),
)
