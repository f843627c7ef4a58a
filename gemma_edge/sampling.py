"""Sampling settings: per-model defaults from models.yaml, overridden by the caller."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

# Gemma's recommended settings for instruct models (Gemma 3/3n/4 model cards).
GEMMA_DEFAULTS = {"temperature": 1.0, "top_k": 64, "top_p": 0.95, "min_p": 0.0, "repeat_penalty": 1.0}


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0   # 0 means greedy
    top_k: int = 64
    top_p: float = 0.95
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def updated(self, **overrides) -> "Sampling":
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown sampling option(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def for_model(cls, registry_sampling: dict | None = None, **overrides) -> "Sampling":
        base = {**GEMMA_DEFAULTS, **{k: v for k, v in (registry_sampling or {}).items() if k in GEMMA_DEFAULTS}}
        return cls(**base).updated(**overrides)

    def validate(self) -> "Sampling":
        from gemma_edge.errors import GemmaEdgeError

        if self.temperature < 0:
            raise GemmaEdgeError("temperature must be >= 0 (0 means greedy)")
        if not 0 < self.top_p <= 1:
            raise GemmaEdgeError("top-p must be in (0, 1]")
        if not 0 <= self.min_p <= 1:
            raise GemmaEdgeError("min-p must be in [0, 1]")
        if self.top_k < 0:
            raise GemmaEdgeError("top-k must be >= 0 (0 disables it)")
        if self.repeat_penalty <= 0:
            raise GemmaEdgeError("repeat-penalty must be > 0")
        return self
