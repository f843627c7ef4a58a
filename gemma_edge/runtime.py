"""What a model is loaded with, resolved before anything is loaded: the user's settings, else what
`doctor` recommends for this machine (threads, the largest context that fits), the batch sizes a
projector needs, the memory check, the RPC workers; then the engine that runs it. `load()`, the CLI
and the server all come through here, so the engine itself only takes explicit settings."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from gemma_edge.doctor import recommended_runtime
from gemma_edge.errors import GemmaEdgeError
from gemma_edge.llama.engine import Engine, EngineSettings
from gemma_edge.memory import check_fits
from gemma_edge.model import ModelFacts
from gemma_edge.mtp import MtpDrafterError, drafter_name, read_drafter
from gemma_edge.projector import read_projector_file
from gemma_edge.rpc.endpoints import parse_endpoints
from gemma_edge.rpc.supervision import SupervisedEngine
from gemma_edge.rpc.workers import place
from gemma_edge.speculative import mtp_drafter_name

DEFAULT_BATCH = 512
LLAMA_UBATCH = 512  # llama.cpp's default micro-batch
MIN_CONTEXT = 16


def resolve_settings(facts: ModelFacts, *, n_ctx: int | None = None, n_threads: int | None = None,
                     n_batch: int = DEFAULT_BATCH, mmproj: str | Path | None = None,
                     rpc: str | Sequence[str] | None = None, split: Sequence[float] | None = None,
                     extra_buffers: bool | None = None, speculative: str = "off") -> EngineSettings:
    """Every setting an Engine needs. Unset `n_ctx`/`n_threads` come from `doctor`'s recommendation;
    without RPC workers the model (and projector) must fit in the memory available (with them the
    weights are spread, a whole-model check would be wrong). `split` counts only with `rpc`.
    `speculative`: the resolved mode (doctor.resolve_spec); any but "off" decodes in exact batches, and
    "mtp[:DRAFTER]" names the MTP drafter attached at load (checked against the model here)."""
    workers = tuple(parse_endpoints(rpc)) if rpc else ()
    mtp_drafter = None
    if mtp_drafter_name(speculative) is not None:
        if workers:
            raise MtpDrafterError("MTP drafting cannot be combined with --rpc (the drafter reads the model's KV "
                                  "cache, which would be on another machine)")
        mtp_drafter = read_drafter(drafter_name(speculative, facts.path), facts.path)
    projector = None
    n_ubatch = LLAMA_UBATCH
    if mmproj is not None:
        if workers:
            raise GemmaEdgeError("images and audio cannot be combined with --rpc yet (the projector runs "
                                 "on this machine only); run without --rpc for media input")
        projector = read_projector_file(mmproj)
        # llama.cpp must decode a non-causal image in one ubatch (it aborts otherwise)
        n_batch = max(n_batch, projector.non_causal_positions)
        n_ubatch = max(n_ubatch, projector.non_causal_positions)
    projector_bytes = projector.size if projector else 0
    if n_ctx is None or n_threads is None:
        recommended = recommended_runtime(facts, projector_bytes=projector_bytes)
        n_ctx = n_ctx or recommended["n_ctx"]
        n_threads = n_threads or recommended["n_threads"]
    n_ctx = int(n_ctx)
    if n_ctx < MIN_CONTEXT:
        raise GemmaEdgeError(f"context size {n_ctx} is too small (at least {MIN_CONTEXT} tokens)")
    if n_ctx > facts.context_length:
        raise GemmaEdgeError(f"context size {n_ctx} is larger than the model's {facts.context_length} tokens")
    if not workers:
        check_fits(facts, n_ctx, projector_bytes)
    return EngineSettings(n_ctx=n_ctx, n_threads=int(n_threads), n_batch=min(n_batch, n_ctx),
                          n_ubatch=min(n_ubatch, n_batch, n_ctx), mmproj=projector.path if projector else None,
                          rpc=workers, split=tuple(float(w) for w in split) if workers and split else None,
                          extra_buffers=extra_buffers, exact=speculative != "off", mtp_drafter=mtp_drafter)


def default_threads(facts: ModelFacts, n_threads: int | None = None) -> int:
    """`n_threads`, else `doctor`'s recommendation (the physical performance cores)."""
    return int(n_threads or recommended_runtime(facts)["n_threads"])


def open_engine(facts: ModelFacts, settings: EngineSettings, *, stop_markers: Sequence[str] = (),
                verbose: bool = False, supervised: bool = True) -> Engine:
    """The engine for resolved settings. With RPC workers it runs in a supervised child process (a lost
    worker aborts only the child: gemma_edge.rpc.supervision) unless `supervised` is False, for callers
    that need llama.cpp in this process (the raw-loop benchmark) and accept that a lost worker aborts it."""
    if not settings.rpc:
        return Engine(facts, settings, stop_markers=stop_markers, verbose=verbose)
    if not supervised:
        return Engine(facts, place(settings, facts.n_layers), stop_markers=stop_markers, verbose=verbose)
    return SupervisedEngine(facts, settings, stop_markers=stop_markers, verbose=verbose)
