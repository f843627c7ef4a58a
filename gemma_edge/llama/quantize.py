"""llama.cpp's own quantizer (`llama_model_quantize`): the file types it knows, by name, and one run of
it with its per-tensor log kept off the terminal. Paths, checks and the atomic write are the caller's
(convert.quantize)."""
from __future__ import annotations

import ctypes
import importlib
import logging
import os
from pathlib import Path

from gemma_edge.llama import llama_cpp


def file_types() -> dict[str, int]:
    """llama.cpp file type name (lower case, ``mostly_``/``all_`` dropped) → llama_ftype value, derived from
    llama-cpp-python's ``LLAMA_FTYPE_*`` constants (new types need no code here)."""
    lc = llama_cpp()
    types = {}
    for attribute in dir(lc):
        for prefix in ("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"):
            if attribute.startswith(prefix):
                types[attribute[len(prefix):].lower()] = int(getattr(lc, attribute))
    return types


def run_quantizer(source: Path, destination: Path, ftype: int, *, threads: int, allow_requantize: bool) -> int:
    """Quantize `source` into `destination` as file type `ftype`; returns llama.cpp's status (0: done)."""
    lc = llama_cpp()
    params = lc.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    params.allow_requantize = allow_requantize
    # llama-cpp-python routes llama.cpp's log through this logger (installed by llama_cpp._logger); the
    # quantizer's per-tensor lines and fallback warnings are noise on a CLI whose errors are one line
    importlib.import_module("llama_cpp._logger")  # installs that Python log callback

    llama_log = logging.getLogger("llama-cpp-python")
    previous_level = llama_log.level
    llama_log.setLevel(logging.CRITICAL + 1)
    try:
        return lc.llama_model_quantize(os.fsencode(source), os.fsencode(destination), ctypes.byref(params))
    finally:
        llama_log.setLevel(previous_level)
