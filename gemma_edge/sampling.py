"""Sampling settings: per-model defaults from models.yaml, overridden by the caller; the default
length of a reply."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

# Generated tokens when the caller sets no limit (API, CLI and server alike).
DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class Sampling:
    """The defaults are Gemma's recommended settings for instruct models (Gemma 3/3n/4 model cards),
    the one place they are written: models.yaml entries that say nothing, and the CLI's help, use them."""
    temperature: float = 1.0   # 0 means greedy
    top_k: int = 64
    top_p: float = 0.95
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def updated(self, **overrides) -> "Sampling":
        known = set(self.option_names())
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown sampling option(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

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
