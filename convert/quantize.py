"""GGUF → quantized GGUF with llama.cpp's own quantizer (``llama_model_quantize`` via llama-cpp-python).

Any llama.cpp file type is accepted by name (``q4_k_m``, ``iq4_nl``, ``q6_k``, ``f16``...): the names
are derived from llama-cpp-python's ``LLAMA_FTYPE_*`` constants, so new types need no code here.
The input is read by gemma_edge's validating GGUF reader first (a malformed file is refused with
InvalidModelError, before llama.cpp could crash on it). The output is written to a temporary file and
renamed into place only when the quantizer succeeds.
"""
from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

from convert.writer import OutputExists, temporary_path


class QuantizeError(RuntimeError):
    pass


def file_types() -> dict[str, int]:
    """llama.cpp file type name (lower case, ``mostly_``/``all_`` dropped) → llama_ftype value."""
    import llama_cpp

    types = {}
    for attribute in dir(llama_cpp):
        for prefix in ("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"):
            if attribute.startswith(prefix):
                types[attribute[len(prefix):].lower()] = int(getattr(llama_cpp, attribute))
    return types


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
    import llama_cpp

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
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = types[key]
    params.nthread = threads
    params.allow_requantize = allow_requantize
    # llama-cpp-python routes llama.cpp's log through this logger (installed by llama_cpp._logger); the
    # quantizer's per-tensor lines and fallback warnings are noise on a CLI whose errors are one line
    import llama_cpp._logger  # noqa: F401  (installs the Python log callback)

    llama_log = logging.getLogger("llama-cpp-python")
    previous_level = llama_log.level
    llama_log.setLevel(logging.CRITICAL + 1)
    try:
        status = llama_cpp.llama_model_quantize(
            os.fsencode(source), os.fsencode(partial), ctypes.byref(params)
        )
        if status != 0:
            hint = "" if allow_requantize else "; an already quantized input needs --allow-requantize"
            raise QuantizeError(f"llama.cpp could not quantize {source.name} to {key} (status {status}{hint})")
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        llama_log.setLevel(previous_level)
