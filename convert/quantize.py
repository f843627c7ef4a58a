"""GGUF → quantized GGUF with llama.cpp's own quantizer (``gemma_edge.llama.quantize``).

Any llama.cpp file type is accepted by name (``q4_k_m``, ``iq4_nl``, ``q6_k``, ``f16``...): the names
are derived from llama-cpp-python's ``LLAMA_FTYPE_*`` constants, so new types need no code here.
The input is read by gemma_edge's validating GGUF reader first (a malformed file is refused with
InvalidModelError, before llama.cpp could crash on it). The output is written to a temporary file and
renamed into place only when the quantizer succeeds.
"""
from __future__ import annotations

import os
from pathlib import Path

from convert.writer import OutputExists, temporary_path
from gemma_edge.llama.quantize import file_types, run_quantizer


class QuantizeError(RuntimeError):
    pass


def _check_input(source: Path) -> None:
    from gemma_edge.gguf_file import GGUFFile
    from gemma_edge.gguf_keys import check_vocabulary

    gguf = GGUFFile(source)
    try:
        check_vocabulary(gguf)
    finally:
        gguf.close()


def quantize(source: Path, destination: Path, type_name: str, force: bool = False, threads: int = 0,
             allow_requantize: bool = False) -> None:
    types = file_types()
    key = type_name.lower()
    if key not in types:
        raise QuantizeError(f"unknown llama.cpp file type {type_name!r}; known: {', '.join(sorted(types))}")
    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise QuantizeError(f"{source} does not exist")
    _check_input(source)
    if destination.exists() and not force:
        raise OutputExists(f"{destination} exists (use --force to overwrite)")
    partial = temporary_path(destination)
    try:
        status = run_quantizer(source, partial, types[key], threads=threads, allow_requantize=allow_requantize)
        if status != 0:
            hint = "" if allow_requantize else "; an already quantized input needs --allow-requantize"
            raise QuantizeError(f"llama.cpp could not quantize {source.name} to {key} (status {status}{hint})")
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
