"""The converter's Python API: one call from a Hugging Face directory to a (quantized) GGUF file, plus
the ``mmproj-<output stem>.gguf`` next to it when the checkpoint has a vision/audio tower llama.cpp runs.

``convert_checkpoint`` writes F32/F16/BF16/Q8_0 directly; any other llama.cpp file type is produced by
writing a lossless intermediate GGUF next to the output (the checkpoint's own precision) and running
llama.cpp's quantizer on it; the intermediate is always removed.

Both files are planned before a byte is written and written under temporary names; they are renamed
into place together only when both succeeded, so any failure leaves neither on disk.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from convert.checkpoint import open_checkpoint, read_config
from convert.family import refuse_unrunnable
from convert.generations.base import UnsupportedConfig
from convert.mmproj.pipeline import MmprojPlan, plan_mmproj, write_mmproj
from convert.pipeline import Summary, peak_rss_mb, plan_conversion, write_plan
from convert.quantize import QuantizeError, file_types, quantize
from convert.storage import NATIVE_TYPES
from convert.writer import OutputExists, TensorToWrite, temporary_path

# clip.cpp reads mmproj weights through generic ggml ops: F32/F16/BF16/Q8_0 work for every tensor of
# the Gemma encoders, while k-quants need row lengths in multiples of 256 that vision towers lack.
MMPROJ_TYPES = ("f32", "f16", "bf16", "q8_0")


class MmprojUnavailable(UnsupportedConfig):
    """An mmproj was required (``mmproj=True``) but the checkpoint has no tower the converter can write."""


def intermediate_type(storage_dtypes: set[str]) -> str:
    """Lossless input for llama.cpp's quantizer: the checkpoint's own precision."""
    if storage_dtypes <= {"BF16"}:
        return "bf16"
    if storage_dtypes <= {"F16"}:
        return "f16"
    return "f32"


def mmproj_path(output: Path) -> Path:
    """Where the mmproj of ``output`` goes: ``mmproj-<output stem>.gguf`` in the same directory."""
    return output.with_name(f"mmproj-{output.stem}.gguf")


def default_mmproj_type(type_name: str) -> str:
    """F32 next to an F32 text model (exact comparisons), else F16 (the reference converter's default)."""
    return "f32" if type_name.lower() == "f32" else "f16"


def convert_checkpoint(
    hf_dir: str | Path,
    output: str | Path,
    type_name: str = "f16",
    force: bool = False,
    threads: int = 0,
    on_tensor: Callable[[TensorToWrite], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
    mmproj: bool | None = None,
    mmproj_type: str | None = None,
) -> Summary:
    """Convert ``hf_dir`` to ``output``; ``on_plan(n_tensors)`` then ``on_tensor`` report progress.

    ``mmproj``: None (default) writes ``mmproj-<stem>.gguf`` when the checkpoint has a supported
    vision/audio tower and notes why not otherwise; True requires it (``MmprojUnavailable`` if
    impossible); False skips it. ``summary.mmproj`` is the path written, or None.
    """
    started = time.monotonic()
    hf_dir, output, type_name = Path(hf_dir), Path(output), type_name.lower()
    if type_name not in NATIVE_TYPES and type_name not in file_types():
        raise QuantizeError(f"unknown output type {type_name!r}; use f32, f16, bf16, q8_0 or a llama.cpp file type")
    mmproj_type = (mmproj_type or default_mmproj_type(type_name)).lower()
    if mmproj_type not in MMPROJ_TYPES:
        raise QuantizeError(f"unknown mmproj type {mmproj_type!r}; use {', '.join(MMPROJ_TYPES)}")
    if output.exists() and not force:
        raise OutputExists(f"{output} exists (use --force to overwrite)")
    if (hf_dir / "config.json").is_file():  # from config.json alone, before the weights are looked for
        refuse_unrunnable(read_config(hf_dir)[2])
    checkpoint = open_checkpoint(hf_dir)
    direct = type_name in NATIVE_TYPES
    first_type = type_name if direct else intermediate_type(checkpoint.storage_dtypes)
    name = hf_dir.resolve().name
    plan = plan_conversion(checkpoint, NATIVE_TYPES[first_type], name=name)
    mm = _plan_mmproj(checkpoint, plan.hparams, mmproj, mmproj_type, name)
    mm_output = mmproj_path(output)
    if not mm.empty and mm_output.exists() and not force:
        raise OutputExists(f"{mm_output} exists (use --force to overwrite)")
    if on_plan is not None:
        on_plan(len(plan.tensors) + len(mm.tensors))

    staged_text, staged_mm = _staging(output), _staging(mm_output)
    try:
        with _errors_name(output):
            if direct:
                summary = write_plan(plan, staged_text, True, on_tensor)
            else:
                intermediate = temporary_path(output).with_suffix(f".{first_type}.gguf")
                try:
                    summary = write_plan(plan, intermediate, True, on_tensor)
                    quantize(intermediate, staged_text, type_name, force=True, threads=threads)
                finally:
                    intermediate.unlink(missing_ok=True)
            summary.bytes = staged_text.stat().st_size
        if not mm.empty:
            with _errors_name(mm_output):
                summary.mmproj_bytes = write_mmproj(mm, staged_mm, True, on_tensor)
            summary.mmproj_tensors = len(mm.tensors)
        _publish([(staged_text, output)] + ([] if mm.empty else [(staged_mm, mm_output)]))
    finally:
        staged_text.unlink(missing_ok=True)
        staged_mm.unlink(missing_ok=True)
    summary.mmproj = None if mm.empty else mm_output
    # with an mmproj written, the text GGUF's "towers skipped" note does not apply; config notes always do
    summary.notes = plan.hparams.notes + mm.notes if not mm.empty else plan.notes + mm.notes
    summary.seconds = time.monotonic() - started
    summary.peak_rss_mb = peak_rss_mb()
    return summary


def _plan_mmproj(checkpoint, text_hparams, mmproj: bool | None, mmproj_type: str, name: str) -> MmprojPlan:
    if mmproj is False:
        return MmprojPlan([], [], [])
    mm = plan_mmproj(checkpoint, text_hparams, NATIVE_TYPES[mmproj_type], name=name)
    if mmproj and mm.empty:
        reason = "; ".join(mm.notes) or "the checkpoint has no vision or audio tower"
        raise MmprojUnavailable(f"cannot write an mmproj: {reason}")
    return mm


@contextmanager
def _errors_name(final: Path):
    """File-system errors (a full disk...) name the file the user asked for, not its temporary name."""
    try:
        yield
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(final)) from None


def _staging(path: Path) -> Path:
    """A finished file waiting for its sibling before both are renamed into place."""
    return path.with_name(f".{path.name}.{os.getpid()}.staged")


def _publish(pairs: list[tuple[Path, Path]]) -> None:
    """Rename every staged file into place; if one rename fails, remove those already renamed."""
    done: list[Path] = []
    try:
        for staged, final in pairs:
            with _errors_name(final):
                os.replace(staged, final)
            done.append(final)
    except BaseException:
        for final in done:
            final.unlink(missing_ok=True)
        raise
