"""ggml's CPU backend through ctypes: its libraries inside llama-cpp-python, what the build was
compiled for, and its extra weight buffer types."""
from __future__ import annotations

import ctypes
from pathlib import Path

from gemma_edge.errors import GemmaEdgeError
from gemma_edge.llama import llama_cpp


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
