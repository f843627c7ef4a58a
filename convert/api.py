"""The converter's Python API: one call from a Hugging Face directory to a (quantized) GGUF file.

``convert_checkpoint`` writes F32/F16/BF16/Q8_0 directly; any other llama.cpp file type is produced by
writing a lossless intermediate GGUF next to the output (the checkpoint's own precision) and running
llama.cpp's quantizer on it; the intermediate is always removed.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from convert.checkpoint import open_checkpoint
from convert.pipeline import Summary, peak_rss_mb, plan_conversion, write_plan
from convert.quantize import QuantizeError, file_types, quantize
from convert.storage import NATIVE_TYPES
from convert.writer import OutputExists, TensorToWrite, temporary_path


def intermediate_type(storage_dtypes: set[str]) -> str:
    """Lossless input for llama.cpp's quantizer: the checkpoint's own precision."""
    if storage_dtypes <= {"BF16"}:
        return "bf16"
    if storage_dtypes <= {"F16"}:
        return "f16"
    return "f32"


def convert_checkpoint(
    hf_dir: str | Path,
    output: str | Path,
    type_name: str = "f16",
    force: bool = False,
    threads: int = 0,
    on_tensor: Callable[[TensorToWrite], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> Summary:
    """Convert ``hf_dir`` to ``output``; ``on_plan(n_tensors)`` then ``on_tensor`` report progress."""
    started = time.monotonic()
    hf_dir, output, type_name = Path(hf_dir), Path(output), type_name.lower()
    if type_name not in NATIVE_TYPES and type_name not in file_types():
        raise QuantizeError(f"unknown output type {type_name!r}; use f32, f16, bf16, q8_0 or a llama.cpp file type")
    if output.exists() and not force:
        raise OutputExists(f"{output} exists (use --force to overwrite)")
    checkpoint = open_checkpoint(hf_dir)
    direct = type_name in NATIVE_TYPES
    first_type = type_name if direct else intermediate_type(checkpoint.storage_dtypes)
    plan = plan_conversion(checkpoint, NATIVE_TYPES[first_type], name=hf_dir.resolve().name)
    if on_plan is not None:
        on_plan(len(plan.tensors))
    if direct:
        return write_plan(plan, output, force, on_tensor)
    intermediate = temporary_path(output).with_suffix(f".{first_type}.gguf")
    try:
        summary = write_plan(plan, intermediate, True, on_tensor)
        quantize(intermediate, output, type_name, force=force, threads=threads)
    finally:
        intermediate.unlink(missing_ok=True)
    summary.bytes = output.stat().st_size
    summary.seconds = time.monotonic() - started
    summary.peak_rss_mb = peak_rss_mb()
    return summary
