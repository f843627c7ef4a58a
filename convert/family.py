"""The Gemma family as the converter sees it: which members it converts (and so llama.cpp runs), and for
the members llama.cpp 0.3.36 cannot run, the reason — recognised from ``config.json`` alone.

Each :class:`Member` names the ``config.json`` values that identify it (``model_type`` and/or
``architectures[0]``). What a convertible member can do is not written here but read from the
generation and encoder registries (``convert/generations``, ``convert/mmproj``) and the runtime's
generation table (``gemma_edge/generations``): a member converts when a conversion table claims its
architecture, runs and embeds as the runtime generation of that table's GGUF architecture does (a drafter's
architecture is no runtime generation: it drafts for its target and does not run alone), sees / hears when
a supported vision / audio encoder does. A member with a ``refusal`` is refused before anything else is
read (``UnrunnableModel``): its one line names the model and why.

``tests/convert/test_family.py`` pins llama.cpp's architecture list: a llama-cpp-python that gains an
architecture for a refused member fails that test, turning the refusal into work.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class UnrunnableModel(ValueError):
    """A Gemma-family checkpoint llama.cpp has no runtime for; the message names the model and the reason."""


@dataclass(frozen=True)
class Member:
    name: str
    architectures: tuple[str, ...] = ()  # config.json architectures[0] values
    model_types: tuple[str, ...] = ()  # config.json model_type values
    refusal: str | None = None  # why llama.cpp 0.3.36 cannot run it


_NO_ARCH = "llama.cpp 0.3.36 has no architecture for it"
FAMILY: tuple[Member, ...] = (
    Member("Gemma 1", ("GemmaForCausalLM",), ("gemma",)),
    Member("Gemma 2", ("Gemma2ForCausalLM",), ("gemma2",)),
    Member("Gemma 3 (270M, 1B; 4B-27B text + vision)", ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
           ("gemma3",)),
    Member("Gemma 3n (E2B, E4B)", ("Gemma3nForConditionalGeneration", "Gemma3nForCausalLM"), ("gemma3n",)),
    Member("Gemma 4 (E2B, E4B, 26B-A4B, 31B)", ("Gemma4ForConditionalGeneration", "Gemma4ForCausalLM"),
           ("gemma4",)),
    Member("Gemma 4 12B Unified", ("Gemma4UnifiedForConditionalGeneration", "Gemma4UnifiedForCausalLM"),
           ("gemma4_unified",)),
    Member("Gemma 4 MTP drafters (E2B, E4B, 26B-A4B, 31B; 12B Unified)",
           ("Gemma4AssistantForCausalLM", "Gemma4UnifiedAssistantForCausalLM"),
           ("gemma4_assistant", "gemma4_unified_assistant")),
    Member("EmbeddingGemma", ("Gemma3TextModel",)),
    Member("DiffusionGemma", ("DiffusionGemmaForBlockDiffusion",), ("diffusion_gemma",),
           f"a block-diffusion decoder (it denoises whole blocks of tokens, not one next token); {_NO_ARCH}"),
    Member("EmbeddingGemma 2", ("EmbeddingGemma2Model",), ("embedding_gemma2",),
           f"a multimodal embedding encoder; {_NO_ARCH} (its gemma-embedding runtime is EmbeddingGemma 1's)"),
    Member("T5Gemma", ("T5GemmaForConditionalGeneration",), ("t5gemma",),
           "an encoder-decoder model; llama.cpp 0.3.36 runs Gemma as a decoder only (its t5 runtime is T5's)"),
    Member("T5Gemma 2", ("T5Gemma2ForConditionalGeneration",), ("t5gemma2",),
           "an encoder-decoder model; llama.cpp 0.3.36 runs Gemma as a decoder only (its t5 runtime is T5's)"),
    Member("VaultGemma", ("VaultGemmaForCausalLM",), ("vaultgemma",),
           f"its decoder has no post-attention / post-feed-forward norms, which every llama.cpp Gemma runtime "
           f"applies; {_NO_ARCH}"),
    Member("RecurrentGemma", ("RecurrentGemmaForCausalLM",), ("recurrent_gemma",),
           f"a Griffin model (RG-LRU recurrent blocks between local-attention layers); {_NO_ARCH}"),
    Member("PaliGemma", ("PaliGemmaForConditionalGeneration",), ("paligemma",),
           "a SigLIP + Gemma vision-language model whose prompt prefix attends both ways; llama.cpp 0.3.36 has "
           "neither an architecture nor a projector for it"),
    Member("ShieldGemma 2", ("ShieldGemma2ForImageClassification",), ("shieldgemma2",),
           f"an image-safety classifier (policy yes/no scores), not a generator; {_NO_ARCH}"),
)


def member_for(config: Mapping[str, Any]) -> Member | None:
    """The family member a raw ``config.json`` describes (by ``architectures[0]``, else ``model_type``)."""
    architecture = (config.get("architectures") or [None])[0]
    model_type = config.get("model_type")
    for member in FAMILY:
        if architecture in member.architectures:
            return member
    for member in FAMILY:
        if model_type in member.model_types:
            return member
    return None


def refuse_unrunnable(config: Mapping[str, Any]) -> None:
    """Raise :class:`UnrunnableModel` for a member llama.cpp cannot run (one line: model and reason)."""
    member = member_for(config)
    if member is not None and member.refusal:
        raise UnrunnableModel(f"{member.name} ({config.get('model_type') or member.model_types[0]}) cannot be "
                              f"converted: {member.refusal}")


CAPABILITIES = ("converts", "runs", "sees", "hears", "embeds", "drafts")
DRAFTER_ARCH = "gemma4-assistant"  # llama.cpp's MTP drafter architecture (convert/generations/gemma4_assistant.py)


def support_table() -> list[dict[str, Any]]:
    """One row per family member: its name, :data:`CAPABILITIES` and ``why_not`` (``gemma-edge list --family``,
    the README's support table)."""
    return [{"model": member.name, **capabilities(member)} for member in FAMILY]


def capabilities(member: Member) -> dict[str, Any]:
    """converts / runs / sees / hears / embeds / drafts of a member, from the registries; or why not."""
    from convert.generations import generations
    from convert.mmproj import encoders
    from convert.mmproj.base import AUDIO, VISION
    from gemma_edge.generations import generation_of

    if member.refusal:
        return {"converts": False, "runs": False, "sees": False, "hears": False, "embeds": False, "drafts": False,
                "why_not": member.refusal}
    text = [g for g in generations() if set(g.hf_architectures) & set(member.architectures)]
    runtime = [r for g in text if (r := generation_of(g.gguf_arch))]
    towers = [e for e in encoders() if set(e.hf_architectures) & set(member.architectures) and not e.unsupported]
    converts = bool(text)
    drafts = any(g.gguf_arch == DRAFTER_ARCH for g in text)  # a drafter never runs alone: it drafts for its target
    return {
        "converts": converts, "runs": bool(runtime),
        "sees": any(e.modality == VISION for e in towers),
        "hears": any(e.modality == AUDIO for e in towers),
        "embeds": any(r.embeds for r in runtime),
        "drafts": drafts,
        "why_not": None if converts else "the converter has no generation for it yet",
    }
