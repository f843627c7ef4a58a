"""Chunked perplexity equals an unchunked oracle: numpy on llama.cpp's full `logits_all` matrix of
each window (same model, same batch size, so llama.cpp computes the same logits)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemma_edge.perplexity import evaluate, text_tokens, windows

TEXT = ("Rain fell on the old stone bridge all afternoon. The river rose, brown and quick, and carried "
        "branches past the mill. By evening the lamps were lit along the quay, and the ferry waited for "
        "the last passengers from the station, who came running with their coats over their heads.")
N_CTX, N_BATCH = 16, 8


@given(n_tokens=st.integers(0, 400), n_ctx=st.integers(4, 80))
def test_windows_score_every_token_once_with_half_a_window_of_context(n_tokens, n_ctx):
    plan = windows(n_tokens, n_ctx)
    scored = [t for w in plan for t in range(w.score_from, w.end)]
    assert scored == list(range(1, n_tokens))
    for i, w in enumerate(plan):
        assert 1 <= w.start <= w.score_from < w.end <= n_tokens
        assert len(w.input_ids(list(range(n_tokens)))) <= n_ctx
        if i:
            assert w.score_from - w.start >= (n_ctx - 1) // 2


def oracle_nll(path, tokens, n_ctx, n_batch):
    """Per-token negative log-likelihood from the whole logits matrix of each window."""
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=n_batch, logits_all=True, n_threads=1, verbose=False)
    nll = []
    for w in windows(len(tokens), n_ctx):
        ids = w.input_ids(tokens)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[:len(ids)], dtype=np.float64)
        logp = logits - logits.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        nll += [-logp[t - w.start, tokens[t]] for t in range(w.score_from, w.end)]
    llm.close()
    return np.array(nll)


@pytest.fixture(scope="module")
def small_model(embedded_model_path):
    from gemma_edge.api import Model

    return Model(embedded_model_path, n_ctx=N_CTX, n_threads=1, n_batch=N_BATCH)


@pytest.mark.slow
def test_chunked_perplexity_equals_numpy_on_full_logits(small_model, embedded_model_path):
    tokens = text_tokens(small_model, TEXT)[:28]
    assert len(windows(len(tokens), N_CTX)) >= 3  # several windows, several batches per window
    result = evaluate(small_model.engine, tokens, N_CTX)
    expected = oracle_nll(embedded_model_path, tokens, N_CTX, N_BATCH)
    assert result.n_scored == len(expected) == len(tokens) - 1
    np.testing.assert_allclose(result.nll, expected, rtol=1e-5, atol=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected.mean()), rel=1e-6)


@pytest.mark.slow
def test_kl_against_the_same_weights_is_zero(small_model, embedded_model_path):
    """A second engine on the same file gives the same distribution at every scored position; a
    misaligned row would show up as a large KL and top-token disagreement."""
    from gemma_edge.api import Model

    reference = Model(embedded_model_path, n_ctx=N_CTX, n_threads=1, n_batch=N_BATCH)
    tokens = text_tokens(small_model, TEXT)[:24]
    result = evaluate(small_model.engine, tokens, N_CTX, reference=reference.engine)
    assert result.kl_mean == pytest.approx(0.0, abs=1e-9) and result.top1_agreement == 1.0
    reference.close()


def test_chat_tokens_wrap_the_text_as_a_model_reply(small_model):
    tokens = text_tokens(small_model, "Hello there.", chat=True)
    text = small_model.engine.detokenize(tokens)
    assert text.index("<start_of_turn>user") < text.index("<start_of_turn>model\nHello there.<end_of_turn>")


@pytest.mark.slow
def test_perplexity_cli_json(embedded_model_path, tmp_path, small_model):
    """The command reports what the library computes (whose numbers the oracle test checks)."""
    from click.testing import CliRunner

    from gemma_edge.cli import main

    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT[:80], encoding="utf-8")
    result = CliRunner().invoke(main, ["perplexity", str(embedded_model_path), str(text_file), "--ctx-size", str(N_CTX),
                                       "--batch-size", str(N_BATCH), "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    tokens = text_tokens(small_model, TEXT[:80])
    expected = evaluate(small_model.engine, tokens, N_CTX)
    assert data["n_scored"] == expected.n_scored == len(tokens) - 1
    assert data["perplexity"] == pytest.approx(expected.perplexity, rel=1e-9)
