"""Checkpoint + generation table → planned GGUF (pure) → streamed GGUF file (side effect at the edge).

``plan_conversion`` decides everything — metadata, every tensor's name, source, transform and storage
type — before a byte is written, so refusals (unsupported config, unknown or missing tensors) leave
nothing on disk. ``write_plan`` then streams each tensor through the writer a few rows at a time:
peak memory is a couple of chunks, not a tensor, and not the model.
"""
from __future__ import annotations

import re
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_VERSION, GGMLQuantizationType

from convert.checkpoint import Checkpoint
from convert.generations import generation_for
from convert.generations.base import (
    ConcatSource, ConversionTable, Field, HParams, PlannedTensor, TensorRule, TensorSource, Transform,
    UnsupportedCheckpoint, ZerosSource, string, u32,
)
from convert.storage import OutputType, encode, encoded_nbytes, storage_type
from convert.writer import TensorToWrite, write_gguf

CHUNK_BYTES = 16 * 1024 * 1024  # float32 bytes converted at a time


@dataclass
class Plan:
    generation: ConversionTable
    hparams: HParams
    fields: list[Field]
    tensors: list[TensorToWrite]
    notes: list[str] = field(default_factory=list)


@dataclass
class Summary:
    tensors: int
    bytes: int
    seconds: float
    peak_rss_mb: float
    notes: list[str]
    mmproj: Path | None = None  # the mmproj GGUF written next to the text GGUF, if any
    mmproj_tensors: int = 0
    mmproj_bytes: int = 0


def plan_conversion(checkpoint: Checkpoint, output: OutputType, name: str | None = None) -> Plan:
    generation = generation_for(checkpoint.architecture)
    hp = generation.hparams(checkpoint.config)
    arch_fields = generation.metadata(hp)
    vocab = generation.vocab(checkpoint, hp)
    planned = match_tensors(generation, hp, checkpoint, vocab.n_tokens)
    present = {t.name for t in planned}
    planned += generation.extra_tensors(hp, vocab.n_tokens, present)
    fields = [
        string("general.type", "model"),
        string("general.name", name or checkpoint.directory.name),
        u32("general.file_type", int(output.file_type)),
        u32("general.quantization_version", GGML_QUANT_VERSION),
        *arch_fields,
        *vocab.fields,
    ]
    tensors = [_to_write(t, output) for t in planned]
    return Plan(generation, hp, fields, tensors, hp.notes + generation.notes(hp, checkpoint.dropped))


def match_tensors(generation: ConversionTable, hp: HParams, checkpoint: Checkpoint,
                  n_tokens: int) -> list[PlannedTensor]:
    """Map every checkpoint tensor through exactly one rule; refuse unknown and missing tensors."""
    n_layer = generation.block_count(hp)
    single: list[tuple[tuple[int, int], PlannedTensor]] = []
    stacks: dict[str, tuple[int, TensorRule, dict[int, TensorSource]]] = {}
    for hf_name, tensor in checkpoint.tensors.items():
        index, rule, match = rule_for(generation.tensors, generation.name, hf_name)
        if rule.gguf is None:
            continue
        groups = match.groupdict()
        bid = int(groups["bid"]) if groups.get("bid") is not None else -1
        if bid >= n_layer:
            raise UnsupportedCheckpoint(f"tensor {hf_name!r} belongs to layer {bid}, but the config has {n_layer} layers")
        gguf_name = rule.gguf.format(**{k: v for k, v in groups.items() if k != "xid"})
        if rule.stack:
            stacks.setdefault(gguf_name, (bid, rule, {}))[2][int(groups["xid"])] = tensor
            continue
        source: TensorSource = tensor
        if rule.match_vocab:
            source = fit_rows(source, n_tokens)
        single.append(((bid, index), PlannedTensor(gguf_name, source, rule.transform, rule.keep_f32)))
    for gguf_name, (bid, rule, parts) in stacks.items():
        if sorted(parts) != list(range(rule.stack)):
            raise UnsupportedCheckpoint(f"{gguf_name} needs {rule.stack} stacked tensors, found indices {sorted(parts)}")
        sources = [parts[i] for i in range(rule.stack)]
        stacked = ConcatSource([(s, s.rows) for s in sources], (rule.stack, *sources[0].shape))
        index = generation.tensors.index(rule)
        single.append(((bid, index), PlannedTensor(gguf_name, stacked, rule.transform, rule.keep_f32)))
    single.sort(key=lambda item: item[0])
    planned = [p for _, p in single]
    _check_required(generation, n_layer, {p.name for p in planned})
    return planned


def rule_for(rules: Sequence[TensorRule], layout: str, name: str) -> tuple[int, TensorRule, re.Match[str]]:
    """The one rule of a tensor table (TensorRule or mmproj EncoderRule values) that claims tensor `name`
    (index, rule, match); a refusal naming the `layout` when none does."""
    for index, rule in enumerate(rules):
        match = rule.match(name)
        if match:
            return index, rule, match
    raise UnsupportedCheckpoint(f"tensor {name!r} is not part of the {layout} layout; refusing to guess what it is")


def missing_required(rules: Sequence[TensorRule], n_block: int, produced: set[str]) -> Iterator[tuple[TensorRule, str]]:
    """(rule, GGUF name) of every required tensor not `produced` (per block 0..n-1 for ``{bid}`` rules)."""
    for rule in rules:
        if not rule.required or rule.gguf is None:
            continue
        names = [rule.gguf.format(bid=i) for i in range(n_block)] if "{bid}" in rule.gguf else [rule.gguf]
        for name in names:
            if name not in produced:
                yield rule, name


def _check_required(generation: ConversionTable, n_layer: int, produced: set[str]) -> None:
    for rule, name in missing_required(generation.tensors, n_layer, produced):
        hf = rule.hf.replace(r"(?P<bid>\d+)", name.split(".")[1] if "{bid}" in rule.gguf else "")
        raise UnsupportedCheckpoint(f"checkpoint lacks {hf.replace(chr(92), '')} (needed for {name})")


def fit_rows(source: TensorSource, n_rows: int) -> TensorSource:
    """Truncate or zero-pad the leading axis to ``n_rows`` (embedding rows must equal the token count)."""
    rows = source.shape[0]
    if rows == n_rows:
        return source
    if len(source.shape) != 2:
        raise UnsupportedCheckpoint(f"cannot fit a {len(source.shape)}-D tensor to the vocabulary")
    cols = source.shape[1]
    if rows > n_rows:
        return ConcatSource([(source, n_rows)], (n_rows, cols))
    return ConcatSource([(source, rows), (ZerosSource((n_rows - rows, cols)), n_rows - rows)], (n_rows, cols))


def _to_write(planned: PlannedTensor, output: OutputType) -> TensorToWrite:
    qtype = storage_type(planned.name, planned.shape, planned.keep_f32, output)
    return tensor_to_write(planned.name, planned.source, planned.transform, qtype)


def tensor_to_write(name: str, source: TensorSource, transform: Transform | None,
                    qtype: GGMLQuantizationType) -> TensorToWrite:
    """A tensor whose bytes are produced lazily, a few rows at a time, when the writer asks."""
    shape = tuple(source.shape)
    return TensorToWrite(name=name, shape=shape, qtype=qtype, nbytes=encoded_nbytes(shape, qtype),
                         chunks=lambda: _encoded_chunks(source, transform, qtype))


def _encoded_chunks(source: TensorSource, transform: Transform | None, qtype) -> Iterator[np.ndarray]:
    step = max(1, CHUNK_BYTES // (4 * max(1, source.cols)))
    for start in range(0, source.rows, step):
        rows = source.read(start, min(start + step, source.rows))
        if transform is not None:
            rows = transform(rows).astype(np.float32, copy=False)
        yield encode(rows, qtype)


def write_plan(plan: Plan, path: Path, force: bool, on_tensor: Callable[[TensorToWrite], None] | None = None) -> Summary:
    started = time.monotonic()
    size = write_gguf(path, plan.generation.gguf_arch, plan.fields, plan.tensors, force=force, on_tensor=on_tensor)
    return Summary(
        tensors=len(plan.tensors),
        bytes=size,
        seconds=time.monotonic() - started,
        peak_rss_mb=peak_rss_mb(),
        notes=plan.notes,
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
