"""Loading without llama.cpp's AMX buffer type (issue 14), on the real llama.cpp and the embedded model.

No AMX CPU is needed: the guard's decision reads the CPU backend's extra buffer types (ggml's own
list), and the load path it takes is checked on the parameters llama.cpp received."""
from __future__ import annotations

import pytest

from gemma_edge import llama
from gemma_edge.llama import ggml
from gemma_edge.llama.ggml import cpu_extra_buffer_types
from gemma_edge.llama.loader import AMX_OPT_IN, extra_buffers_allowed, load_llama


def test_extra_buffer_types_come_from_ggml():
    names = cpu_extra_buffer_types()
    assert "CPU_REPACK" in names  # REPACK is on in every build of ours (GGML_CPU_REPACK defaults ON)
    assert extra_buffers_allowed() == ("AMX" not in names)


def test_amx_buffers_are_refused_unless_opted_in(monkeypatch):
    monkeypatch.setattr(ggml, "cpu_extra_buffer_types", lambda: ["AMX", "CPU_REPACK"])
    monkeypatch.delenv(AMX_OPT_IN, raising=False)
    assert not extra_buffers_allowed()
    monkeypatch.setenv(AMX_OPT_IN, "1")
    assert extra_buffers_allowed()


@pytest.mark.parametrize("extra_buffers", [False, True])
def test_load_sets_use_extra_bufts_for_this_load_only(embedded_model_path, extra_buffers):
    lc = llama.llama_cpp()
    original = lc.llama_cpp.llama_model_default_params
    llm = load_llama(str(embedded_model_path), extra_buffers=extra_buffers, n_ctx=64, n_threads=1, verbose=False)
    try:
        assert llm.model_params.use_extra_bufts is extra_buffers
        assert lc.llama_cpp.llama_model_default_params is original
        assert lc.llama_cpp.llama_model_default_params().use_extra_bufts is True
        assert len(llm.tokenize(b"hello")) > 0
    finally:
        llm.close()


def test_the_engine_loads_without_extra_buffers_on_an_amx_build(embedded_model_path, monkeypatch):
    """What an AMX machine gets by default: no extra buffers, and the same greedy tokens (the build
    smoke record's, from transformers)."""
    import json

    from gemma_edge.api import load
    from gemma_edge.cpu_build import SMOKE_RECORD
    from gemma_edge.measure import raw_loop

    monkeypatch.setattr(ggml, "cpu_extra_buffer_types", lambda: ["AMX", "CPU_REPACK"])
    monkeypatch.delenv(AMX_OPT_IN, raising=False)
    record = json.loads(SMOKE_RECORD.read_text())
    model = load(embedded_model_path, n_ctx=64, n_threads=2)
    try:
        assert model.engine.llm.model_params.use_extra_bufts is False
        tokens = raw_loop(model.engine.llm, record["prompt_tokens"], len(record["tokens"])).tokens
        assert list(tokens) == record["tokens"]
    finally:
        model.close()
