"""Workers: serving this machine's CPU to others (`gemma-edge worker`), and registering workers in
this process to place a model's layers on them. Registration is per process and cannot be undone,
and a registered worker that vanishes aborts the process: only a process that may die does it
(gemma_edge.rpc.supervision's child, or `info --rpc`, which loads nothing)."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from gemma_edge.llama.rpc_backend import devices, register, serve_cpu
from gemma_edge.rpc.endpoints import ensure_reachable, parse_endpoints
from gemma_edge.rpc.placement import Placement, plan


def serve(host: str, port: int, *, threads: int, cache_dir: str | None = None) -> None:
    """Run an RPC server on the local CPU. Blocks; returns only if the server could not start."""
    serve_cpu(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", threads=threads, cache_dir=cache_dir)


def place_layers(endpoints: Sequence[str], n_layers: int, split: Sequence[float] | None = None) -> Placement:
    """Register the workers and place the layers: by the devices' free memory unless `split` is given
    (one value per device: this machine first, then each worker)."""
    endpoints = parse_endpoints(endpoints)
    ensure_reachable(endpoints)
    workers = register(endpoints)
    names = ["local CPU", *(f"{d.description} ({d.name})" for d in workers)]
    # ggml's own free-memory figure for the local CPU: the same measure each worker reports for itself.
    local_free = next(d.free for d in devices() if d.type == "cpu")
    weights = list(split) if split is not None else [local_free, *(d.free for d in workers)]
    return plan(n_layers, names, [float(w) for w in weights])


def place(settings, n_layers: int):
    """Engine settings (gemma_edge.llama.engine.EngineSettings) with their workers registered in this
    process and the layers placed on them."""
    return replace(settings, placement=place_layers(settings.rpc, n_layers, settings.split))
