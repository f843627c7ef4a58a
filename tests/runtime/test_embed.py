"""Model.embed and `gemma-edge embed` on a tiny EmbeddingGemma converted by our converter, through the
real llama.cpp. Numerical parity with sentence-transformers is tests/convert/test_embeddinggemma.py's;
here: prompts, Matryoshka, batching, the CLI, and the clear errors between chat and embedding models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gemma_edge.embedding import TASK_PROMPTS, EmbeddingError, matryoshka
from gemma_edge.errors import ContextOverflowError, NotAChatModelError, NotAnEmbeddingModelError
from tests.convert.tiny_embeddinggemma import PUBLISHED_PROMPTS, tiny_embeddinggemma_gguf
from tests.runtime.test_cli import invoke, run_subprocess

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gguf():
    return tiny_embeddinggemma_gguf("f32")


@pytest.fixture(scope="module")
def embedder(gguf):
    import gemma_edge

    model = gemma_edge.load(str(gguf), n_threads=1)
    yield model
    model.close()


def test_task_prompts_are_the_published_ones() -> None:
    """Our task names → google/embeddinggemma-300m's config_sentence_transformers.json prompts."""
    published = {"query": "query", "document": "document", "classification": "Classification",
                 "clustering": "Clustering", "similarity": "STS", "code_retrieval": "InstructionRetrieval",
                 "summarization": "Summarization"}
    for ours, theirs in published.items():
        assert TASK_PROMPTS[ours] == PUBLISHED_PROMPTS[theirs]
    # the model card's table only (not in the sentence-transformers config)
    assert TASK_PROMPTS["question_answering"] == "task: question answering | query: "
    assert TASK_PROMPTS["fact_checking"] == "task: fact checking | query: "


def test_embed_applies_the_task_prompt(embedder) -> None:
    text = "where is la pi nu"
    for task, prompt in TASK_PROMPTS.items():
        assert np.allclose(embedder.embed(text, task=task), embedder.embed(prompt + text, task="none"), atol=1e-6)
    assert not np.allclose(embedder.embed(text, task="query"), embedder.embed(text, task="document"), atol=1e-3)


def test_shapes_normalisation_and_matryoshka(embedder) -> None:
    texts = ["one", "two words", "three little words"]
    full = embedder.embed(texts)
    assert full.shape == (3, 64) and full.dtype == np.float32
    assert np.allclose(np.linalg.norm(full, axis=1), 1, atol=1e-5)
    assert embedder.embed("one").shape == (64,)
    raw = embedder.embed(texts, normalize=False)
    short = embedder.embed(texts, dimensions=16)
    expected = raw[:, :16] / np.linalg.norm(raw[:, :16], axis=1, keepdims=True)
    assert np.allclose(short, expected, atol=1e-6)
    assert np.allclose(embedder.embed(texts, dimensions=16, normalize=False), raw[:, :16], atol=1e-6)


@pytest.mark.slow
def test_a_batch_equals_one_at_a_time(embedder) -> None:
    """Many inputs (more than fit one llama.cpp batch of 1024 tokens together) give each input's own embedding."""
    texts = [("ga me " * (1 + i * 13)).strip() for i in range(16)]
    assert sum(len(embedder._embedder.tokenize(t)) for t in texts) > 2 * 1024
    together = embedder.embed(texts)
    alone = np.stack([embedder.embed(t) for t in texts[::5]])
    assert np.allclose(together[::5], alone, atol=1e-5)


def test_usage_counts_prompt_tokens(embedder) -> None:
    _, tokens = embedder.embed_with_usage(["a", "b"], task="none")
    _, prompted = embedder.embed_with_usage(["a", "b"], task="query")
    assert tokens == 2 * len(embedder._embedder.tokenize("a"))
    assert prompted > tokens


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"task": "poetry"}, EmbeddingError, "unknown embedding task"),
    ({"dimensions": 65}, EmbeddingError, "from 1 to 64"),
    ({"dimensions": 0}, EmbeddingError, "from 1 to 64"),
])
def test_bad_requests_are_clear(embedder, kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        embedder.embed("text", **kwargs)


def test_too_long_and_empty_inputs(embedder) -> None:
    with pytest.raises(ContextOverflowError, match="input 1 is .* tokens"):
        embedder.embed(["short", "ga me " * 800])
    with pytest.raises(EmbeddingError, match="empty"):
        embedder.embed([])


def test_chat_and_embedding_models_refuse_each_others_work(embedder, model) -> None:
    assert embedder.embeds and not model.embeds
    with pytest.raises(NotAChatModelError, match="embedding model"):
        embedder.generate("hi")
    with pytest.raises(NotAChatModelError):
        embedder.chat([{"role": "user", "content": "hi"}])
    with pytest.raises(NotAnEmbeddingModelError, match="does not embed"):
        model.embed("hi")


def test_matryoshka_is_pure() -> None:
    rows = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    assert np.allclose(matryoshka(rows, 2, True), [[0.6, 0.8]])
    with pytest.raises(EmbeddingError):
        matryoshka(rows, True, True)


@pytest.mark.slow
def test_cli_jsonl_and_npy(gguf, embedder, tmp_path) -> None:
    lines = ["first line", "", "second line"]
    result = run_subprocess("embed", "-m", str(gguf), "--task", "document", "--dimensions", "32",
                            input="\n".join(lines))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    expected = embedder.embed(["first line", "second line"], task="document", dimensions=32)
    assert [r["index"] for r in rows] == [0, 1]
    assert np.allclose([r["embedding"] for r in rows], expected, atol=1e-6)

    source = tmp_path / "in.txt"
    source.write_text("first line\nsecond line\n")
    out = tmp_path / "out.npy"
    result = run_subprocess("embed", "-m", str(gguf), "--format", "npy", "-o", str(out), str(source))
    assert result.returncode == 0, result.stderr
    assert np.allclose(np.load(out), embedder.embed(["first line", "second line"]), atol=1e-6)


@pytest.mark.slow
def test_cli_errors_are_one_line(gguf, embedded_model_path, tmp_path) -> None:
    out = tmp_path / "never.npy"
    for args, stdin, message in [
        (("embed", "-m", str(gguf), "-o", str(out), "--format", "npy"), "ok\n" + "ga me " * 800, "tokens"),
        (("embed", "-m", str(gguf)), "\n\n", "no text to embed"),
        (("embed", "-m", str(embedded_model_path)), "hi", "does not embed"),
        (("run", "-m", str(gguf), "hi"), None, "embedding model"),
        (("chat", "-m", str(gguf)), "hi\n", "embedding model"),
    ]:
        result = run_subprocess(*args, input=stdin)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


TRAP = """
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], embedding=True, n_ctx=600, n_batch=600, n_ubatch=600, n_threads=1, verbose=False)
llm.embed(["ga me " * 50])
"""


@pytest.mark.slow
def test_micro_batch_sizing_avoids_llama_cpps_abort(gguf) -> None:
    """llama-cpp-python 0.3.36 aborts the whole process on this architecture when n_ubatch is not a
    multiple of 256 (checked in a child process); the same 600-token limit through gemma-edge works."""
    import subprocess
    import sys

    from gemma_edge.api import Model
    from gemma_edge.embedding import context_size

    crashed = subprocess.run([sys.executable, "-c", TRAP, str(gguf)], capture_output=True, text=True, timeout=120)
    assert crashed.returncode != 0 and "ggml_can_mul_mat" in crashed.stderr
    assert all(context_size(n) % 256 == 0 and context_size(n) >= n for n in range(1, 3000, 7))
    model = Model(gguf, n_ctx=600, n_threads=1)
    try:
        long_text = "ga me " * 270
        assert 512 < len(model._embedder.tokenize(long_text)) <= 600
        assert model.embed([long_text, "short"]).shape == (2, 64)
    finally:
        model.close()


@pytest.mark.slow
def test_cli_search_ranks_paragraphs_like_the_library(gguf, embedder, tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("ga me la pi\nnu ver\n\nsa li on dre\n")
    (tmp_path / "sub" / "b.txt").write_text("ken ize ro\n")
    (tmp_path / "skipped.md").write_text("sa li on dre\n")
    result = run_subprocess("search", "-m", str(gguf), "sa li on", str(tmp_path), "--top", "3")
    assert result.returncode == 0, result.stderr
    found = [line.split("  ")[1] for line in result.stdout.splitlines()]
    paragraphs = {"a.txt:1": "ga me la pi\nnu ver", "a.txt:4": "sa li on dre", "sub/b.txt:1": "ken ize ro"}
    scores = embedder.embed(list(paragraphs.values()), task="document") @ embedder.embed("sa li on", task="query")
    assert found == [list(paragraphs)[i] for i in np.argsort(-scores)]


def test_info_and_list_say_it_embeds(gguf) -> None:
    facts = json.loads(invoke("info", str(gguf), "--json").stdout)
    assert facts["embeds"] is True and facts["generation"] == "embeddinggemma" and facts["instruct"] is False
    assert facts["output"].startswith("embeddings") and facts["mmproj"].startswith("none")
    row = next(line for line in invoke("list").stdout.splitlines() if "embeddinggemma-300m" in line)
    assert "embedding" in row.split() and "embeds" in row.split()
