"""A loaded embedded model shared by the runtime tests (loading costs ~1 s)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def model(embedded_model_path):
    from gemma_edge.api import Model

    return Model(embedded_model_path, n_ctx=1024)


@pytest.fixture(scope="session")
def small_context_model(embedded_model_path):
    from gemma_edge.api import Model

    return Model(embedded_model_path, n_ctx=256)
