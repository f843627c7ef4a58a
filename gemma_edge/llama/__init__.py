"""The one import of llama-cpp-python, with a version check and a clear message when it is wrong; ggml's
CPU backend through ctypes (what the build was compiled for, its extra buffer types); loading a model
without the AMX buffer type unless the user opts in (issue 14)."""
from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import json
import os
import sys
import threading
from pathlib import Path

from gemma_edge.errors import GemmaEdgeError

REQUIRED_VERSION = "0.3.36"  # keep equal to pyproject.toml's pin


def llama_cpp():
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


# -- ggml's CPU backend, through ctypes ------------------------------------------------------------

# LLAMA_BUILD_RECORD in a venv: what scripts/build-llama-wheel.sh recorded about the installed wheel
# (flags, the CPU features it was compiled for, its smoke run), copied there by scripts/setup-venv.sh.
LLAMA_BUILD_RECORD = ".llama-build.json"
# =1: let llama.cpp put weights in its AMX buffer type on an AMX CPU (off by default: issue 14).
AMX_OPT_IN = "GEMMA_EDGE_AMX"
_LOAD_LOCK = threading.RLock()  # re-entrant: a load inside without_extra_buffers() takes it again


def ggml_library(name: str) -> ctypes.CDLL:
    """One of ggml's libraries inside the installed llama-cpp-python, by the file name libllama was
    linked against (the .so.0 names: the same loaded objects, hence the same backend registry)."""
    lib_dir = Path(llama_cpp().__file__).parent / "lib"
    for file in (f"lib{name}.so.0", f"lib{name}.dylib", f"lib{name}.so", f"{name}.dll"):
        if (lib_dir / file).exists():
            return ctypes.CDLL(str(lib_dir / file))
    raise GemmaEdgeError(f"llama-cpp-python has no {name} library in {lib_dir}; "
                         "reinstall it with scripts/setup-venv.sh")


class _Feature(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


def _cpu_proc(name: bytes):
    """(CPU backend registry, address of its function `name`)."""
    ggml, base = ggml_library("ggml"), ggml_library("ggml-base")
    ggml.ggml_backend_reg_by_name.restype, ggml.ggml_backend_reg_by_name.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    get_proc = base.ggml_backend_reg_get_proc_address
    get_proc.restype, get_proc.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]
    reg = ggml.ggml_backend_reg_by_name(b"CPU")
    return reg, (get_proc(reg, name) if reg else None)


def cpu_backend_features() -> dict[str, str]:
    """What the loaded llama.cpp's CPU backend was compiled for ({"AVX2": "1", "REPACK": "1", …}),
    from its `ggml_backend_get_features`, the list llama_print_system_info() prints."""
    reg, address = _cpu_proc(b"ggml_backend_get_features")
    if not address:
        return {}
    features = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)(address)(reg)
    found, i = {}, 0
    while features[i].name:
        found[features[i].name.decode()] = features[i].value.decode()
        i += 1
    return found


def cpu_extra_buffer_types() -> list[str]:
    """Names of the CPU backend's extra weight buffer types ("AMX", "CPU_REPACK", …). llama.cpp
    offers "AMX" only when compiled for AMX and the kernel granted this process the AMX state."""
    base = ggml_library("ggml-base")
    reg, address = _cpu_proc(b"ggml_backend_dev_get_extra_bufts")
    if not address:
        return []
    base.ggml_backend_reg_dev_get.restype = ctypes.c_void_p
    base.ggml_backend_reg_dev_get.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    base.ggml_backend_buft_name.restype, base.ggml_backend_buft_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(address)(
        base.ggml_backend_reg_dev_get(reg, 0))
    names, i = [], 0
    while bufts[i]:
        names.append(base.ggml_backend_buft_name(bufts[i]).decode())
        i += 1
    return names


def extra_buffers_allowed() -> bool:
    """False when llama.cpp would put weights in its AMX buffer type and the user did not opt in with
    GEMMA_EDGE_AMX=1: on some Xeons its first AMX matrix multiplication dies (issue 14)."""
    return os.environ.get(AMX_OPT_IN) == "1" or "AMX" not in cpu_extra_buffer_types()


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


def recorded_build() -> dict | None:
    """The build record of the llama-cpp-python in this venv (None: not installed by our scripts)."""
    try:
        return json.loads((Path(sys.prefix) / LLAMA_BUILD_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
