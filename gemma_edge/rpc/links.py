"""`doctor --rpc`: per worker, the round-trip time and bandwidth through ggml-rpc itself, and what they
cost a model placed across the workers per decoded token."""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
from pathlib import Path
from typing import Sequence

from gemma_edge.errors import RpcError
from gemma_edge.gguf_file import GGUFFile
from gemma_edge.hardware import available_memory
from gemma_edge.llama.rpc_backend import check_support, measure_link
from gemma_edge.model import read_model_facts
from gemma_edge.registry import resolve
from gemma_edge.rpc.endpoints import ensure_reachable, parse_endpoints
from gemma_edge.rpc.placement import plan

# Per token and worker stage, ggml-rpc queues the stage's inputs and its graph without waiting and then
# reads the stage's output: one round trip, activations up and activations (or logits) down.
ROUND_TRIPS_PER_STAGE = 1


def _measure_links(conn, endpoints: list[str]) -> None:
    os.environ["GGML_NO_BACKTRACE"] = "1"
    conn.send([measure_link(e) for e in endpoints])


def measure_links(endpoints: list[str], timeout: float) -> list[dict]:
    """`measure_link` for each worker, in a throwaway child: a failing worker aborts only the child."""
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
    parent.close()
    if links is None:
        raise RpcError(f"measuring the links to {', '.join(endpoints)} failed (a worker stopped answering)")
    return links


def probe_links(endpoints: str | Sequence[str], model: str | Path | None = None, timeout: float = 60.0) -> list[dict]:
    """Per worker: round-trip time, bandwidth each way, free memory, and for `model`'s placement (by free
    memory): its layers, the network time it adds per decoded token, and the decode speed of the whole
    placement estimated as (weights / local memory bandwidth, assumed alike on every machine) + network."""
    endpoints = parse_endpoints(endpoints)
    check_support()
    ensure_reachable(endpoints)
    links = measure_links(endpoints, timeout)

    path, _ = resolve(model)
    facts = read_model_facts(path)
    gguf = GGUFFile(path)
    try:
        n_embd = int(gguf.arch_get("embedding_length") or 0)
        n_vocab = gguf.array_length("tokenizer.ggml.tokens")
    finally:
        gguf.close()
    placement = plan(facts.n_layers, ["local CPU", *endpoints], [available_memory(), *(l["free_bytes"] for l in links)])
    compute_s = facts.weights_bytes / memory_bandwidth()
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


def memory_bandwidth() -> float:
    """Bytes/s this machine reads from RAM (decode streams every weight once per token): a microbenchmark."""
    import numpy as np

    block = np.ones(64 << 20, dtype=np.uint8)
    block.sum(dtype=np.uint64)
    start = time.perf_counter()
    for _ in range(3):
        block.view(np.uint64).sum()
    return 3 * block.nbytes / (time.perf_counter() - start)
