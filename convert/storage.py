"""Which GGML type each tensor is stored as, and encoding float32 rows into it (docs/converter-spec.md §1.3).

The converter itself writes only the lossless-ish types numpy can produce bit-exactly like llama.cpp's
reference (F32, F16, BF16, Q8_0, via gguf-py's ``quants`` — the code the reference runs); K- and
IQ-quants are left to llama.cpp's own quantizer (``convert/quantize.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType, quants


@dataclass(frozen=True)
class OutputType:
    name: str
    file_type: LlamaFileType  # general.file_type
    tensor_type: GGMLQuantizationType  # what quantizable tensors become


NATIVE_TYPES: dict[str, OutputType] = {
    "f32": OutputType("f32", LlamaFileType.ALL_F32, GGMLQuantizationType.F32),
    "f16": OutputType("f16", LlamaFileType.MOSTLY_F16, GGMLQuantizationType.F16),
    "bf16": OutputType("bf16", LlamaFileType.MOSTLY_BF16, GGMLQuantizationType.BF16),
    "q8_0": OutputType("q8_0", LlamaFileType.MOSTLY_Q8_0, GGMLQuantizationType.Q8_0),
}


def storage_type(name: str, shape: tuple[int, ...], keep_f32: bool, output: OutputType) -> GGMLQuantizationType:
    """llama.cpp's policy: <= 1-D tensors, ``*_norm.weight`` and non-``.weight`` names stay F32 (the
    runtime reads them as F32); a row length that does not fill whole blocks falls back to F16."""
    if keep_f32 or len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return GGMLQuantizationType.F32
    block, _ = GGML_QUANT_SIZES[output.tensor_type]
    if shape[-1] % block != 0:
        return GGMLQuantizationType.F16
    return output.tensor_type


def encoded_nbytes(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    block, type_size = GGML_QUANT_SIZES[qtype]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    return rows * (shape[-1] // block) * type_size


def encode(rows: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """float32 rows → the bytes of ``qtype`` (row-wise, so encoding chunk by chunk equals encoding whole)."""
    if qtype == GGMLQuantizationType.F32:
        return rows
    if qtype == GGMLQuantizationType.F16:
        return rows.astype(np.float16)
    return quants.quantize(rows, qtype)
