"""Oracles for converter tests: transformers logits, llama.cpp logits, llama.cpp's reference converter,
and GGUF-vs-GGUF comparison. Import from tests of any generation.

* ``hf_logits(model_dir, ids)`` — transformers (float32, eager attention, needed for Gemma 2 softcapping)
  on the exact token ids, all positions.
* ``llama_logits(gguf_path, ids)`` — llama.cpp through llama-cpp-python with ``logits_all=True``.
* ``compare_logits(reference, candidate)`` → :class:`Metrics`: max |Δ|, mean |Δ|, minimum per-position
  cosine, and argmax agreement at *decisive* positions (reference top-2 margin ≥ 0.05).
* ``reference_convert(model_dir, out, outtype)`` — llama.cpp's own ``convert_hf_to_gguf.py`` from the
  llama-cpp-python 0.3.36 sdist (``pip download`` once into the test cache), run with this venv's python
  (it needs torch; the converter under test does not).
* ``gguf_differences(a, b, ignore_keys)`` — tensor names/types/shapes/bytes and metadata compared with
  gguf-py's reader; returns human-readable differences (empty = same).
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

from tests.convert.tiny import cache_root

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


def reference_convert(model_dir: Path, out: Path, outtype: str) -> Path:
    """Run llama.cpp's ``convert_hf_to_gguf.py`` (its bundled gguf-py) with this interpreter."""
    script = reference_converter_dir() / "convert_hf_to_gguf.py"
    result = subprocess.run(
        [sys.executable, str(script), str(model_dir), "--outfile", str(out), "--outtype", outtype],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"reference converter failed:\n{result.stderr[-4000:]}")
    return out


# ---------------------------------------------------------------- GGUF comparison


def read_gguf(path: Path):
    from gguf import GGUFReader

    return GGUFReader(path)


def gguf_fields(path: Path) -> dict[str, object]:
    """key → python value (arrays as lists, strings decoded)."""
    reader = read_gguf(path)
    values = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        values[key] = (fld.types[0].name, fld.contents())
    return values


def gguf_tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], str]]:
    """name → (GGML type, ggml shape, sha256 of the data bytes)."""
    reader = read_gguf(path)
    return {
        t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape), hashlib.sha256(np.asarray(t.data).data).hexdigest())
        for t in reader.tensors
    }


def is_provenance(key: str) -> bool:
    return key.startswith(PROVENANCE_PREFIXES) and key not in PROVENANCE_KEEP


def gguf_differences(ours: Path, theirs: Path, allowed: dict[str, str] | None = None) -> list[str]:
    """Every difference in tensors and non-provenance metadata, except keys listed in ``allowed``
    (key → the documented reason for the deliberate difference)."""
    allowed = allowed or {}
    problems: list[str] = []
    a, b = gguf_fields(ours), gguf_fields(theirs)
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
