"""One hub file into huggingface-hub's cache, resumable across processes.

huggingface-hub 2.4 downloads into a temporary file named per process, so a `pull` that is killed
starts again from zero. This module keeps the cache's own layout instead and leaves the partial
data where the next run finds it:

    <HF_HUB_CACHE>/models--<owner>--<name>/blobs/<etag>.incomplete   bytes received so far
    <HF_HUB_CACHE>/models--<owner>--<name>/blobs/<etag>              the verified file
    <HF_HUB_CACHE>/models--<owner>--<name>/snapshots/<commit>/<file>  a relative link to the blob
    <HF_HUB_CACHE>/models--<owner>--<name>/refs/<revision>            the commit a branch/tag names

A later run asks for the rest with `Range: bytes=<size of .incomplete>-`. The file reaches its final
name only after its size and sha256 (models.yaml's, and the hub's own for LFS files, whose etag *is*
the sha256) are checked. One lock per blob (the path huggingface-hub locks too) makes concurrent pulls
of the same file wait for each other instead of writing into one another.

huggingface-hub still does the protocol: the metadata request, redirects, tokens, retries of a
broken connection within the run (`get_hf_file_metadata`, `http_get`).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable
from urllib.parse import urlsplit

from gemma_edge.errors import DownloadError

_SHA1_OR_SHA256 = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class CachePaths:
    """Where one file of one repo lives in the hub cache."""
    storage: Path
    etag: str
    commit: str
    file: str

    @property
    def blob(self) -> Path:
        return self.storage / "blobs" / self.etag

    @property
    def incomplete(self) -> Path:
        return self.storage / "blobs" / f"{self.etag}.incomplete"

    @property
    def pointer(self) -> Path:
        return self.storage / "snapshots" / self.commit / self.file

    def lock(self, cache: Path) -> Path:
        return cache / ".locks" / self.storage.name / f"{self.etag}.lock"


def cache_paths(cache: Path, repo: str, file: str, etag: str, commit: str) -> CachePaths:
    """The cache paths for a file, after checking that nothing from the server or models.yaml can
    name a path outside the repo's folder (etags and commits are hex digests, file names relative)."""
    from huggingface_hub.file_download import repo_folder_name

    if not _SHA1_OR_SHA256.fullmatch(etag or ""):
        raise DownloadError(f"the hub sent an unexpected etag for {repo}/{file}: {etag!r}")
    if not _COMMIT.fullmatch(commit or ""):
        raise DownloadError(f"the hub sent an unexpected commit for {repo}/{file}: {commit!r}")
    parts = PurePosixPath(file).parts
    if not parts or file.startswith("/") or any(part in ("..", ".", "") for part in parts) or "\\" in file:
        raise DownloadError(f"unsafe file name in models.yaml: {file!r}")
    return CachePaths(cache / repo_folder_name(repo_id=repo, repo_type="model"), etag, commit, file)


def fetch(repo: str, file: str, *, revision: str | None, endpoint: str | None, sha256: str | None,
          progress_class: type | None, cached: Callable[[], Path | None]) -> Path:
    """The file's snapshot path in the hub cache, downloading (or finishing a download) if needed.

    `cached()` looks the file up in the cache without network; it answers when the revision is a
    commit already there, when offline mode is on, and when the hub cannot be reached."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import OfflineModeIsEnabled

    revision = revision or "main"
    found = cached()
    if found is not None and (_COMMIT.fullmatch(revision) or constants.is_offline_mode()):
        return found
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, file, revision=revision, endpoint=endpoint),
                                    endpoint=endpoint)
    except (OfflineModeIsEnabled, *transport_errors()):
        if found is not None:
            return found
        raise DownloadError(f"cannot reach the Hugging Face hub to download {repo}/{file}, "
                            "and it is not in the local cache") from None
    paths = cache_paths(Path(constants.HF_HUB_CACHE), repo, file, meta.etag, meta.commit_hash)
    expected = [(source, digest.lower()) for source, digest in (("models.yaml", sha256), ("the hub", meta.etag))
                if digest and _SHA256.fullmatch(digest.lower())]
    if not paths.blob.is_file():
        headers = _auth_headers(meta.location, endpoint)
        _download_blob(paths, Path(constants.HF_HUB_CACHE), meta.location, meta.size, headers, expected,
                       progress_class, label=f"{repo}/{file}")
    elif sha256 and sha256_file(paths.blob) != sha256.lower():
        paths.blob.unlink(missing_ok=True)
        raise DownloadError(f"{repo}/{file}: sha256 does not match models.yaml; the file was removed "
                            "(try again; if it persists the repository changed)")
    _link(paths, revision)
    return paths.pointer


def _download_blob(paths: CachePaths, cache: Path, url: str, size: int | None, headers: dict,
                   expected_sha256: list[tuple[str, str]], progress_class: type | None, label: str) -> None:
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import WeakFileLock

    paths.blob.parent.mkdir(parents=True, exist_ok=True)
    lock = paths.lock(cache)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        if paths.blob.is_file():  # another process finished it while we waited for the lock
            return
        have = paths.incomplete.stat().st_size if paths.incomplete.is_file() else 0
        if size is not None and have > size:  # not a prefix of this file: start over
            paths.incomplete.unlink()
            have = 0
        with open(paths.incomplete, "ab") as out:
            http_get(url, out, resume_size=have, headers=headers, expected_size=size,
                     displayed_filename=Path(paths.file).name, tqdm_class=progress_class)
        digest = sha256_file(paths.incomplete)
        for source, want in expected_sha256:
            if digest != want:
                paths.incomplete.unlink(missing_ok=True)
                raise DownloadError(f"{label}: sha256 does not match {source}; the file was removed "
                                    "(try again; if it persists the repository changed)")
        _make_readable(paths.incomplete)
        os.replace(paths.incomplete, paths.blob)


def _link(paths: CachePaths, revision: str) -> None:
    """The snapshot link to the blob and, for a branch or tag, the ref naming its commit."""
    paths.pointer.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(paths.blob, paths.pointer.parent)
    if not (paths.pointer.is_symlink() and os.readlink(paths.pointer) == target):
        temporary = paths.pointer.with_name(f".{paths.pointer.name}.{os.getpid()}.link")
        temporary.unlink(missing_ok=True)
        try:
            os.symlink(target, temporary)
        except OSError:  # no symlinks (some Windows setups): a copy, as huggingface-hub does there
            import shutil

            shutil.copyfile(paths.blob, temporary)
        os.replace(temporary, paths.pointer)
    if revision != paths.commit:
        ref = paths.storage / "refs" / revision
        if not ref.is_file() or ref.read_text() != paths.commit:
            ref.parent.mkdir(parents=True, exist_ok=True)
            temporary = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
            temporary.write_text(paths.commit)
            os.replace(temporary, ref)


def _auth_headers(location: str, endpoint: str | None) -> dict:
    """The user's token goes to the hub itself, never to another origin (the CDN an LFS file
    redirects to), as huggingface-hub does."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers

    headers = build_hf_headers()
    hub = urlsplit(endpoint or constants.ENDPOINT)
    there = urlsplit(location)
    if (there.scheme, there.netloc) != (hub.scheme, hub.netloc):
        headers.pop("authorization", None)
        headers.pop("Authorization", None)
    return headers


def _make_readable(path: Path) -> None:
    """Blobs get the permissions the umask gives a new file (the temporary file may be 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def transport_errors() -> tuple[type[Exception], ...]:
    """Network errors of the HTTP client huggingface-hub uses (httpx2 in 2.x, httpx in 1.x); they
    are not OSErrors, and the client re-raises them once its retries are spent."""
    from importlib import import_module

    errors = []
    for module in ("httpx2", "httpx"):
        try:
            errors.append(import_module(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)
