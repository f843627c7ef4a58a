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


@pytest.fixture(scope="session")
def spec_model(embedded_model_path):
    """The embedded model loaded for speculative decoding (exact batches; gemma_edge.llama.exact)."""
    from gemma_edge.api import Model

    return Model(embedded_model_path, n_ctx=1024, speculative="ngram")


@pytest.fixture(scope="session")
def spec_small_context_model(embedded_model_path):
    from gemma_edge.api import Model

    return Model(embedded_model_path, n_ctx=256, speculative="ngram")
