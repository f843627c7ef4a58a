"""Oracles for converter tests: transformers logits, llama.cpp logits, llama.cpp's reference converter,
and GGUF-vs-GGUF comparison. Import from tests of any generation.

* ``hf_logits(model_dir, ids)`` — transformers (float32, eager attention, needed for Gemma 2 softcapping)
  on the exact token ids, all positions.
* ``llama_logits(gguf_path, ids)`` — llama.cpp through llama-cpp-python with ``logits_all=True``.
* ``compare_logits(reference, candidate)`` → :class:`Metrics`: max |Δ|, mean |Δ|, minimum per-position
  cosine, and argmax agreement at *decisive* positions (reference top-2 margin ≥ 0.05).
* ``reference_convert(model_dir, out, outtype, mmproj=False)`` — llama.cpp's own ``convert_hf_to_gguf.py`` from the
  llama-cpp-python 0.3.36 sdist (``pip download`` once into the test cache), run with this venv's python
  (it needs torch; the converter under test does not). ``reference_gguf(model_dir, outtype)``: the same,
  cached in the test cache.
* ``gguf_differences(a, b, allowed)`` — tensor names/types/shapes/bytes and metadata (value types and
  array element types included) compared through a small independent GGUF parser (``read_header``);
  returns human-readable differences (empty = same). ``gguf_fields`` / ``gguf_tensors`` expose the parsed
  metadata and tensor digests for direct assertions.

Import as ``from tests.convert.oracle import ...``. tests/convert deliberately has no ``__init__.py``:
as a package, pytest would import it as ``convert`` and shadow the converter itself.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.convert.tiny import cache_root, cached_file

SDIST_VERSION = "0.3.36"
DECISIVE_MARGIN = 0.05
# Keys that record provenance (names, size labels, file-naming heuristics) rather than model facts.
PROVENANCE_PREFIXES = ("general.",)
PROVENANCE_KEEP = {"general.architecture", "general.type", "general.file_type", "general.quantization_version"}


# ---------------------------------------------------------------- logits


def hf_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=False)
    return out.logits[0].float().numpy()


def llama_logits(gguf_path: Path, ids: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    n = len(ids)
    llm = Llama(str(gguf_path), n_ctx=max(64, n), n_batch=max(64, n), n_ubatch=max(64, n), logits_all=True,
                verbose=False, n_threads=2)
    try:
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[:n], dtype=np.float32)
    finally:
        llm.close()


@dataclass(frozen=True)
class Metrics:
    max_abs: float
    mean_abs: float
    min_cosine: float
    decisive: int  # positions where the reference's top-2 margin >= DECISIVE_MARGIN
    argmax_agree: int  # of those, positions with the same argmax

    @property
    def argmax_rate(self) -> float:
        return self.argmax_agree / self.decisive if self.decisive else 1.0


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> Metrics:
    assert reference.shape == candidate.shape, (reference.shape, candidate.shape)
    delta = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    dots = np.sum(reference * candidate, axis=1, dtype=np.float64)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    top2 = np.sort(reference, axis=1)[:, -2:]
    decisive = (top2[:, 1] - top2[:, 0]) >= DECISIVE_MARGIN
    agree = np.argmax(reference, axis=1) == np.argmax(candidate, axis=1)
    return Metrics(
        max_abs=float(delta.max()),
        mean_abs=float(delta.mean()),
        min_cosine=float(np.min(dots / norms)),
        decisive=int(decisive.sum()),
        argmax_agree=int((agree & decisive).sum()),
    )


def assert_no_worse(ours: Metrics, theirs: Metrics, slack: float = 0.10) -> None:
    """The issue's pass rule: 100% argmax at decisive positions, and max/mean |Δ| and min cosine
    no worse than the reference converter's by more than ``slack`` (10%)."""
    assert ours.argmax_agree == ours.decisive, f"argmax differs at decisive positions: {ours}"
    assert ours.max_abs <= theirs.max_abs * (1 + slack) + 1e-6, (ours, theirs)
    assert ours.mean_abs <= theirs.mean_abs * (1 + slack) + 1e-7, (ours, theirs)
    assert (1 - ours.min_cosine) <= (1 - theirs.min_cosine) * (1 + slack) + 1e-6, (ours, theirs)


# ---------------------------------------------------------------- llama.cpp's reference converter


def reference_converter_dir() -> Path:
    """The unpacked llama-cpp-python sdist's ``vendor/llama.cpp`` (downloaded once with pip)."""
    root = cache_root() / f"llama_cpp_python-{SDIST_VERSION}"
    llama_dir = root / f"llama_cpp_python-{SDIST_VERSION}" / "vendor" / "llama.cpp"
    if (llama_dir / "convert_hf_to_gguf.py").is_file():
        return llama_dir
    download = cache_root() / "sdist-download"
    download.mkdir(parents=True, exist_ok=True)
    archive = download / f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
    if not archive.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
             f"llama-cpp-python=={SDIST_VERSION}", "-d", str(download)],
            check=True,
        )
    staging = root.with_name(root.name + f".{os.getpid()}.partial")
    with tarfile.open(archive) as tar:
        wanted = [m for m in tar.getmembers()
                  if "/vendor/llama.cpp/" in m.name and
                  (m.name.endswith("convert_hf_to_gguf.py") or "/conversion/" in m.name or "/gguf-py/" in m.name)]
        tar.extractall(staging, members=wanted, filter="data")
    os.replace(staging, root)
    return llama_dir


def llama_cpp_source(relative: str) -> str:
    """A source file of the pinned sdist's ``vendor/llama.cpp`` (e.g. ``src/llama-arch.cpp``), read from
    the downloaded archive."""
    reference_converter_dir()  # downloads the archive once
    archive = cache_root() / "sdist-download" / f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp/{relative}")
        return member.read().decode("utf-8")


def reference_convert(model_dir: Path, out: Path, outtype: str, mmproj: bool = False,
                      options: tuple[str, ...] = ()) -> Path:
    """Run llama.cpp's ``convert_hf_to_gguf.py`` (its bundled gguf-py) with this interpreter;
    ``mmproj=True`` writes the checkpoint's mmproj instead of the text model (``--mmproj``); ``options``:
    more command-line flags (e.g. ``--sentence-transformers-dense-modules``)."""
    script = reference_converter_dir() / "convert_hf_to_gguf.py"
    result = subprocess.run(
        [sys.executable, str(script), str(model_dir), *(["--mmproj"] if mmproj else []), *options,
         "--outfile", str(out), "--outtype", outtype],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"reference converter failed:\n{result.stderr[-4000:]}")
    return out


def reference_gguf(model_dir: Path, outtype: str, *, label: str | None = None,
                   options: tuple[str, ...] | None = None) -> Path:
    """``reference_convert`` of a (cached) checkpoint, cached as ``ref-<label>-<outtype>`` (label: the
    checkpoint directory's name); the conversion itself takes seconds."""
    recipe = {"model": model_dir.name, "type": outtype, "converter": f"llama-cpp-python {SDIST_VERSION}"}
    if options is not None:
        recipe["options"] = options
    return cached_file(f"ref-{label or model_dir.name}-{outtype}", recipe, ".gguf",
                       lambda path: reference_convert(model_dir, path, outtype, options=options or ()))


# ---------------------------------------------------------------- GGUF comparison


# A small independent GGUF parser (gguf-py's GGUFReader takes ~13 s on a 262k-token vocabulary, and an
# oracle should not share code with the writer it checks). Value type numbers: GGUF v3 spec.
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_TYPE_NAMES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32", 7: "BOOL",
               8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64"}


@dataclass(frozen=True)
class GGUFHeader:
    fields: dict[str, tuple[str, str | None, object]]  # key → (type, array element type, value)
    tensors: dict[str, tuple[str, tuple[int, ...], int, int]]  # name → (GGML type, ggml shape, start, nbytes)


def read_header(path: Path) -> GGUFHeader:
    import mmap
    import struct

    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as handle:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def text() -> str:
        nonlocal pos
        length = take("Q")
        pos += length
        return data[pos - length:pos].decode("utf-8")

    def value(vtype: int):
        if vtype in _SCALAR_FORMATS:
            return take(_SCALAR_FORMATS[vtype])
        if vtype == 8:
            return text()
        raise ValueError(f"{path}: unexpected value type {vtype}")

    assert data[:4] == b"GGUF", path
    pos = 4
    _version, n_tensors, n_kv = take("I"), take("Q"), take("Q")
    fields = {}
    for _ in range(n_kv):
        key, vtype = text(), take("I")
        if vtype == 9:
            item_type, count = take("I"), take("Q")
            if item_type in _SCALAR_FORMATS:
                items = list(take(f"{count}{_SCALAR_FORMATS[item_type]}")) if count > 1 else [take(_SCALAR_FORMATS[item_type])]
            else:
                items = [value(item_type) for _ in range(count)]
            fields[key] = ("ARRAY", _TYPE_NAMES[item_type], items)
        else:
            fields[key] = (_TYPE_NAMES[vtype], None, value(vtype))
    infos = []
    for _ in range(n_tensors):
        name = text()
        n_dims = take("I")
        shape = tuple(take("Q") for _ in range(n_dims))
        infos.append((name, shape, take("I"), take("Q")))
    alignment = int(fields.get("general.alignment", (None, None, 32))[2])
    data_start = (pos + alignment - 1) // alignment * alignment
    tensors = {}
    for name, shape, ggml_type, offset in infos:
        qtype = GGMLQuantizationType(ggml_type)
        block, type_size = GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(shape, dtype=np.int64)) // block * type_size
        tensors[name] = (qtype.name, shape, data_start + offset, nbytes)
    data.close()
    return GGUFHeader(fields, tensors)


def gguf_fields(path: Path) -> dict[str, tuple[str, object]]:
    """key → (GGUF value type name, python value; arrays as lists, strings decoded)."""
    return {key: (vtype, value) for key, (vtype, _, value) in read_header(path).fields.items()}


def gguf_tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """name → (GGML type, ggml shape, sha256 of the data bytes)."""
    import mmap

    header = read_header(path)
    out = {}
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for name, (qtype, shape, start, nbytes) in header.tensors.items():
            out[name] = (qtype, tuple(int(n) for n in shape), hashlib.sha256(data[start:start + nbytes]).hexdigest())
    return out


def is_provenance(key: str) -> bool:
    return key.startswith(PROVENANCE_PREFIXES) and key not in PROVENANCE_KEEP


def gguf_differences(ours: Path, theirs: Path, allowed: dict[str, str] | None = None) -> list[str]:
    """Every difference in tensors and non-provenance metadata, except keys listed in ``allowed``
    (key → the documented reason for the deliberate difference)."""
    allowed = allowed or {}
    problems: list[str] = []
    a, b = read_header(ours).fields, read_header(theirs).fields
    for key in sorted(set(a) | set(b)):
        if is_provenance(key) or key in allowed:
            continue
        if key not in a:
            problems.append(f"missing key {key} = {str(b[key])[:80]}")
        elif key not in b:
            problems.append(f"extra key {key} = {str(a[key])[:80]}")
        elif a[key] != b[key]:
            problems.append(f"key {key}: ours {str(a[key])[:80]} != reference {str(b[key])[:80]}")
    ta, tb = gguf_tensors(ours), gguf_tensors(theirs)
    for name in sorted(set(ta) | set(tb)):
        if name not in ta:
            problems.append(f"missing tensor {name}")
        elif name not in tb:
            problems.append(f"extra tensor {name}")
        elif ta[name][:2] != tb[name][:2]:
            problems.append(f"tensor {name}: ours {ta[name][:2]} != reference {tb[name][:2]}")
        elif ta[name][2] != tb[name][2]:
            problems.append(f"tensor {name}: bytes differ")
    return problems
