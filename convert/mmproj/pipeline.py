"""Checkpoint + encoder tables → one planned mmproj GGUF (pure), written by the same streaming writer.

``plan_mmproj`` picks, for each sub-config the checkpoint has (``vision_config``, ``audio_config``), the
encoder of its architecture (``convert/mmproj/__init__.py``), maps every multimodal tensor through
exactly one rule of the encoder that owns it, and decides every key, tensor name, source and storage
type before a byte is written. A tower without a usable encoder (no module, ``unsupported``, or a
config the runtime cannot run) becomes a one-line note instead of a file; a checkpoint whose tensors
do not fit an encoder's table is refused (``UnsupportedCheckpoint``), like the text pipeline does.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_VERSION, GGMLQuantizationType

from convert.checkpoint import Checkpoint, CheckpointError
from convert.mmproj import SUB_CONFIGS, encoder_for, encoders
from convert.mmproj.base import (
    DEFAULT_STORAGE, Encoder, EncoderConfig, EncoderTensor, Field, TensorSource, UnsupportedCheckpoint,
    UnsupportedConfig, boolean, string, u32,
)
from convert.pipeline import missing_required, rule_for, tensor_to_write
from convert.storage import OutputType, storage_type
from convert.writer import TensorToWrite, write_gguf

ARCH = "clip"


@dataclass
class MmprojPlan:
    """The planned mmproj (``tensors`` empty: nothing to write) and the towers left out, as notes."""

    fields: list[Field]
    tensors: list[TensorToWrite]
    encoders: list[Encoder]
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.encoders


def read_preprocessor_config(directory: Path) -> dict[str, Any]:
    """``preprocessor_config.json`` then ``processor_config.json`` over it (its ``image_processor``
    lifted to the top level), as llama.cpp's reference converter merges them; {} when both are absent."""
    merged: dict[str, Any] = {}
    for name, nested in (("preprocessor_config.json", "media_proc_cfg"), ("processor_config.json", "image_processor")):
        path = directory / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise CheckpointError(f"{name} is not valid JSON: {error}") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"{name} does not hold a JSON object")
        merged.update(config)
        merged.update(config.get(nested) or {})
    return merged


def mm_name(name: str) -> str:
    """A multimodal tensor's name as encoders see it: one leading ``model.`` removed (v5 layout)."""
    return name[len("model."):] if name.startswith("model.") else name


def plan_mmproj(checkpoint: Checkpoint, text_hparams: Mapping[str, Any], output: OutputType,
                name: str | None = None) -> MmprojPlan:
    """Everything the mmproj of ``checkpoint`` holds, or an empty plan with notes saying why not."""
    architecture, raw = checkpoint.architecture, checkpoint.raw_config
    present = [key for key in SUB_CONFIGS if isinstance(raw.get(key), dict)]
    preprocessor = read_preprocessor_config(checkpoint.directory) if present else {}
    active: list[tuple[Encoder, EncoderConfig, list[Field]]] = []
    notes: list[str] = []
    unclaimed_towers = False
    for key in present:
        encoder = encoder_for(architecture, key)
        if encoder is None:
            notes.append(f"{architecture} {key.removesuffix('_config')} tower: not supported yet: "
                         "the converter has no mmproj encoder for it")
            unclaimed_towers = True
            continue
        if encoder.unsupported:
            notes.append(f"{encoder.name}: not supported yet: {encoder.unsupported}")
            continue
        cfg = EncoderConfig(encoder.hparams(raw[key]), text_hparams, raw, preprocessor)
        try:
            encoder_fields = encoder.metadata(cfg)
        except UnsupportedConfig as error:
            notes.append(f"{encoder.name}: not supported: {error}")
            continue
        active.append((encoder, cfg, encoder_fields))
    if not active:
        return MmprojPlan([], [], [], notes)

    owned = _assign_tensors(checkpoint, architecture, [e for e, _, _ in active], check_all=not unclaimed_towers)
    notes += [f"{e.name}: the checkpoint has no weights for it (a text-only export?)" for e, _, _ in active
              if not owned[e.name]]
    active = [item for item in active if owned[item[0].name]]
    if not active:
        return MmprojPlan([], [], [], notes)
    notes += [f"{e.name}: {e.caveat}" for e, _, _ in active if e.caveat]
    fields = [
        string("general.type", "mmproj"),
        string("general.name", name or checkpoint.directory.name),
        u32("general.file_type", int(output.file_type)),
        u32("general.quantization_version", GGML_QUANT_VERSION),
    ]
    shared_projector_key = len(active) == 1
    planned: list[EncoderTensor] = []
    for encoder, cfg, encoder_fields in active:
        modality = encoder.modality
        fields.append(boolean(f"clip.has_{modality}_encoder", True))
        projector_key = "clip.projector_type" if shared_projector_key else f"clip.{modality}.projector_type"
        fields.append(string(projector_key, encoder.projector_type))
        fields.append(u32(f"clip.{modality}.projection_dim", int(text_hparams["hidden_size"])))
        fields += encoder_fields
        planned += match_encoder_tensors(encoder, cfg, owned[encoder.name])
    fields = _merge_fields(fields)
    _check_unique_names(planned)
    tensors = [tensor_to_write(t.name, t.source, t.transform, _storage(t, output)) for t in planned]
    return MmprojPlan(fields, tensors, [e for e, _, _ in active], notes)


def _assign_tensors(checkpoint: Checkpoint, architecture: str | None, active: list[Encoder],
                    check_all: bool) -> dict[str, dict[str, TensorSource]]:
    """Owner encoder name → {encoder-view name → tensor}. A tensor no encoder of the architecture owns
    is refused, unless a tower of the checkpoint has no encoder module (it is presumed to be that one's)."""
    family = [e for e in encoders() if architecture in e.hf_architectures]
    owned: dict[str, dict[str, TensorSource]] = {e.name: {} for e in active}
    for hf_name, tensor in checkpoint.multimodal.items():
        name = mm_name(hf_name)
        owners = [e for e in family if e.owns_tensor(name)]
        if not owners:
            if check_all:
                raise UnsupportedCheckpoint(
                    f"multimodal tensor {hf_name!r} belongs to no known {architecture} encoder; refusing to guess"
                )
            continue
        if owners[0].name in owned:
            owned[owners[0].name][name] = tensor
    return owned


def match_encoder_tensors(encoder: Encoder, cfg: EncoderConfig, owned: Mapping[str, TensorSource]) -> list[EncoderTensor]:
    """Map every owned tensor through exactly one rule; refuse unknown and missing tensors."""
    n_block = encoder.block_count(cfg.hp)
    ordered: list[tuple[tuple[int, int, str], EncoderTensor]] = []
    for name, tensor in owned.items():
        index, rule, match = rule_for(encoder.tensors, encoder.name, name)
        if rule.gguf is None:
            continue
        groups = match.groupdict()
        bid = int(groups["bid"]) if groups.get("bid") is not None else -1
        if "bid" in groups and bid >= n_block:
            raise UnsupportedCheckpoint(
                f"tensor {name!r} belongs to block {bid}, but the {encoder.config_key} has {n_block} blocks"
            )
        source = rule.reshape(tensor) if rule.reshape is not None else tensor
        planned = EncoderTensor(rule.gguf.format(**groups), source, rule.transform, rule.storage)
        ordered.append(((bid, index, planned.name), planned))
    ordered.sort(key=lambda item: item[0])
    planned_tensors = [p for _, p in ordered] + encoder.extra_tensors(cfg, owned)
    _check_required(encoder, n_block, {p.name for p in planned_tensors})
    return planned_tensors


def _check_required(encoder: Encoder, n_block: int, produced: set[str]) -> None:
    for _, name in missing_required(encoder.tensors, n_block, produced):
        raise UnsupportedCheckpoint(f"the {encoder.name} checkpoint lacks the tensor for {name}")


def _merge_fields(fields: list[Field]) -> list[Field]:
    """One field per key (encoders may both write e.g. ``clip.use_gelu``); different values are refused."""
    seen: dict[str, Field] = {}
    for item in fields:
        if item.key in seen and seen[item.key] != item:
            raise UnsupportedConfig(f"encoders disagree on {item.key}: {seen[item.key].value} vs {item.value}")
        seen[item.key] = item
    return list(seen.values())


def _check_unique_names(planned: list[EncoderTensor]) -> None:
    names = [t.name for t in planned]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UnsupportedCheckpoint(f"several tensors map to {', '.join(duplicates)}")


def _storage(tensor: EncoderTensor, output: OutputType) -> GGMLQuantizationType:
    """The rule's override, else the common mmproj defaults, else the text converter's policy."""
    if tensor.storage is not None:
        return tensor.storage(output)
    for pattern, storage in DEFAULT_STORAGE:
        if re.fullmatch(pattern, tensor.name):
            return storage(output)
    return storage_type(tensor.name, tensor.shape, False, output)


def write_mmproj(plan: MmprojPlan, path: Path, force: bool = False, on_tensor=None) -> int:
    """Stream the planned mmproj to ``path`` (temporary file + rename); returns its size in bytes."""
    return write_gguf(path, ARCH, plan.fields, plan.tensors, force=force, on_tensor=on_tensor)
