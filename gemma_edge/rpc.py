"""Split one model across machines with llama.cpp's RPC backend (ggml-rpc).

A worker (`gemma-edge worker`) serves its CPU memory and compute over TCP; the main process registers
the workers with ggml's backend registry, and llama.cpp places layers on them like on GPUs: the first
layers stay on the local CPU, the rest (and the output layer) go to the workers in order.

llama-cpp-python exposes none of this, so the few ggml functions needed are bound here with ctypes on
the very libraries it ships (loaded by their sonames, so the registry is the one libllama uses).

Two facts shape the design:
- ggml-rpc aborts the whole process when a worker vanishes (GGML_ABORT in the client), and a
  registered worker cannot be unregistered. Distributed inference therefore runs in a supervised child
  process (`SupervisedEngine`): a dead worker kills only the child, the caller gets one clear error, and
  the next request starts a fresh child once the worker is back.
- The RPC protocol has no authentication and no encryption: anyone who reaches a worker's port can
  read and write its memory and run computations on it. Workers listen on loopback unless told
  otherwise; across machines, use them only on a network you trust.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import socket
import tempfile
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from gemma_edge.errors import GemmaEdgeError

DEFAULT_PORT = 50052
INSECURE = ("the RPC protocol has no authentication and no encryption: anyone who can reach this port "
            "can read and overwrite the worker's memory and make it compute")
CONNECT_TIMEOUT_S = 3.0


class RpcError(GemmaEdgeError):
    """A worker that cannot be reached, was lost, or a build without the RPC backend."""


# -- endpoints -------------------------------------------------------------------------------------
def parse_endpoints(value: str | Sequence[str]) -> list[str]:
    """`host:port[,host:port…]` (or a list of them) → normalised `host:port` strings, in order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    endpoints = []
    for item in (i.strip() for i in items):
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RpcError(f"{item!r} is not a worker address: expected host:port (e.g. 192.168.1.20:{DEFAULT_PORT})")
        endpoint = f"{host}:{int(port)}"
        if endpoint in endpoints:
            raise RpcError(f"worker {endpoint} is listed twice")
        endpoints.append(endpoint)
    if not endpoints:
        raise RpcError("no worker address given")
    return endpoints


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def reachable(endpoint: str, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """A plain TCP connect: ggml-rpc aborts the process on a refused connection, so look first."""
    try:
        with socket.create_connection(_host_port(endpoint), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_reachable(endpoints: Sequence[str]) -> None:
    down = [e for e in endpoints if not reachable(e)]
    if down:
        raise RpcError(f"cannot reach RPC worker {', '.join(down)}: start `gemma-edge worker --host HOST "
                       f"--port PORT` there (and check the firewall)")


# -- ctypes bindings ----------------------------------------------------------------------------------
DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


class _Ggml:
    """The ggml backend-registry and RPC functions, from the libraries llama-cpp-python loaded."""

    def __init__(self):
        from gemma_edge.llama import llama_cpp
        from gemma_edge.llama.ggml import ggml_library

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
        self._bind(rpc, "ggml_backend_rpc_start_server", None, [cstr, cstr, sz, sz, ctypes.POINTER(p)])
        self._bind(rpc, "ggml_backend_rpc_add_server", p, [cstr])
        self._bind(rpc, "ggml_backend_rpc_get_device_memory", None,
                   [cstr, ctypes.c_uint32, ctypes.POINTER(sz), ctypes.POINTER(sz)])
        self.registered: set[str] = set()
        self.base_lib, self.rpc_lib = base, rpc

    def _bind(self, lib, name, restype, argtypes):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
        setattr(self, name.removeprefix("ggml_backend_"), fn)

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
    """Register workers with the backend registry (llama.cpp then uses them for every model this process
    loads); returns their devices in registry order. Call it only in a process that may be aborted."""
    g = ggml()
    ensure_reachable(endpoints)
    for endpoint in endpoints:
        if endpoint in g.registered:
            continue
        reg = g.rpc_add_server(endpoint.encode())
        if not reg:
            raise RpcError(f"RPC worker {endpoint} offers no device")
        g.register(reg)
        g.registered.add(endpoint)
    return [d for d in devices() if d.backend == "RPC"]


def serve(host: str, port: int, *, threads: int, cache_dir: str | None = None) -> None:
    """Run an RPC server on the local CPU. Blocks; returns only if the server could not start."""
    g = ggml()
    cpu = g.dev_by_type(0)
    if not cpu:
        raise RpcError("no CPU backend in this llama.cpp build")
    devs = (ctypes.c_void_p * 1)(cpu)
    endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    g.rpc_start_server(endpoint.encode(), cache_dir.encode() if cache_dir else None, threads, 1, devs)


# -- placement ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Placement:
    """Which layers run where. `devices[0]` is the local CPU, then the workers in llama.cpp's order.
    Layer index n_layers is the output layer (llama.cpp places it with the last offloaded layer)."""
    devices: tuple[str, ...]
    weights: tuple[float, ...]
    n_layers: int
    n_gpu_layers: int
    tensor_split: tuple[float, ...] | None
    layer_device: tuple[int, ...]

    def llama_options(self) -> dict:
        """Keyword arguments for llama_cpp.Llama that produce this placement."""
        options = {"n_gpu_layers": self.n_gpu_layers}
        if self.tensor_split is not None:
            options["tensor_split"] = list(self.tensor_split)
        return options

    def ranges(self) -> list[dict]:
        """Per device: its share and the layer indices it holds (n_layers means the output layer)."""
        out = []
        for d, name in enumerate(self.devices):
            layers = [i for i, dev in enumerate(self.layer_device) if dev == d]
            out.append({"device": name, "weight": self.weights[d], "layers": len(layers),
                        "first_layer": layers[0] if layers else None, "last_layer": layers[-1] if layers else None,
                        "output_layer": bool(layers) and layers[-1] == self.n_layers})
        return out

    def as_dict(self) -> dict:
        return {"n_layers": self.n_layers, "n_gpu_layers": self.n_gpu_layers,
                "tensor_split": list(self.tensor_split) if self.tensor_split else None, "devices": self.ranges()}


def plan(n_layers: int, devices: Sequence[str], weights: Sequence[float]) -> Placement:
    """Place n_layers repeating layers + the output layer on the local CPU (devices[0]) and the workers,
    each in proportion to its weight (free memory, or the user's --split). Pure: mirrors llama.cpp's
    own rule (llama_model::load_tensors) so that the reported placement is the one it makes."""
    if len(devices) != len(weights):
        raise RpcError(f"--split has {len(weights)} values but there are {len(devices)} devices "
                       f"(this machine first, then each worker): {', '.join(devices)}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise RpcError("--split values must be >= 0 with a positive sum")
    slots = n_layers + 1
    local = round(slots * weights[0] / sum(weights))
    remote = list(weights[1:])
    if sum(remote) <= 0:
        local = slots
    n_gpu_layers = slots - local
    if n_gpu_layers == 0:
        return Placement(tuple(devices), tuple(weights), n_layers, 0, None, (0,) * slots)
    cumulative, total = [], 0.0
    for w in remote:
        total += w
        cumulative.append(total)
    cumulative = [c / total for c in cumulative]
    layer_device = tuple(0 if il < local else 1 + bisect_right(cumulative, (il - local) / n_gpu_layers)
                         for il in range(slots))
    return Placement(tuple(devices), tuple(weights), n_layers, n_gpu_layers, tuple(remote), layer_device)


def place_layers(endpoints: Sequence[str], n_layers: int, split: Sequence[float] | None = None) -> Placement:
    """Register the workers and place the layers: by the devices' free memory unless `split` is given
    (one value per device: this machine first, then each worker)."""
    workers = register(parse_endpoints(endpoints))
    names = ["local CPU", *(f"{d.description} ({d.name})" for d in workers)]
    # ggml's own free-memory figure for the local CPU: the same measure each worker reports for itself.
    local_free = next(d.free for d in devices() if d.type == "cpu")
    weights = list(split) if split is not None else [local_free, *(d.free for d in workers)]
    return plan(n_layers, names, [float(w) for w in weights])


@contextlib.contextmanager
def plain_cpu_weights():
    """Load models with the local CPU weights in plain buffers, as a worker holds them.

    Locally llama.cpp repacks quantized weights for faster kernels (e.g. Q4_K in 8x8 interleaved
    blocks on AVX2); a worker's RPC server cannot (it allocates plain CPU buffers). The two kernels
    round differently, by up to ~1 logit on the 270M, so only with repacking off does a split run
    compute exactly what a single process computes. Process-local: llama-cpp-python has no option."""
    from gemma_edge.llama.loader import without_extra_buffers

    with without_extra_buffers():
        yield


# -- supervised distributed inference --------------------------------------------------------------------
@dataclass
class Completion:
    text: str
    tokens: list[int]
    finish_reason: str | None
    usage: dict
    timings: dict
    logits: list | None = None  # per sampled position: the logits it was sampled from (if asked)


@dataclass
class SupervisedEngine:
    """An Engine with RPC workers, running in a child process. A worker that dies aborts only the child:
    the request raises RpcError, and the next request starts a new child (reconnecting to the workers).
    A request that gets no answer for `timeout` seconds (a frozen worker) is treated the same way;
    loading gets `load_timeout` (the weights cross the network once, minutes for a big model on Wi-Fi)."""
    path: str | Path
    rpc: Sequence[str]
    split: Sequence[float] | None = None
    timeout: float = 120.0
    load_timeout: float = 1800.0
    engine_options: dict = field(default_factory=dict)
    repack: bool = True  # False: plain local CPU weights, numerically identical to an unsplit run
    placement: dict | None = None
    _process: multiprocessing.process.BaseProcess | None = None
    _conn: multiprocessing.connection.Connection | None = None
    _log: str | None = None

    def __post_init__(self):
        self.rpc = parse_endpoints(self.rpc)

    def start(self) -> dict:
        """Start the child (if not running) and return the placement it loaded the model with."""
        if self._process is not None and self._process.is_alive():
            return self.placement
        ensure_reachable(self.rpc)
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        fd, self._log = tempfile.mkstemp(prefix="gemma-edge-rpc-", suffix=".log")
        os.close(fd)
        options = dict(self.engine_options, rpc=list(self.rpc), split=self.split)
        self._process = context.Process(target=_child_main, args=(child, str(self.path), options, self.repack, self._log),
                                        daemon=True, name="gemma-edge-rpc")
        self._process.start()
        child.close()
        self._conn = parent
        try:
            kind, payload = self._receive(self.load_timeout)
        except _ChildLost as lost:
            down = [e for e in self.rpc if not reachable(e, timeout=1.0)]
            raise self._lost_error(lost, down, "loading the model") from None
        if kind == "error":
            self.close()
            raise RpcError(payload)
        self.placement = payload
        return payload

    def generate(self, prompt_tokens: Sequence[int], sampling, *, max_tokens: int = 512, logits: bool = False,
                 on_text: Callable[[str], None] | None = None) -> Completion:
        """Generate in the child. If the child dies before any output while every worker answers again
        (a worker restarted since the last request: the child's connection to it was stale), start a
        fresh child and retry once; otherwise raise RpcError."""
        from gemma_edge.llama.mtmd import MediaChunk

        if any(isinstance(token, MediaChunk) for token in prompt_tokens):
            raise RpcError("images and audio are not supported with --rpc yet; run without --rpc for media input")
        for attempt in (1, 2):
            self.start()
            self._conn.send(("generate", list(prompt_tokens), sampling, max_tokens, logits))
            pieces = []
            try:
                while True:
                    kind, payload = self._receive(self.timeout)
                    if kind == "piece":
                        pieces.append(payload)
                        if on_text is not None:
                            on_text(payload)
                    elif kind == "error":
                        raise RpcError(payload)
                    else:
                        return Completion(text="".join(pieces), **payload)
            except _ChildLost as lost:
                down = [e for e in self.rpc if not reachable(e, timeout=1.0)]
                if attempt == 1 and not pieces and not down and lost.timed_out_after is None:
                    continue
                raise self._lost_error(lost, down, "generating") from None

    def _receive(self, timeout: float):
        ready = multiprocessing.connection.wait([self._conn, self._process.sentinel], timeout)
        if self._conn in ready:
            try:
                return self._conn.recv()
            except (EOFError, OSError):
                pass
        lost = _ChildLost(None if ready else timeout, _last_line(self._log))
        self.close()
        raise lost

    def _lost_error(self, lost: "_ChildLost", down: list[str], doing: str) -> RpcError:
        detail = f"no answer for {lost.timed_out_after:.0f} s" if lost.timed_out_after else lost.last_log_line
        who = (f"RPC worker {', '.join(down)} is gone" if down else
               f"the distributed-inference process (workers {', '.join(self.rpc)}) stopped")
        return RpcError(f"{who} while {doing}" + (f" ({detail})" if detail else "") +
                        "; restart `gemma-edge worker` there — the next request reconnects")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
            self._process = None
        if self._log:
            Path(self._log).unlink(missing_ok=True)
            self._log = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class _ChildLost(Exception):
    """The child died (a worker vanished and ggml-rpc aborted it) or stopped answering."""
    timed_out_after: float | None
    last_log_line: str


def _last_line(path: str | None) -> str:
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except (OSError, TypeError):
        return ""
    return lines[-1][:200] if lines else ""


def _child_main(conn, path: str, options: dict, repack: bool, log_path: str) -> None:
    """The child: ggml's abort message goes to a log file the parent quotes, never to the user's terminal."""
    os.environ["GGML_NO_BACKTRACE"] = "1"
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log, 2)
    from gemma_edge.llama.engine import Engine

    try:
        with contextlib.nullcontext() if repack else plain_cpu_weights():
            engine = Engine(path, **options)
    except GemmaEdgeError as e:
        conn.send(("error", str(e)))
        return
    conn.send(("ready", engine.placement.as_dict()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        _, prompt_tokens, sampling, max_tokens, want_logits = request
        try:
            result = run_generation(engine, prompt_tokens, sampling, max_tokens, want_logits,
                                    lambda piece: conn.send(("piece", piece)))
        except GemmaEdgeError as e:
            conn.send(("error", str(e)))
            continue
        conn.send(("done", result))


def run_generation(engine, prompt_tokens: Sequence[int], sampling, max_tokens: int, want_logits: bool,
                   on_text: Callable[[str], None]) -> dict:
    """One generation on an Engine (local or split), optionally recording the logits each token was
    sampled from: the same code path for the split run and its single-process reference."""
    recorded: list = []
    llm = engine.llm
    if want_logits:
        import numpy as np

        from gemma_edge.llama import llama_cpp

        lc, original, n_vocab = llama_cpp(), llm.eval, llm.n_vocab()

        def eval_and_record(tokens):
            original(tokens)
            row = lc.llama_get_logits_ith(llm._ctx.ctx, -1)
            recorded.append(np.ctypeslib.as_array(row, shape=(n_vocab,)).copy())

        llm.eval = eval_and_record
    try:
        gen = engine.generate(prompt_tokens, sampling, max_tokens=max_tokens)
        for piece in gen:
            on_text(piece)
    finally:
        if want_logits:
            del llm.eval
    sampled = len(gen.tokens) + (gen.finish_reason == "stop")
    return {"tokens": gen.tokens, "finish_reason": gen.finish_reason, "usage": gen.usage,
            "timings": gen.timings.as_dict(gen.prompt_evaluated, len(gen.tokens)),
            "logits": recorded[:sampled] if want_logits else None}


# -- supervised command line ---------------------------------------------------------------------------------
SUPERVISED_ENV = "GEMMA_EDGE_RPC_SUPERVISED"


def under_supervision() -> bool:
    return os.environ.get(SUPERVISED_ENV) == "1"


def supervise_command(argv: Sequence[str], endpoints: Sequence[str]) -> int:
    """Run `gemma-edge ARGV` (with --rpc) as a child sharing this terminal; return its exit code. When
    ggml-rpc aborts it because a worker vanished, raise one clear RpcError instead of a core dump."""
    import signal
    import subprocess
    import sys

    env = {**os.environ, SUPERVISED_ENV: "1", "GGML_NO_BACKTRACE": "1"}
    child = subprocess.Popen([sys.executable, "-m", "gemma_edge", *argv], env=env)
    while True:
        try:
            code = child.wait()
            break
        except KeyboardInterrupt:
            continue  # the child got the same Ctrl-C from the terminal and decides what it means
    if code in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGBUS):
        down = [e for e in endpoints if not reachable(e, timeout=1.0)]
        who = f"RPC worker {', '.join(down)} is gone" if down else f"an RPC worker ({', '.join(endpoints)}) failed"
        raise RpcError(f"{who}: the distributed run stopped; restart `gemma-edge worker` there and run the "
                       "command again")
    return code


# -- link measurements (doctor --rpc) -------------------------------------------------------------------
PROBE_BYTES = 16 << 20
PROBE_ROUNDS = 20
# Per token and worker stage, ggml-rpc queues the stage's inputs and its graph without waiting and then
# reads the stage's output: one round trip, activations up and activations (or logits) down.
ROUND_TRIPS_PER_STAGE = 1


class _GgmlInitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def _measure_link(endpoint: str) -> dict:
    """Round-trip time (device-memory queries) and bandwidth (a 16 MB tensor up and down) through
    ggml-rpc itself. Runs in a throwaway child: a failing worker aborts it."""
    g = ggml()
    base, rpc, p = g.base_lib, g.rpc_lib, ctypes.c_void_p
    base.ggml_init.restype, base.ggml_init.argtypes = p, [_GgmlInitParams]
    base.ggml_new_tensor_1d.restype, base.ggml_new_tensor_1d.argtypes = p, [p, ctypes.c_int, ctypes.c_int64]
    base.ggml_free.argtypes = [p]
    base.ggml_backend_alloc_ctx_tensors_from_buft.restype = p
    base.ggml_backend_alloc_ctx_tensors_from_buft.argtypes = [p, p]
    base.ggml_backend_buffer_free.argtypes = [p]
    for name in ("ggml_backend_tensor_set", "ggml_backend_tensor_get"):
        getattr(base, name).argtypes = [p, p, ctypes.c_size_t, ctypes.c_size_t]
    rpc.ggml_backend_rpc_buffer_type.restype = p
    rpc.ggml_backend_rpc_buffer_type.argtypes = [ctypes.c_char_p, ctypes.c_uint32]

    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    query = lambda: g.rpc_get_device_memory(endpoint.encode(), 0, ctypes.byref(free), ctypes.byref(total))
    query()  # connects
    rtts = []
    for _ in range(PROBE_ROUNDS):
        start = time.perf_counter()
        query()
        rtts.append(time.perf_counter() - start)
    ctx = base.ggml_init(_GgmlInitParams(1 << 20, None, True))
    tensor = base.ggml_new_tensor_1d(ctx, 0, PROBE_BYTES // 4)  # GGML_TYPE_F32
    buffer = base.ggml_backend_alloc_ctx_tensors_from_buft(ctx, rpc.ggml_backend_rpc_buffer_type(endpoint.encode(), 0))
    data = ctypes.create_string_buffer(os.urandom(PROBE_BYTES), PROBE_BYTES)
    up, down = [], []
    for _ in range(3):
        start = time.perf_counter()
        base.ggml_backend_tensor_set(tensor, data, 0, PROBE_BYTES)
        query()  # set_tensor does not answer: the next answered command marks its arrival
        up.append(time.perf_counter() - start)
        start = time.perf_counter()
        base.ggml_backend_tensor_get(tensor, data, 0, PROBE_BYTES)
        down.append(time.perf_counter() - start)
    base.ggml_backend_buffer_free(buffer)
    base.ggml_free(ctx)
    rtt = sorted(rtts)[len(rtts) // 2]
    return {"endpoint": endpoint, "rtt_ms": rtt * 1e3, "upload_mb_s": PROBE_BYTES / 1e6 / max(min(up) - rtt, 1e-9),
            "download_mb_s": PROBE_BYTES / 1e6 / min(down), "free_bytes": free.value, "total_bytes": total.value}


def _measure_links(conn, endpoints: list[str]) -> None:
    os.environ["GGML_NO_BACKTRACE"] = "1"
    conn.send([_measure_link(e) for e in endpoints])


def probe_links(endpoints: str | Sequence[str], model: str | Path | None = None, timeout: float = 60.0) -> list[dict]:
    """Per worker: round-trip time, bandwidth each way, free memory, and for `model`'s placement (by free
    memory): its layers, the network time it adds per decoded token, and the decode speed of the whole
    placement estimated as (weights / local memory bandwidth, assumed alike on every machine) + network."""
    from gemma_edge.registry import resolve
    from gemma_edge.gguf_file import GGUFFile
    from gemma_edge.model import read_model_facts

    endpoints = parse_endpoints(endpoints)
    check_support()
    ensure_reachable(endpoints)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_measure_links, args=(child, endpoints), daemon=True)
    process.start()
    child.close()
    ready = multiprocessing.connection.wait([parent, process.sentinel], timeout)
    links = parent.recv() if parent in ready and parent.poll() else None
    if process.is_alive():
        process.kill()
    process.join(5)
    if links is None:
        raise RpcError(f"measuring the links to {', '.join(endpoints)} failed (a worker stopped answering)")

    path, _ = resolve(model)
    facts = read_model_facts(path)
    gguf = GGUFFile(path)
    n_embd = int(gguf.arch_get("embedding_length") or 0)
    n_vocab = gguf.array_length("tokenizer.ggml.tokens")
    gguf.close()
    from gemma_edge.hardware import available_memory

    placement = plan(facts.n_layers, ["local CPU", *endpoints], [available_memory(), *(l["free_bytes"] for l in links)])
    compute_s = facts.weights_bytes / _memory_bandwidth()
    for d, link in enumerate(links, start=1):
        stage = placement.ranges()[d]
        down_bytes = n_vocab * 4 if stage["output_layer"] else n_embd * 4
        network_s = 0.0
        if stage["layers"]:
            network_s = (ROUND_TRIPS_PER_STAGE * link["rtt_ms"] / 1e3 + n_embd * 4 / (link["upload_mb_s"] * 1e6)
                         + down_bytes / (link["download_mb_s"] * 1e6))
        link.update(layers=stage["layers"], network_ms_per_token=network_s * 1e3,
                    max_tokens_per_s=1 / network_s if network_s else float("inf"))
    total_network = sum(l["network_ms_per_token"] for l in links) / 1e3
    for link in links:
        link["placement_decode_tokens_per_s"] = 1 / (compute_s + total_network)
        link["model"] = facts.name
    return [{k: round(v, 3) if isinstance(v, float) else v for k, v in link.items()} for link in links]


def _memory_bandwidth() -> float:
    """Bytes/s this machine reads from RAM (decode streams every weight once per token)."""
    import numpy as np

    block = np.ones(64 << 20, dtype=np.uint8)
    block.sum(dtype=np.uint64)
    start = time.perf_counter()
    for _ in range(3):
        block.view(np.uint64).sum()
    return 3 * block.nbytes / (time.perf_counter() - start)


def wait_until_listening(endpoint: str, timeout: float) -> bool:
    """Poll until a worker accepts connections (used by scripts and tests that start workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable(endpoint, timeout=0.5):
            return True
        time.sleep(0.1)
    return False
