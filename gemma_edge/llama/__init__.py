"""gemma-edge's one door to llama.cpp: the only package that imports llama-cpp-python.

`llama_cpp()` is the one import of it, with the version check and a clear message when it is missing
or not the pinned version. The modules here, each one job: `loader` (load a model, the AMX guard, the
build record), `ggml` (ggml's CPU backend through ctypes), `internals` (the private parts of `Llama`
the runtime relies on), `logs`, `tokenizer` (injection-safe tokenization), `mtmd` (the multimodal
projector), `grammar` (GBNF), `quantize`, and `engine` (load, KV reuse, decode)."""
from __future__ import annotations

import importlib.metadata

from gemma_edge.errors import GemmaEdgeError

REQUIRED_VERSION = "0.3.36"  # keep equal to pyproject.toml's pin


def llama_cpp():
    """The `llama_cpp` module, once its version is checked."""
    try:
        import llama_cpp as module
    except ImportError as e:
        raise GemmaEdgeError(
            f"llama-cpp-python is not installed ({e}); run `make demo` or "
            f"`scripts/setup-venv.sh` to build it ({REQUIRED_VERSION}, RPC backend on)") from None
    installed = getattr(module, "__version__", None) or importlib.metadata.version("llama-cpp-python")
    if installed != REQUIRED_VERSION:
        raise GemmaEdgeError(
            f"llama-cpp-python {installed} is installed but gemma-edge needs {REQUIRED_VERSION}; "
            "run `scripts/setup-venv.sh` (it builds the pinned version from source)")
    return module
