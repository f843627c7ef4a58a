"""EmbeddingGemma (``Gemma3TextModel`` in a sentence-transformers folder) → llama.cpp arch ``gemma-embedding``.

The decoder stack is Gemma 3's (same keys and tensors, names without the ``model.`` prefix), attending
bidirectionally with symmetric sliding windows. What sentence-transformers adds around it comes from
``modules.json`` (read by ``convert/checkpoint.py``):

* the pooling mode of the ``Pooling`` module → ``gemma-embedding.pooling_type``;
* every listed ``Dense`` module (``2_Dense``, ``3_Dense``: 768 → 3072 → 768 in EmbeddingGemma) →
  ``dense_2.weight`` / ``dense_3.weight`` and their ``dense_*_feat_in/out`` keys, always: llama.cpp's own
  converter leaves them out unless ``--sentence-transformers-dense-modules`` is given, and its embeddings
  then point elsewhere (cosine about -0.1 with sentence-transformers');
* ``Normalize`` is the runtime's business (``gemma_edge`` normalises after Matryoshka truncation).

``sliding_window`` is written as config.json stores it (512): transformers halves it on load
(``sliding_window // 2 + 1`` for bidirectional attention) while llama.cpp's symmetric window takes the
full width and halves it itself.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from convert.generations.base import (
    ConversionTable, Field, HParams, TensorRule, UnsupportedConfig, top_rule, u32,
)
from convert.generations.common import gemma_tensor_rules, refuse_common, refuse_query_scale
from convert.generations.gemma3 import GEMMA3, gemma3_layout_metadata
from convert.vocab import sentencepiece_vocab

ARCH = "gemma-embedding"
DENSE_SLOTS = {"2_Dense": "dense_2", "3_Dense": "dense_3"}  # llama.cpp's two projection slots, in order
POOLING_TYPES = {"mean": 1, "cls": 2, "lasttoken": 3}  # llama.cpp enum llama_pooling_type
# sentence-transformers Pooling config flags → pooling mode
POOLING_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_lasttoken": "lasttoken"}
OTHER_POOLING_FLAGS = ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens")
MODULE_KINDS = ("Transformer", "Pooling", "Dense", "Normalize")
IDENTITY = "torch.nn.modules.linear.Identity"

DEFAULTS = GEMMA3.defaults  # Gemma3TextConfig's: a config without use_bidirectional_attention is causal (refused)


def _modules(hp: HParams) -> list[dict[str, Any]]:
    return list((hp.get("sentence_transformers") or {}).get("modules", []))


def _kind(module: dict[str, Any]) -> str:
    return module["type"].rsplit(".", 1)[-1]


def pooling_type(module: dict[str, Any]) -> int:
    """llama.cpp's pooling type for a sentence-transformers Pooling module's config (refusing the rest)."""
    config = module["config"]
    modes = [mode for flag, mode in POOLING_FLAGS.items() if config.get(flag)]
    others = [flag for flag in OTHER_POOLING_FLAGS if config.get(flag)]
    if not modes and config.get("pooling_mode") in POOLING_TYPES:
        modes = [config["pooling_mode"]]
    if others or len(modes) != 1:
        raise UnsupportedConfig(f"llama.cpp pools by one of mean, cls or last token, but {module['path']}/config.json "
                                f"asks for {', '.join(modes + others) or 'none'}")
    if config.get("include_prompt") is False:
        raise UnsupportedConfig("llama.cpp pools over every token, but the Pooling module leaves the prompt out "
                                "(include_prompt: false)")
    return POOLING_TYPES[modes[0]]


def dense_fields(hp: HParams, module: dict[str, Any]) -> list[Field]:
    """``dense_*_feat_in/out`` of one Dense module, refusing what llama.cpp's projection cannot compute."""
    path, config = module["path"], module["config"]
    slot = DENSE_SLOTS.get(path)
    if slot is None:
        raise UnsupportedConfig(f"llama.cpp's {ARCH} has two projection slots ({', '.join(DENSE_SLOTS)}), "
                                f"not a Dense module at {path!r}")
    if config.get("bias", True):
        raise UnsupportedConfig(f"llama.cpp's {ARCH} projections have no bias, but {path} has one")
    activation = config.get("activation_function", IDENTITY)
    if activation != IDENTITY:
        raise UnsupportedConfig(f"llama.cpp's {ARCH} projections are linear, but {path} applies {activation}")
    n_in, n_out = int(config["in_features"]), int(config["out_features"])
    hidden = int(hp["hidden_size"])
    if (slot == "dense_2" and n_in != hidden) or (slot == "dense_3" and n_out != hidden):
        raise UnsupportedConfig(f"llama.cpp's {ARCH} needs {path} to map {'from' if slot == 'dense_2' else 'to'} "
                                f"hidden_size {hidden}, but it is {n_in} → {n_out}")
    return [u32(f"{ARCH}.{slot}_feat_in", n_in), u32(f"{ARCH}.{slot}_feat_out", n_out)]


def metadata(hp: HParams) -> list[Field]:
    if not hp.get("use_bidirectional_attention"):
        raise UnsupportedConfig(f"llama.cpp's {ARCH} runtime attends bidirectionally, "
                                "but use_bidirectional_attention is false")
    refuse_common(ARCH, HParams({**hp, "use_bidirectional_attention": None}), "hidden_activation")
    refuse_query_scale(ARCH, hp, None)
    modules = _modules(hp)
    unknown = sorted({_kind(m) for m in modules} - set(MODULE_KINDS))
    if unknown:
        raise UnsupportedConfig(f"modules.json lists {', '.join(unknown)}: llama.cpp's {ARCH} runs only "
                                f"{', '.join(MODULE_KINDS)}")
    fields = gemma3_layout_metadata(ARCH, hp)
    for module in modules:
        if _kind(module) == "Dense":
            fields += dense_fields(hp, module)
    pooling = [m for m in modules if _kind(m) == "Pooling"]
    if pooling:
        fields.append(u32(f"{ARCH}.pooling_type", pooling_type(pooling[0])))
    return fields


def _optional_model_prefix(rule: TensorRule) -> TensorRule:
    """Gemma3TextModel saves its tensors without ``model.`` (a bare text model); accept both layouts."""
    return dataclasses.replace(rule, hf=r"(?:model\.)?" + rule.hf.removeprefix(r"model\."))


TENSORS: tuple[TensorRule, ...] = tuple(
    _optional_model_prefix(rule) for rule in gemma_tensor_rules(post_norms=True, qk_norms=True)
) + tuple(top_rule(f"{path}/linear.weight", f"{slot}.weight", required=False) for path, slot in DENSE_SLOTS.items())


def notes(hp: HParams, dropped) -> list[str]:
    dense = [m["path"] for m in _modules(hp) if _kind(m) == "Dense"]
    if not dense:
        return ["modules.json lists no Dense module: the embeddings are the pooled hidden states"]
    return [f"included the sentence-transformers projections {', '.join(dense)} (llama.cpp's own converter "
            "leaves them out unless given --sentence-transformers-dense-modules)"]


EMBEDDINGGEMMA = ConversionTable(
    name="embeddinggemma",
    hf_architectures=("Gemma3TextModel",),
    gguf_arch=ARCH,
    defaults=DEFAULTS,
    metadata=metadata,
    tensors=TENSORS,
    vocab=sentencepiece_vocab,
    rope=GEMMA3.rope,
    layer_types=GEMMA3.layer_types,
    notes=notes,
    nullable=GEMMA3.nullable,
)
