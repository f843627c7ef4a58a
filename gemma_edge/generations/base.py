"""The shape of one runtime table per Gemma generation: everything gemma-edge decides at run time by
generation, as data.

A `GemmaGeneration` binds the GGUF `general.architecture` values it claims to its `Variant`s; a variant
is one kind of GGUF of that generation (Gemma 3 vs FunctionGemma, Gemma 4 small vs large), told apart by
a marker in the GGUF (`detect`), and fixes the turn format prompts are rendered in, the output syntax
replies are parsed with (hence the thinking markers) and the markers generation stops at. Nothing
outside this package branches on a generation's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from gemma_edge.formats import TurnFormat, get_format

if TYPE_CHECKING:
    from gemma_edge.gguf_file import GGUFFile

EMBEDDING_FORMAT = "embedding"  # the `format` of embedding models: no turn format, no chat


@dataclass(frozen=True)
class Variant:
    """One kind of GGUF of a generation: how its prompts are written and its replies read.

    `turn_format` is None for an embedding model (no chat). `syntax` names the
    `gemma_edge.parsing` OutputSyntax its replies are parsed with (None: it writes no text).
    `detect` says whether a GGUF is this variant; None marks the generation's fallback (last)."""

    turn_format: TurnFormat | None
    syntax: str | None
    detect: Callable[["GGUFFile"], bool] | None = None

    @property
    def format(self) -> str:
        """The public format name (models.yaml `format`, `--format`)."""
        return self.turn_format.name if self.turn_format else EMBEDDING_FORMAT

    @property
    def stop_markers(self) -> tuple[str, ...]:
        """Every marker generation stops at besides EOS: the end of a model turn, then those after
        which the runtime continues (Gemma 4's `<|tool_response>`); none for an embedding model."""
        return self.turn_format.stops if self.turn_format else ()


@dataclass(frozen=True)
class GemmaGeneration:
    """One Gemma generation as the runtime sees it (module docstring)."""

    name: str                          # public generation name (models.yaml `generation`)
    architectures: tuple[str, ...]     # GGUF general.architecture values it claims
    variants: tuple[Variant, ...]      # tried in order; the last one (detect=None) is the fallback
    # clip projector types (clip.vision/audio.projector_type) of the mmproj files of this generation
    projector_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.variants or self.variants[-1].detect is not None or any(
                v.detect is None for v in self.variants[:-1]):
            raise ValueError(f"{self.name}: every variant but the last (the fallback) needs `detect`")

    @property
    def embeds(self) -> bool:
        """An embedding model (Model.embed), not a chat/completion model."""
        return self.variants[-1].turn_format is None

    def variant_of(self, gguf: "GGUFFile") -> Variant:
        """The variant a GGUF of this generation is (its markers decide)."""
        return next(v for v in self.variants if v.detect is None or v.detect(gguf))


def chat(format_name: str, syntax: str, detect: Callable[["GGUFFile"], bool] | None = None) -> Variant:
    """A chat variant rendering the turn format `format_name` (checked when the table is built)."""
    return Variant(get_format(format_name), syntax, detect)


def has_token(marker: str) -> Callable[["GGUFFile"], bool]:
    """Detection by a token in the GGUF's vocabulary."""
    return lambda gguf: gguf.has_token(marker)
