"""A Hugging Face checkpoint directory, read without torch or transformers (docs/converter-spec.md §1.1-1.2).

* ``config.json`` → the raw config with ``text_config`` merged over the top level (text keys win) and
  ``architectures[0]``; generation defaults are applied later by the generation (``ConversionTable.hparams``).
  The raw config is kept too: the mmproj reads ``vision_config`` / ``audio_config`` from it.
* Multimodal tensors (vision/audio towers, projectors) are kept apart from the text tensors: the text
  GGUF leaves them out, the mmproj (``convert/mmproj/``) converts them.
* ``*.safetensors`` (single file or sharded through ``model.safetensors.index.json``): headers are parsed
  and validated here — dtype known, shape consistent with the byte range, byte range inside the file,
  ranges not overlapping — so a lying header is refused before anything is written.
* Pickle weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) are refused and never opened: unpickling
  runs arbitrary code.

* ``modules.json`` (a sentence-transformers model: EmbeddingGemma) → the listed modules, with each
  module's ``config.json``, under the config key ``sentence_transformers``; the ``model.safetensors`` of
  every listed ``Dense`` module joins the tensors as ``<module path>/<tensor name>`` (``2_Dense/linear.weight``).
  Module paths must be plain sub-directory names: a path that leaves the checkpoint is refused.

Tensor data is read a few rows at a time with ``os.pread`` into small buffers rather than through
``mmap``: touched file-backed pages of a mapping count towards the process's resident set, so a mapped
checkpoint would make peak RSS grow with the model, while the page cache of plain reads does not.
BF16 has no numpy dtype: its bits are read as ``uint16`` and widened exactly (``<< 16``) to float32.
I64 tensors (index buffers such as a Gemma 4 drafter's ``masked_embedding.token_ordering``) are accepted so
the header validates; the generation tables drop them, and they count for no storage type.
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convert.generations.base import RowView

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
INDEX_NAME = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100 * 1024 * 1024

# safetensors dtype → (numpy storage dtype, widening to float32)
_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),  # index buffers (a Gemma 4 drafter's masked_embedding.token_ordering)
}
_FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}

_MULTIMODAL = re.compile(
    r"(vision_|audio_|vision\.|audio\.|projector\.)|^(multi_modal_projector|vision_tower|vision_model)"
)


class CheckpointError(ValueError):
    """The checkpoint directory is unusable (missing or malformed files); the message says which."""


class SafetensorsTensor(RowView):
    """One tensor inside a safetensors file, readable by rows as float32 (a ``TensorSource``)."""

    def __init__(self, path: Path, name: str, dtype: str, shape: tuple[int, ...], offset: int, nbytes: int):
        self.path, self.name, self.dtype = path, name, dtype
        self.shape = shape
        self.offset, self.nbytes = offset, nbytes

    def read(self, start: int, stop: int) -> np.ndarray:
        storage = _DTYPES[self.dtype]
        count = (stop - start) * self.cols
        raw = np.empty(count, dtype=storage)
        view = memoryview(raw).cast("B")
        position = self.offset + start * self.cols * storage.itemsize
        with open(self.path, "rb", buffering=0) as handle:
            done = 0
            while done < len(view):
                got = os.preadv(handle.fileno(), [view[done:]], position + done)
                if got <= 0:
                    raise CheckpointError(f"{self.path.name}: tensor {self.name!r} is truncated")
                done += got
        if self.dtype == "BF16":
            values = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            values = raw.astype(np.float32, copy=False)
        return values.reshape(stop - start, self.cols)


@dataclass
class Checkpoint:
    """What the pipeline needs from a checkpoint directory."""

    directory: Path
    config: dict[str, Any]  # text_config merged over the top level
    architecture: str | None
    tensors: dict[str, SafetensorsTensor]  # normalised name → tensor
    # multimodal tensors (vision/audio towers, projectors): left out of the text GGUF, read by the mmproj
    multimodal: dict[str, SafetensorsTensor] = field(default_factory=dict)
    raw_config: dict[str, Any] = field(default_factory=dict)  # config.json as written (sub-configs kept)

    @property
    def dropped(self) -> list[str]:
        """Normalised names of the multimodal tensors the text GGUF leaves out."""
        return list(self.multimodal)

    @property
    def storage_dtypes(self) -> set[str]:
        """The floating-point storage types of the weights (integer index buffers left aside)."""
        return {t.dtype for t in self.tensors.values() if t.dtype in _FLOAT_DTYPES}


def read_config(directory: Path) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """(text_config merged over the top level, ``architectures[0]``, the raw config)."""
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{directory} has no config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise CheckpointError(f"config.json is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise CheckpointError("config.json does not hold a JSON object")
    architectures = raw.get("architectures") or [None]
    merged = {k: v for k, v in raw.items() if k not in ("text_config", "vision_config", "audio_config")}
    merged.update(raw.get("text_config") or {})
    return merged, architectures[0], raw


def safetensors_files(directory: Path) -> list[Path]:
    """The weight files, from the shard index when present; pickles are refused."""
    index = directory / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{INDEX_NAME} is malformed: {error}") from None
        files = [directory / name for name in sorted(set(weight_map.values()))]
        for path in files:
            if not path.is_file():
                raise CheckpointError(f"shard {path.name} is listed in {INDEX_NAME} but missing")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"refusing pickle weights ({', '.join(pickles)}): they can run code when loaded; "
            "save the model as safetensors first"
        )
    raise CheckpointError(f"{directory} has no *.safetensors weights")


def read_safetensors_header(path: Path) -> list[SafetensorsTensor]:
    """Parse and validate one file's header; every tensor's byte range must be exact and in the file."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise CheckpointError(f"{path.name} is not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(f"{path.name}: header length {header_len} exceeds the file")
        try:
            header = json.loads(handle.read(header_len))
        except ValueError:
            raise CheckpointError(f"{path.name}: header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: header is not a JSON object")
    data_start = 8 + header_len
    data_size = size - data_start
    tensors: list[SafetensorsTensor] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(n) for n in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path.name}: malformed header entry for {name!r}") from None
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path.name}: tensor {name!r} has unsupported dtype {dtype!r}")
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
        if any(n < 0 for n in shape) or not (0 <= begin <= end <= data_size) or end - begin != expected:
            raise CheckpointError(
                f"{path.name}: header lies about tensor {name!r} "
                f"(offsets {begin}..{end} of {data_size} data bytes, dtype {dtype}, shape {list(shape)})"
            )
        tensors.append(SafetensorsTensor(path, name, dtype, shape, data_start + begin, expected))
    ordered = sorted(tensors, key=lambda t: t.offset)
    for before, after in zip(ordered, ordered[1:]):
        if before.offset + before.nbytes > after.offset:
            raise CheckpointError(f"{path.name}: tensors {before.name!r} and {after.name!r} overlap")
    return tensors


MODULES_NAME = "modules.json"
_MODULE_PATH = re.compile(r"[A-Za-z0-9_.-]+")


def read_sentence_transformers(directory: Path) -> dict[str, Any] | None:
    """``{"modules": [{"type", "path", "config"}...]}`` from ``modules.json`` (None without one); each
    module's ``config.json`` is read from its sub-directory (``{}`` when it has none)."""
    path = directory / MODULES_NAME
    if not path.is_file():
        return None
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))
        modules = [{"type": str(m["type"]), "path": str(m.get("path") or "")} for m in listed]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{MODULES_NAME} is malformed: expected a list of {{type, path}} objects") from None
    for module in modules:
        sub = module["path"]
        if sub and (not _MODULE_PATH.fullmatch(sub) or sub in (".", "..")):
            raise CheckpointError(f"{MODULES_NAME} lists module path {sub!r}: only plain sub-directory names are read")
        config = directory / sub / "config.json" if sub else None
        try:
            module["config"] = json.loads(config.read_text(encoding="utf-8")) if config and config.is_file() else {}
        except ValueError as error:
            raise CheckpointError(f"{sub}/config.json is not valid JSON: {error}") from None
    return {"modules": modules}


def module_tensors(directory: Path,
                   sentence_transformers: dict[str, Any] | None) -> list[tuple[str, SafetensorsTensor]]:
    """(``<path>/<name>``, tensor) of every listed ``Dense`` module's ``model.safetensors``."""
    found = []
    for module in (sentence_transformers or {}).get("modules", []):
        if not module["type"].endswith("Dense"):
            continue
        folder = directory / module["path"]
        if not (folder / "model.safetensors").is_file():
            safetensors_files(folder)  # refuses pickles by name, else "has no *.safetensors"
            raise CheckpointError(f"{module['path']} has no model.safetensors")
        found += [(f"{module['path']}/{t.name}", t) for t in read_safetensors_header(folder / "model.safetensors")]
    return found


def normalise_name(name: str) -> str | None:
    """``language_model.`` removed (legacy and v5 multimodal layouts); None for tensors the text GGUF drops."""
    name = name.replace("language_model.", "")
    if name.endswith(".rotary_emb.inv_freq"):
        return None
    return name


def is_multimodal(name: str) -> bool:
    return bool(_MULTIMODAL.search(name))


def open_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory")
    config, architecture, raw_config = read_config(directory)
    sentence_transformers = read_sentence_transformers(directory)
    if sentence_transformers is not None:
        config["sentence_transformers"] = sentence_transformers
    tensors: dict[str, SafetensorsTensor] = {}
    multimodal: dict[str, SafetensorsTensor] = {}
    named = [(tensor.name, tensor) for path in safetensors_files(directory) for tensor in read_safetensors_header(path)]
    for original, tensor in named + module_tensors(directory, sentence_transformers):
        name = normalise_name(original)
        if name is None:
            continue
        if is_multimodal(name):
            if name in multimodal:
                raise CheckpointError(f"tensor {name!r} appears twice in the checkpoint")
            multimodal[name] = tensor
            continue
        if name in tensors:
            raise CheckpointError(f"tensor {name!r} appears twice in the checkpoint")
        tensors[name] = tensor
    return Checkpoint(directory, config, architecture, tensors, multimodal, raw_config)
