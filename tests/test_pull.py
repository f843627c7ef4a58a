"""`pull` / `resolve` / `rm` end to end: the real huggingface-hub client against a local server that
speaks the hub's file protocol (tests/hub_server.py), in a temporary hub cache and registry.

The oracle for every checksum is the bytes the server holds; the expected messages are the
contract in the issue (gated repo: token + licence; sha256 mismatch: rejected and removed).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gemma_edge.cli import main
from gemma_edge.download import sha256_file
from gemma_edge.errors import DownloadError, ModelNotFoundError
from gemma_edge.registry import (ProjectorDownloadError, is_downloaded, load_registry, mmproj_path, projector_beside,
                                 pull, remove, resolve)
from tests.hub_server import HubFile, HubServer

REPO_ID = "test-org/gemma-3-1b-it-GGUF"
FILENAME = "gemma-3-1b-it-Q4_K_M.gguf"
NAME = "gemma-3-1b-it-test"
REPO_ROOT = Path(__file__).resolve().parent.parent


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


GOOD = payload(64 << 10)


def registry_entry(content: bytes, **overrides) -> dict:
    """A models.yaml entry (the documented keys) for the served file, checksum taken from `content`."""
    import hashlib

    entry = {
        "name": NAME, "description": "Gemma 3 1B instruct, Q4_K_M GGUF (served by the test hub)",
        "generation": "gemma3", "format": "gemma3", "size_class": "1b", "instruct": True,
        "source": {"repo": REPO_ID, "file": FILENAME},
        "file_size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
        "quantization": "Q4_K_M", "context_length": 32768, "license": "gemma", "gated": False,
        "capabilities": {"thinking": False, "tools": False, "vision": False, "audio": False},
        "sampling": {"temperature": 1.0, "top_k": 64, "top_p": 0.95, "min_p": 0.0, "repeat_penalty": 1.0},
        "mmproj": None,
    }
    entry.update(overrides)
    return entry


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh hub cache, gemma-edge home and registry for each test; no token, no real hub.

    huggingface-hub reads its cache/token locations when it is imported, so the in-process tests
    also point its `constants` at the temporary folders (subprocesses get them from the env)."""
    from huggingface_hub import constants

    hf_home = tmp_path / "hf"
    env = {"HF_HOME": hf_home, "HF_HUB_CACHE": hf_home / "hub", "GEMMA_EDGE_HOME": tmp_path / "gemma-edge",
           "GEMMA_EDGE_REGISTRY": tmp_path / "models.yaml", "HF_ENDPOINT": "http://127.0.0.1:9"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_OIDC_RESOURCE", "HF_HUB_DISABLE_XET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(hf_home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(hf_home / "stored_tokens"))
    # The client fetches {endpoint}/api/agent-harnesses once a day for its user-agent header; a fresh
    # copy in the cache keeps it from asking the real hub (in-process its endpoint is the default).
    harnesses = hf_home / ".agent_harnesses.json"
    harnesses.parent.mkdir(parents=True)
    harnesses.write_text(json.dumps({"standardEnvVars": [], "harnesses": {}}))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(harnesses))
    write_registry(registry_entry(GOOD))
    return tmp_path


def write_registry(*entries: dict) -> None:
    document = {"default": entries[0]["name"], "models": list(entries)}
    Path(os.environ["GEMMA_EDGE_REGISTRY"]).write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.fixture
def hub(monkeypatch):
    """Start a local hub serving {repo: {file: bytes | HubFile}} and point HF_ENDPOINT at it."""
    servers = []

    def start(files: dict | None = None, repo_id: str = REPO_ID) -> HubServer:
        server = HubServer({repo_id: files if files is not None else {FILENAME: GOOD}}).start()
        servers.append(server)
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        return server

    yield start
    for server in servers:
        server.stop()


def hub_blobs() -> list[Path]:
    return sorted(p for p in Path(os.environ["HF_HUB_CACHE"]).rglob("blobs/*"))


def assert_plain_http_file_protocol(server: HubServer) -> None:
    """Only the file protocol was used (no Xet, nothing the server does not know)."""
    for r in server.requests:
        assert r.status != 404, f"unexpected request {r.method} {r.path}"
        assert "xet" not in r.path.lower()


# --- the Python API -----------------------------------------------------------------------------

@pytest.mark.parametrize("lfs", [True, False], ids=["lfs-file-via-cdn", "regular-git-file"])
def test_pull_downloads_verifies_and_resolves(hub, lfs):
    server = hub({FILENAME: HubFile(GOOD, lfs=lfs)})
    path = pull(NAME, progress=False)
    assert path.read_bytes() == GOOD
    assert Path(os.environ["HF_HUB_CACHE"]) in path.parents  # huggingface-hub's standard cache
    assert resolve(NAME) == (path, load_registry().get(NAME))
    assert is_downloaded(load_registry().get(NAME))
    heads, gets = server.file_requests("HEAD"), server.file_requests("GET")
    assert len(heads) == 1 and len(gets) == 1
    assert gets[0].server == ("cdn" if lfs else "hub")
    assert "range" not in gets[0].headers
    assert_plain_http_file_protocol(server)


def test_pinned_revision_is_downloaded_and_found_offline(hub):
    server = hub()
    commit = server.repos[REPO_ID].commit
    write_registry(registry_entry(GOOD, source={"repo": REPO_ID, "file": FILENAME, "revision": commit}))
    path = pull(NAME, progress=False)
    assert path.parent.name == commit and path.read_bytes() == GOOD
    assert server.file_requests()[0].path == f"/{REPO_ID}/resolve/{commit}/{FILENAME}"
    server.stop()
    assert resolve(NAME)[0] == path
    assert pull(NAME, progress=False) == path


@pytest.mark.parametrize("served", ["corrupted-in-transit", "replaced-upstream"])
def test_sha256_mismatch_is_rejected_and_removed(hub, served):
    if served == "corrupted-in-transit":  # same size, headers still describe the good file
        server = hub({FILENAME: HubFile(GOOD, corrupt=True)})
    else:  # the repo now holds another file than the one models.yaml describes
        server = hub({FILENAME: payload(len(GOOD), seed=1)})
    with pytest.raises(DownloadError, match="sha256 does not match models.yaml; the file was removed"):
        pull(NAME, progress=False)
    assert server.file_requests("GET"), "the file was never downloaded, so the check proves nothing"
    assert hub_blobs() == []
    assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob(FILENAME))
    with pytest.raises(ModelNotFoundError, match="not downloaded yet"):
        resolve(NAME)


@pytest.mark.slow
def test_interrupted_download_resumes_with_a_range_request(hub):
    # huggingface-hub keeps what it received in 10 MiB chunks (constants.DOWNLOAD_CHUNK_SIZE), so the
    # cut must come after the first chunk for there to be anything to resume from.
    from huggingface_hub import constants

    content = payload(constants.DOWNLOAD_CHUNK_SIZE + (1 << 20), seed=2)
    cut = constants.DOWNLOAD_CHUNK_SIZE + (300 << 10)
    write_registry(registry_entry(content))
    server = hub({FILENAME: HubFile(content, cut_after=cut)})
    path = pull(NAME, progress=False)
    assert sha256_file(path) == registry_entry(content)["sha256"]
    first, second = server.file_requests("GET")
    assert (first.status, first.body_bytes) == (200, cut)
    assert second.status == 206
    start = int(second.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= cut
    assert second.body_bytes == len(content) - start  # only the missing tail was sent again


def pull_subprocess(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gemma_edge", "pull", *args], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def incomplete_bytes() -> int:
    return sum(p.stat().st_size for p in Path(os.environ["HF_HUB_CACHE"]).rglob("blobs/*.incomplete"))


@pytest.mark.slow
def test_killed_pull_resumes_in_a_new_process_with_a_range_request(hub):
    # The client writes what it received in 10 MiB chunks (constants.DOWNLOAD_CHUNK_SIZE): the server
    # holds the body after the first chunk plus a bit, the process is killed with SIGKILL (no cleanup
    # of any kind runs), and a second `pull` must ask only for the bytes not on disk.
    from huggingface_hub import constants

    chunk = constants.DOWNLOAD_CHUNK_SIZE
    content = payload(chunk + (2 << 20), seed=4)
    write_registry(registry_entry(content))
    server = hub({FILENAME: HubFile(content, stall_after=chunk + (512 << 10))})
    first = pull_subprocess(NAME)
    try:
        wait_for(lambda: incomplete_bytes() >= chunk, what="the first chunk on disk")
        first.kill()
        first.wait(timeout=30)
    finally:
        first.kill()
    on_disk = incomplete_bytes()
    assert first.returncode == -signal.SIGKILL and on_disk == chunk
    assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob(FILENAME)), "an unfinished file under its final name"

    second = pull_subprocess(NAME)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    path = Path(out.strip())
    assert sha256_file(path) == registry_entry(content)["sha256"]
    gets = server.file_requests("GET")
    assert len(gets) == 2 and gets[1].headers["range"] == f"bytes={on_disk}-" and gets[1].status == 206
    assert gets[1].body_bytes == len(content) - on_disk  # only the missing tail was sent
    assert incomplete_bytes() == 0


@pytest.mark.slow
def test_concurrent_pulls_of_one_file_share_one_download(hub):
    # Two processes pull the same file at once: one downloads (the server holds its body for a moment),
    # the other waits on the blob's lock and then finds the finished file; neither writes into the other.
    from huggingface_hub import constants

    chunk = constants.DOWNLOAD_CHUNK_SIZE
    content = payload(chunk + (1 << 20), seed=5)
    write_registry(registry_entry(content))
    server = hub({FILENAME: HubFile(content, stall_after=chunk + (256 << 10))})
    pulls = [pull_subprocess(NAME)]
    wait_for(lambda: incomplete_bytes() >= chunk, what="the first pull mid-download")
    pulls.append(pull_subprocess(NAME))
    wait_for(lambda: len(server.file_requests("HEAD")) == 2, what="the second pull's metadata request")
    time.sleep(1.0)  # the second pull is now at the blob's lock
    server.release()
    results = [p.communicate(timeout=120) for p in pulls]
    assert [p.returncode for p in pulls] == [0, 0], [err for _, err in results]
    paths = {Path(out.strip()) for out, _ in results}
    assert len(paths) == 1 and sha256_file(paths.pop()) == registry_entry(content)["sha256"]
    assert len(server.file_requests("GET")) == 1
    assert [blob.name for blob in hub_blobs()] == [hashlib.sha256(content).hexdigest()]


def test_partial_data_that_is_not_a_prefix_is_replaced(hub):
    # Partial data longer than the file (left by another version of it) cannot be resumed from: start over.
    server = hub({FILENAME: GOOD})
    blob_dir = Path(os.environ["HF_HUB_CACHE"]) / "models--test-org--gemma-3-1b-it-GGUF" / "blobs"
    blob_dir.mkdir(parents=True)
    (blob_dir / f"{hashlib.sha256(GOOD).hexdigest()}.incomplete").write_bytes(b"x" * (len(GOOD) + 1))
    assert pull(NAME, progress=False).read_bytes() == GOOD
    assert "range" not in server.file_requests("GET")[0].headers


@pytest.mark.parametrize("etag, commit", [("../../../evil", "a" * 40), ("a" * 64, "../x"), ("a" * 64, "a" * 41)])
def test_server_supplied_names_cannot_leave_the_cache(etag, commit, tmp_path):
    from gemma_edge.download import cache_paths

    with pytest.raises(DownloadError, match="unexpected"):
        cache_paths(tmp_path, REPO_ID, FILENAME, etag, commit)
    for unsafe in ("../model.gguf", "/etc/passwd", "a/../../b.gguf", "a\\..\\b"):
        with pytest.raises(DownloadError, match="unsafe file name"):
            cache_paths(tmp_path, REPO_ID, unsafe, "a" * 64, "b" * 40)


@pytest.mark.parametrize("token, status", [(None, 401), ("hf_not_accepted", 403)])
def test_gated_repo_explains_token_and_licence(hub, monkeypatch, token, status):
    server = hub()
    server.gated.add(REPO_ID)
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(DownloadError) as caught:
        pull(NAME, progress=False)
    message = str(caught.value)
    assert f"{REPO_ID} is gated" in message
    assert f"https://huggingface.co/{REPO_ID}" in message and "licence" in message
    assert "HF_TOKEN" in message and "hf auth login" in message
    [head] = server.file_requests()
    assert head.status == status
    assert ("authorization" in head.headers) == bool(token)
    assert hub_blobs() == []


def test_free_disk_is_checked_before_downloading(hub, isolated):
    needed = shutil.disk_usage(isolated).free * 2
    write_registry(registry_entry(GOOD, file_size=needed))  # the size from models.yaml: no request at all
    server = hub()
    with pytest.raises(DownloadError, match="not enough disk space"):
        pull(NAME, progress=False)
    assert server.requests == []

    write_registry(registry_entry(GOOD, file_size=None))  # no size in models.yaml: the hub's metadata
    server.file(REPO_ID, FILENAME).claimed_size = needed
    with pytest.raises(DownloadError, match=f"need {needed / 1e9:.2f} GB"):
        pull(NAME, progress=False)
    assert [r.method for r in server.file_requests()] == ["HEAD"]
    assert hub_blobs() == []


def test_size_from_the_hub_when_models_yaml_has_none(hub):
    write_registry(registry_entry(GOOD, file_size=None))
    server = hub()
    assert pull(NAME, progress=False).read_bytes() == GOOD
    assert [r.method for r in server.file_requests()] == ["HEAD", "HEAD", "GET"]  # size probe, then download


def test_cached_model_resolves_and_pulls_with_no_server(hub):
    server = hub()
    path = pull(NAME, progress=False)
    seen = len(server.requests)
    assert resolve(NAME)[0] == path
    assert len(server.requests) == seen  # resolving never touches the network
    write_registry(registry_entry(GOOD, file_size=shutil.disk_usage(path).free * 2))
    assert pull(NAME, progress=False) == path  # already here: no disk space needed
    server.stop()
    assert resolve(NAME)[0] == path
    assert pull(NAME, progress=False) == path  # offline: huggingface-hub falls back to its cache
    assert path.read_bytes() == GOOD


def test_offline_and_nothing_cached(hub, monkeypatch):
    # HF_HUB_OFFLINE is read when huggingface-hub is imported. (An unreachable endpoint gives the same
    # error, after ~20 s of the client's own retries.)
    from huggingface_hub import constants

    server = hub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="cannot reach the Hugging Face hub .* not in the local cache"):
        pull(NAME, progress=False)
    assert server.requests == []


@pytest.mark.slow
def test_connection_that_keeps_failing_is_one_error_line(hub):
    # The client retries a broken body (5 times, 1 s apart), then gives up with its HTTP library's error.
    server = hub({FILENAME: HubFile(GOOD, cut_after=1000, cuts=100)})
    with pytest.raises(DownloadError, match="download of .* failed: .*") as caught:
        pull(NAME, progress=False)
    assert "\n" not in str(caught.value)
    attempts = [r.body_bytes for r in server.file_requests("GET")]
    assert len(attempts) > 1 and set(attempts) == {1000}
    assert all(blob.name.endswith(".incomplete") for blob in hub_blobs())  # kept for the next pull to resume
    assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob(FILENAME))


def test_missing_repo_and_missing_file(hub):
    hub({"other.gguf": GOOD})
    with pytest.raises(DownloadError, match=f"{REPO_ID} has no file {FILENAME}"):
        pull(NAME, progress=False)
    hub(repo_id="test-org/another-repo")
    with pytest.raises(DownloadError, match=f"repository {REPO_ID} not found"):
        pull(NAME, progress=False)


def test_remove_deletes_the_downloaded_file(hub):
    hub()
    path = pull(NAME, progress=False)
    blob = path.resolve()
    assert remove(NAME) == [path]
    assert not path.exists() and not blob.exists()
    assert not is_downloaded(load_registry().get(NAME))
    with pytest.raises(ModelNotFoundError, match=f"gemma-edge pull {NAME}"):
        resolve(NAME)
    assert remove(NAME) == []


# --- the CLI ------------------------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gemma-edge: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_pull_and_rm_in_process(hub):
    hub()
    pulled = invoke("pull", NAME)
    assert pulled.exit_code == 0, pulled.stderr
    path = Path(pulled.stdout.strip())
    assert path.read_bytes() == GOOD
    removed = invoke("rm", NAME)
    assert removed.exit_code == 0 and f"removed {path}" in removed.stderr
    assert not path.exists()
    again = invoke("rm", NAME)
    assert again.exit_code == 0 and "nothing to remove" in again.stderr


def test_cli_bad_inputs_are_one_line_errors(hub, isolated, monkeypatch):
    server = hub()
    assert_one_line_error(invoke("pull", "gemma-3-1b-it-tset"), "unknown model", NAME)
    assert_one_line_error(invoke("rm", "no-such-model"), "unknown model 'no-such-model'")

    server.gated.add(REPO_ID)
    assert_one_line_error(invoke("pull", NAME), f"{REPO_ID} is gated", "licence")
    server.gated.clear()

    server.file(REPO_ID, FILENAME).corrupt = True
    assert_one_line_error(invoke("pull", NAME), "sha256 does not match")
    server.file(REPO_ID, FILENAME).corrupt = False

    from huggingface_hub import constants

    blocker = isolated / "not-a-directory"  # root may write anywhere, so the cache goes under a file
    blocker.write_text("")
    monkeypatch.setenv("HF_HUB_CACHE", str(blocker / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(blocker / "hub"))
    assert_one_line_error(invoke("pull", NAME), str(blocker), "HF_HUB_CACHE")


def test_cli_pull_list_rm_as_real_subprocesses(hub):
    content = payload(64 << 10, seed=3)
    write_registry(registry_entry(content))
    server = hub({FILENAME: content})
    executable = Path(sys.executable).with_name("gemma-edge")
    # huggingface-hub draws its progress bar on a terminal only; TQDM_POSITION=-1 forces it on a pipe.
    pulled = subprocess.run([str(executable), "pull", NAME], capture_output=True, text=True, timeout=60,
                            cwd=REPO_ROOT, env={**os.environ, "TQDM_POSITION": "-1"})
    assert pulled.returncode == 0, pulled.stderr
    assert f"{FILENAME}: 100%" in pulled.stderr  # the progress bar, on stderr
    path = Path(pulled.stdout.strip())
    assert sha256_file(path) == registry_entry(content)["sha256"]
    assert str(Path(os.environ["HF_HUB_CACHE"])) in str(path)
    assert [r.method for r in server.file_requests()] == ["HEAD", "GET"]

    server.stop()  # offline now: resolving the cached model needs no server
    listed = subprocess.run([sys.executable, "-m", "gemma_edge", "list", "--downloaded"], capture_output=True,
                            text=True, timeout=60, cwd=REPO_ROOT)
    assert listed.returncode == 0 and NAME in listed.stdout, listed.stderr
    removed = subprocess.run([sys.executable, "-m", "gemma_edge", "rm", NAME], capture_output=True, text=True,
                             timeout=60, cwd=REPO_ROOT)
    assert removed.returncode == 0 and f"removed {path}" in removed.stderr, removed.stderr
    assert not path.exists()
    unknown = subprocess.run([sys.executable, "-m", "gemma_edge", "pull", "gemma-3-1b-it-tset"],
                           capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "Traceback" not in unknown.stderr


# --- projectors (mmproj) ------------------------------------------------------------------------

MMPROJ_REPO = "test-org/mmproj-GGUF"  # the projector may live in another repo than the model
MMPROJ_FILE = "mmproj-gemma-3-4b-it-f16.gguf"
PROJECTOR = payload(48 << 10, seed=10)
VISION = {"thinking": False, "tools": False, "vision": True, "audio": False}


def vision_entry(content: bytes = GOOD, projector: bytes = PROJECTOR, *, repo: str = MMPROJ_REPO, **mmproj) -> dict:
    """A vision model whose projector models.yaml lists, checksum taken from `projector`."""
    import hashlib

    listed = {"repo": repo, "file": MMPROJ_FILE, "file_size": len(projector),
              "sha256": hashlib.sha256(projector).hexdigest(), **mmproj}
    return registry_entry(content, capabilities=VISION, mmproj=listed)


@pytest.fixture
def vision_hub(hub, monkeypatch):
    """A hub serving the model (REPO_ID) and its projector (MMPROJ_REPO, or REPO_ID when same_repo)."""
    def start(projector: bytes | HubFile = PROJECTOR, *, same_repo: bool = False, **mmproj) -> HubServer:
        repo = REPO_ID if same_repo else MMPROJ_REPO
        files = {REPO_ID: {FILENAME: GOOD}}
        files.setdefault(repo, {})[MMPROJ_FILE] = projector
        server = HubServer(files).start()
        hub_servers.append(server)
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        write_registry(vision_entry(repo=repo, **mmproj))
        return server

    hub_servers: list[HubServer] = []
    yield start
    for server in hub_servers:
        server.stop()


def blob_contents() -> list[bytes]:
    return sorted(p.read_bytes() for p in hub_blobs())


@pytest.mark.parametrize("same_repo", [False, True], ids=["projector-in-another-repo", "projector-beside-model"])
def test_pull_fetches_and_verifies_the_projector(vision_hub, same_repo):
    server = vision_hub(same_repo=same_repo)
    model = pull(NAME, progress=False)
    projector = mmproj_path(NAME)
    assert model.read_bytes() == GOOD and projector.read_bytes() == PROJECTOR
    assert Path(os.environ["HF_HUB_CACHE"]) in projector.parents  # the same cache, the same code path
    assert projector.name == MMPROJ_FILE
    assert mmproj_path(load_registry().get(NAME)) == projector  # by name or by entry
    projector_repo = REPO_ID if same_repo else MMPROJ_REPO
    assert f"/{projector_repo}/resolve/main/{MMPROJ_FILE}" in [r.path for r in server.file_requests("HEAD")]
    assert len(server.file_requests("GET")) == 2  # one body each
    assert_plain_http_file_protocol(server)
    server.stop()  # found offline afterwards, and pulled again from the cache
    assert mmproj_path(NAME) == projector and pull(NAME, progress=False) == model


def test_pinned_projector_revision(vision_hub):
    server = vision_hub(same_repo=True)
    commit = server.repos[REPO_ID].commit
    write_registry(vision_entry(repo=REPO_ID, revision=commit))
    pull(NAME, progress=False)
    assert mmproj_path(NAME).parent.name == commit
    assert f"/{REPO_ID}/resolve/{commit}/{MMPROJ_FILE}" in [r.path for r in server.file_requests("HEAD")]


@pytest.mark.parametrize("served", ["corrupted-in-transit", "replaced-upstream"])
def test_projector_sha256_mismatch_removes_only_the_projector(vision_hub, served):
    if served == "corrupted-in-transit":
        server = vision_hub(HubFile(PROJECTOR, corrupt=True))
    else:
        server = vision_hub(payload(len(PROJECTOR), seed=11))
    with pytest.raises(ProjectorDownloadError) as caught:
        pull(NAME, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{NAME}: the model is downloaded (")
    assert f"{MMPROJ_REPO}/{MMPROJ_FILE}: sha256 does not match models.yaml; the file was removed" in message
    assert [r for r in server.file_requests("GET") if MMPROJ_FILE in r.path], "the projector was never downloaded"
    model, _ = resolve(NAME)  # the model stays, verified
    assert sha256_file(model) == registry_entry(GOOD)["sha256"] and str(model) in message
    assert mmproj_path(NAME) is None
    assert blob_contents() == [GOOD]  # nothing of the projector is left, not even a partial file
    assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob(f"{MMPROJ_FILE}*"))
    assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob("*.incomplete"))


def test_projector_missing_on_the_hub_is_one_line_and_keeps_the_model(vision_hub):
    server = vision_hub()
    server.repos[MMPROJ_REPO].files.pop(MMPROJ_FILE)
    result = invoke("pull", NAME)
    assert_one_line_error(result, f"{NAME}: the model is downloaded", f"{MMPROJ_REPO} has no file {MMPROJ_FILE}")
    assert resolve(NAME)[0].read_bytes() == GOOD
    assert mmproj_path(NAME) is None


def test_no_mmproj_skips_the_projector_and_a_later_pull_fetches_it(vision_hub):
    server = vision_hub()
    skipped = invoke("pull", NAME, "--no-mmproj")
    assert skipped.exit_code == 0, skipped.stderr
    assert Path(skipped.stdout.strip()).read_bytes() == GOOD
    assert "mmproj: skipped (--no-mmproj)" in skipped.stderr
    assert not [r for r in server.file_requests() if MMPROJ_FILE in r.path]
    assert mmproj_path(NAME) is None

    pulled = invoke("pull", NAME)
    assert pulled.exit_code == 0, pulled.stderr
    projector = mmproj_path(NAME)
    assert projector.read_bytes() == PROJECTOR
    assert f"mmproj: {projector}" in pulled.stderr
    assert len([r for r in server.file_requests("GET") if FILENAME in r.path]) == 1  # the model came once


def test_free_disk_counts_the_projector(vision_hub, isolated):
    free = shutil.disk_usage(isolated).free
    server = vision_hub()
    write_registry(vision_entry(file_size=free))  # model + projector > free, the model alone would fit
    assert load_registry().get(NAME).projector_file.size == free and len(GOOD) < free
    with pytest.raises(DownloadError, match="not enough disk space"):
        pull(NAME, progress=False)
    assert server.requests == []


@pytest.mark.slow
def test_interrupted_projector_download_resumes(hub, monkeypatch):
    from huggingface_hub import constants

    projector = payload(constants.DOWNLOAD_CHUNK_SIZE + (1 << 20), seed=12)
    cut = constants.DOWNLOAD_CHUNK_SIZE + (200 << 10)
    server = HubServer({REPO_ID: {FILENAME: GOOD}, MMPROJ_REPO: {MMPROJ_FILE: HubFile(projector, cut_after=cut)}})
    server.start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        write_registry(vision_entry(projector=projector))
        pull(NAME, progress=False)
        assert mmproj_path(NAME).read_bytes() == projector
        first, second = [r for r in server.file_requests("GET") if MMPROJ_FILE in r.path]
        assert (first.status, first.body_bytes) == (200, cut) and second.status == 206
        assert second.body_bytes == len(projector) - int(second.headers["range"][len("bytes="):].rstrip("-"))
    finally:
        server.stop()


def test_rm_removes_the_model_and_its_projector(vision_hub):
    vision_hub()
    model = pull(NAME, progress=False)
    projector = mmproj_path(NAME)
    blobs = [model.resolve(), projector.resolve()]
    removed = invoke("rm", NAME)
    assert removed.exit_code == 0, removed.stderr
    assert removed.stderr.splitlines() == [f"removed {model}", f"removed {projector}"]
    assert not any(p.exists() for p in [model, projector, *blobs])
    assert hub_blobs() == [] and mmproj_path(NAME) is None
    assert remove(NAME) == []


def test_rm_keeps_a_projector_another_downloaded_model_uses(vision_hub):
    vision_hub()
    other = {**vision_entry(), "name": "gemma-3-4b-it-q4_0-test", "source": {"repo": REPO_ID, "file": "other.gguf"},
             "sha256": None, "file_size": None}
    server = HubServer({REPO_ID: {FILENAME: GOOD, "other.gguf": payload(1000, seed=13)},
                        MMPROJ_REPO: {MMPROJ_FILE: PROJECTOR}}).start()
    try:
        os.environ["HF_ENDPOINT"] = server.endpoint
        write_registry(vision_entry(), other)
        pull(NAME, progress=False)
        pull(other["name"], progress=False)
    finally:
        server.stop()
    projector = mmproj_path(NAME)
    assert mmproj_path(other["name"]) == projector
    kept = invoke("rm", NAME)
    assert kept.exit_code == 0 and f"kept {projector}: the projector of {other['name']} too" in kept.stderr
    assert projector.read_bytes() == PROJECTOR
    assert remove(other["name"])[1:] == [projector]  # the last user takes it along
    assert not projector.exists()


def test_mmproj_path_resolution(vision_hub, isolated):
    vision_hub()
    write_registry(vision_entry(), registry_entry(GOOD, name="text-only-test"),
                   registry_entry(GOOD, name="no-projector-test", capabilities=VISION,
                                  mmproj={"unavailable": "no public source names one"}),
                   registry_entry(GOOD, name="converted-test", capabilities=VISION,
                                  source={"convert": {"repo": "google/gemma-3-4b-it", "type": "q4_k_m"}}))
    registry = load_registry()
    assert mmproj_path(NAME) is None  # listed, not downloaded yet
    assert mmproj_path("text-only-test") is None
    assert mmproj_path("no-projector-test") is None
    assert registry.get("no-projector-test").projector_unavailable == "no public source names one"
    assert registry.get("text-only-test").projector_unavailable is None
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        mmproj_path("no-such-model")

    # a converted model: `gemma-edge convert` writes mmproj-<stem>.gguf beside the text GGUF
    converted = isolated / "gemma-edge" / "models" / "converted-test.gguf"
    with pytest.raises(ModelNotFoundError, match="it writes the projector mmproj-converted-test.gguf beside it"):
        pull("converted-test")
    converted.parent.mkdir(parents=True)
    converted.write_bytes(GOOD)
    assert pull("converted-test") == converted and mmproj_path("converted-test") is None
    beside = converted.with_name("mmproj-converted-test.gguf")
    beside.write_bytes(PROJECTOR)
    assert mmproj_path("converted-test") == beside == projector_beside(converted)
    assert remove("converted-test") == [converted, beside]
    assert not beside.exists()


def write_projector_gguf(path: Path, *, vision: bool, audio: bool) -> None:
    """A real (tensor-less) mmproj GGUF header, as clip.cpp reads it, written by gguf-py."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_bool("clip.has_vision_encoder", vision)
    writer.add_bool("clip.has_audio_encoder", audio)
    if vision:
        writer.add_string("clip.vision.projector_type", "gemma4v")
    if audio:
        writer.add_string("clip.audio.projector_type", "gemma4a")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_list_shows_what_can_see_and_whether_its_projector_is_here(vision_hub):
    vision_hub()
    write_registry(vision_entry(), registry_entry(GOOD, name="text-only-test", source={"repo": REPO_ID, "file":
                                                                                       "absent.gguf"}),
                   registry_entry(GOOD, name="no-projector-test", capabilities=VISION,
                                  source={"repo": REPO_ID, "file": "absent.gguf"},
                                  mmproj={"unavailable": "no public source names one"}))

    def row(name):
        listed = invoke("list")
        assert listed.exit_code == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        assert header.split()[-2:] == ["LOCAL", "MMPROJ"]
        return next(r.split() for r in rows if r.strip().lstrip("*").split()[0] == name)

    assert row(NAME)[-3:] == ["vision", "no", "no"]
    assert row("text-only-test")[-2:] == ["no", "-"]
    assert row("no-projector-test")[-2:] == ["no", "none"]
    invoke("pull", NAME, "--no-mmproj")
    assert row(NAME)[-2:] == ["yes", "no"]
    invoke("pull", NAME)
    assert row(NAME)[-2:] == ["yes", "yes"]


def test_info_shows_the_projector_and_the_inputs_it_gives(embedded_model_path, isolated):
    """A real model GGUF (the embedded 270M) with a real projector header beside it, as `convert`
    lays them out, and a registry model converted the same way."""
    model = isolated / "model.gguf"
    model.symlink_to(embedded_model_path)

    def info(target):
        result = invoke("info", str(target), "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    facts = info(model)
    assert (facts["input"], facts["mmproj"]) == ("text", "none (mmproj-model.gguf not found beside the model)")
    model.with_name("mmproj-model.gguf").write_bytes(PROJECTOR)  # not a GGUF: info still answers
    facts = info(model)
    assert facts["input"] == "text" and facts["mmproj"].startswith(f"{model.with_name('mmproj-model.gguf')} (unusable:")
    write_projector_gguf(model.with_name("mmproj-model.gguf"), vision=True, audio=True)
    facts = info(model)
    assert (facts["input"], facts["mmproj"]) == ("text, image, audio", str(model.with_name("mmproj-model.gguf")))

    write_registry(registry_entry(GOOD, name="converted-test", capabilities=VISION,
                                  source={"convert": {"repo": "google/gemma-3-4b-it", "type": "q4_k_m"}}))
    converted = isolated / "gemma-edge" / "models" / "converted-test.gguf"
    converted.parent.mkdir(parents=True)
    converted.symlink_to(embedded_model_path)
    assert info("converted-test")["mmproj"].startswith("not found beside the model (mmproj-converted-test.gguf")
    write_projector_gguf(projector_beside(converted), vision=True, audio=False)
    facts = info("converted-test")
    assert (facts["input"], facts["mmproj"]) == ("text, image", str(projector_beside(converted)))
    assert facts["registry"]["capabilities"]["vision"] is True
    lines = invoke("info", "converted-test").stdout.splitlines()
    assert [line.split() for line in lines if line.startswith(("input ", "mmproj "))] == [
        ["input", "text,", "image"], ["mmproj", str(projector_beside(converted))]]


def test_cli_pull_shows_the_projector_progress_as_a_real_subprocess(vision_hub):
    vision_hub()
    executable = Path(sys.executable).with_name("gemma-edge")
    pulled = subprocess.run([str(executable), "pull", NAME], capture_output=True, text=True, timeout=60,
                            cwd=REPO_ROOT, env={**os.environ, "TQDM_POSITION": "-1"})
    assert pulled.returncode == 0, pulled.stderr
    assert f"{FILENAME}: 100%" in pulled.stderr and f"{MMPROJ_FILE}: 100%" in pulled.stderr
    model = Path(pulled.stdout.strip())  # stdout: the model's path only, for scripts
    assert model.read_bytes() == GOOD
    assert pulled.stderr.rstrip().splitlines()[-1] == f"mmproj: {mmproj_path(NAME)}"
