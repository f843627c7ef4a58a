"""Loading a model with llama-cpp-python: without llama.cpp's extra buffer types on an AMX CPU unless
the user opts in (issue 14), a tokenizer-only load, and the build record of the installed wheel."""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from pathlib import Path

from gemma_edge.llama import ggml, llama_cpp
from gemma_edge.llama.logs import silence_llama_logs
from gemma_edge.model import read_model_facts

# LLAMA_BUILD_RECORD in a venv: what scripts/build-llama-wheel.sh recorded about the installed wheel
# (flags, the CPU features it was compiled for, its smoke run), copied there by scripts/setup-venv.sh.
LLAMA_BUILD_RECORD = ".llama-build.json"
# =1: let llama.cpp put weights in its AMX buffer type on an AMX CPU (off by default: issue 14).
AMX_OPT_IN = "GEMMA_EDGE_AMX"
_LOAD_LOCK = threading.RLock()  # re-entrant: a load inside without_extra_buffers() takes it again


def extra_buffers_allowed() -> bool:
    """False when llama.cpp would put weights in its AMX buffer type and the user did not opt in with
    GEMMA_EDGE_AMX=1: on some Xeons its first AMX matrix multiplication dies (issue 14)."""
    return os.environ.get(AMX_OPT_IN) == "1" or "AMX" not in ggml.cpu_extra_buffer_types()


def load_llama(path: str, extra_buffers: bool | None = None, **options):
    """`llama_cpp.Llama(path, **options)`, loaded without llama.cpp's extra buffer types (AMX, and
    with it the CPU REPACK layouts) when `extra_buffers` is False (None: `extra_buffers_allowed()`)."""
    lc = llama_cpp()
    if extra_buffers if extra_buffers is not None else extra_buffers_allowed():
        return lc.Llama(path, **options)
    with without_extra_buffers():
        return lc.Llama(path, **options)


@contextlib.contextmanager
def without_extra_buffers():
    """Models loaded inside get `llama_model_params.use_extra_bufts = False`: weights in plain CPU
    buffers (no AMX, no REPACK layouts). llama-cpp-python 0.3.36 has no argument for it, so its
    default-params function is wrapped meanwhile, under a lock so concurrent loads do not interleave."""
    bindings = llama_cpp().llama_cpp
    with _LOAD_LOCK:
        original = bindings.llama_model_default_params

        def plain_buffers():
            params = original()
            params.use_extra_bufts = False
            return params

        bindings.llama_model_default_params = plain_buffers
        try:
            yield
        finally:
            bindings.llama_model_default_params = original


def open_vocabulary(path: str | Path):
    """A llama.cpp Llama holding only the GGUF's tokenizer (no weights), quietly. The header is checked
    first (read_model_facts), as for every GGUF llama.cpp opens: a malformed file is an InvalidModelError."""
    read_model_facts(path)
    silence_llama_logs()
    return llama_cpp().Llama(str(path), vocab_only=True, verbose=False)


def recorded_build() -> dict | None:
    """The build record of the llama-cpp-python in this venv (None: not installed by our scripts)."""
    try:
        return json.loads((Path(sys.prefix) / LLAMA_BUILD_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
