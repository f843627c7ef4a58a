"""The memory budget of a loaded model: weights (and projector) + KV cache + runtime overhead, and the
refusal before loading when it does not fit. One formula, used by the loader (gemma_edge.runtime) and
by `doctor`'s recommendations alike."""
from __future__ import annotations

from gemma_edge.errors import InsufficientMemoryError
from gemma_edge.hardware import available_memory

# Compute buffers, logits and the runtime itself, on top of weights and KV cache (measured on the
# 270M with a 4k context: ~150 MB; kept generous so a borderline load fails here, not in the OOM killer).
RUNTIME_OVERHEAD = 300 << 20
GB = 1 << 30


def memory_needed(facts, n_ctx: int, projector_bytes: int = 0, weights_bytes: int | None = None) -> int:
    """Bytes a model needs with an `n_ctx`-token context: its weights (or `weights_bytes`, e.g. an estimate
    for another quantization), its projector, the KV cache and the runtime."""
    weights = facts.weights_bytes if weights_bytes is None else weights_bytes
    return weights + projector_bytes + facts.kv_bytes_per_token * n_ctx + RUNTIME_OVERHEAD


def check_fits(facts, n_ctx: int, projector_bytes: int = 0) -> None:
    """Refuse before loading when weights (and projector) + KV cache + runtime do not fit in the RAM available."""
    needed = memory_needed(facts, n_ctx, projector_bytes)
    available = available_memory()
    if needed > available:
        kv = facts.kv_bytes_per_token * n_ctx
        projector = f" + projector {projector_bytes / GB:.1f} GB" if projector_bytes else ""
        raise InsufficientMemoryError(
            f"{facts.path.name} needs about {needed / GB:.1f} GB (weights {facts.weights_bytes / GB:.1f} GB{projector} + "
            f"KV cache {kv / GB:.1f} GB for a {n_ctx}-token context) but only {available / GB:.1f} GB is "
            f"available: use a smaller quantization (e.g. Q4_K_M or Q4_0), a smaller model, or a smaller --ctx-size")
