"""ggml's backend registry and RPC backend (ggml-rpc) through ctypes: list devices, register workers,
serve this CPU as a worker, and time a link with a tensor sent up and down.

llama-cpp-python exposes none of this, so the few ggml functions needed are bound on the very
libraries it ships (loaded by their sonames, so the registry is the one libllama uses). What to do
with them (placement, supervision, link estimates) is in gemma_edge.rpc."""
from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from typing import Sequence

from gemma_edge.errors import RpcError
from gemma_edge.llama import llama_cpp
from gemma_edge.llama.ggml import ggml_library

DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
PROBE_BYTES = 16 << 20
PROBE_ROUNDS = 20


class _GgmlInitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


class _Ggml:
    """The ggml backend-registry and RPC functions, from the libraries llama-cpp-python loaded."""

    def __init__(self):
        if not llama_cpp().llama_supports_rpc():
            raise RpcError("this llama-cpp-python build has no RPC backend: rebuild it with "
                           "CMAKE_ARGS=-DGGML_RPC=on (scripts/setup-venv.sh does)")
        base, ggml, rpc = ggml_library("ggml-base"), ggml_library("ggml"), ggml_library("ggml-rpc")
        p, sz, cstr = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        self._bind(ggml, "ggml_backend_dev_count", sz, [])
        self._bind(ggml, "ggml_backend_dev_get", p, [sz])
        self._bind(ggml, "ggml_backend_dev_by_type", p, [ctypes.c_int])
        self._bind(ggml, "ggml_backend_register", None, [p])
        self._bind(base, "ggml_backend_dev_name", cstr, [p])
        self._bind(base, "ggml_backend_dev_description", cstr, [p])
        self._bind(base, "ggml_backend_dev_memory", None, [p, ctypes.POINTER(sz), ctypes.POINTER(sz)])
        self._bind(base, "ggml_backend_dev_type", ctypes.c_int, [p])
        self._bind(base, "ggml_backend_dev_backend_reg", p, [p])
        self._bind(base, "ggml_backend_reg_name", cstr, [p])
        self._bind(base, "ggml_init", p, [_GgmlInitParams])
        self._bind(base, "ggml_new_tensor_1d", p, [p, ctypes.c_int, ctypes.c_int64])
        self._bind(base, "ggml_free", None, [p])
        self._bind(base, "ggml_backend_alloc_ctx_tensors_from_buft", p, [p, p])
        self._bind(base, "ggml_backend_buffer_free", None, [p])
        self._bind(base, "ggml_backend_tensor_set", None, [p, p, sz, sz])
        self._bind(base, "ggml_backend_tensor_get", None, [p, p, sz, sz])
        self._bind(rpc, "ggml_backend_rpc_start_server", None, [cstr, cstr, sz, sz, ctypes.POINTER(p)])
        self._bind(rpc, "ggml_backend_rpc_add_server", p, [cstr])
        self._bind(rpc, "ggml_backend_rpc_buffer_type", p, [cstr, ctypes.c_uint32])
        self._bind(rpc, "ggml_backend_rpc_get_device_memory", None,
                   [cstr, ctypes.c_uint32, ctypes.POINTER(sz), ctypes.POINTER(sz)])
        self.registered: set[str] = set()

    def _bind(self, lib, name, restype, argtypes):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
        setattr(self, name.removeprefix("ggml_").removeprefix("backend_"), fn)

    def memory(self, dev) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        return free.value, total.value


_GGML: _Ggml | None = None


def ggml() -> _Ggml:
    global _GGML
    if _GGML is None:
        _GGML = _Ggml()
    return _GGML


def check_support() -> None:
    """Raise a one-line RpcError when the installed llama-cpp-python was built without RPC."""
    ggml()


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    type: str
    backend: str
    free: int
    total: int


def devices() -> list[Device]:
    """Every device in ggml's backend registry (the local CPU and each registered worker's devices)."""
    g = ggml()
    found = []
    for i in range(g.dev_count()):
        dev = g.dev_get(i)
        free, total = g.memory(dev)
        found.append(Device(g.dev_name(dev).decode(), g.dev_description(dev).decode(),
                            DEVICE_TYPES.get(g.dev_type(dev), "other"),
                            g.reg_name(g.dev_backend_reg(dev)).decode(), free, total))
    return found


def register(endpoints: Sequence[str]) -> list[Device]:
    """Register reachable workers with the backend registry (llama.cpp then uses them for every model
    this process loads; they cannot be unregistered); returns their devices in registry order. A worker
    that vanishes later aborts this process (ggml-rpc's GGML_ABORT)."""
    g = ggml()
    for endpoint in endpoints:
        if endpoint in g.registered:
            continue
        reg = g.rpc_add_server(endpoint.encode())
        if not reg:
            raise RpcError(f"RPC worker {endpoint} offers no device")
        g.register(reg)
        g.registered.add(endpoint)
    return [d for d in devices() if d.backend == "RPC"]


def serve_cpu(endpoint: str, *, threads: int, cache_dir: str | None = None) -> None:
    """Run ggml's RPC server on the local CPU at `endpoint` ("host:port", "[v6]:port"). Blocks; returns
    only if the server could not start."""
    g = ggml()
    cpu = g.dev_by_type(0)
    if not cpu:
        raise RpcError("no CPU backend in this llama.cpp build")
    devs = (ctypes.c_void_p * 1)(cpu)
    g.rpc_start_server(endpoint.encode(), cache_dir.encode() if cache_dir else None, threads, 1, devs)


def measure_link(endpoint: str) -> dict:
    """Round-trip time (device-memory queries) and bandwidth (a 16 MB tensor up and down) through
    ggml-rpc itself, and the worker's memory. A failing worker aborts the process: run it in a child."""
    g = ggml()
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    query = lambda: g.rpc_get_device_memory(endpoint.encode(), 0, ctypes.byref(free), ctypes.byref(total))  # noqa: E731
    query()  # connects
    rtts = []
    for _ in range(PROBE_ROUNDS):
        start = time.perf_counter()
        query()
        rtts.append(time.perf_counter() - start)
    ctx = g.init(_GgmlInitParams(1 << 20, None, True))
    tensor = g.new_tensor_1d(ctx, 0, PROBE_BYTES // 4)  # GGML_TYPE_F32
    buffer = g.alloc_ctx_tensors_from_buft(ctx, g.rpc_buffer_type(endpoint.encode(), 0))
    data = ctypes.create_string_buffer(os.urandom(PROBE_BYTES), PROBE_BYTES)
    up, down = [], []
    try:
        for _ in range(3):
            start = time.perf_counter()
            g.tensor_set(tensor, data, 0, PROBE_BYTES)
            query()  # set_tensor does not answer: the next answered command marks its arrival
            up.append(time.perf_counter() - start)
            start = time.perf_counter()
            g.tensor_get(tensor, data, 0, PROBE_BYTES)
            down.append(time.perf_counter() - start)
    finally:
        g.buffer_free(buffer)
        g.free(ctx)
    rtt = sorted(rtts)[len(rtts) // 2]
    return {"endpoint": endpoint, "rtt_ms": rtt * 1e3, "upload_mb_s": PROBE_BYTES / 1e6 / max(min(up) - rtt, 1e-9),
            "download_mb_s": PROBE_BYTES / 1e6 / min(down), "free_bytes": free.value, "total_bytes": total.value}
