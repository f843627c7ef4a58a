"""tokenizer.ggml.suppress_tokens (Gemma 4 12B Unified's generation_config.json → GGUF) is honoured by the real
engine: a suppressed id is never generated, greedy or sampled, while the same model without the key does
generate those ids (so the test can fail).

The checkpoint is the tiny Unified one (tests/convert/tiny_gemma4_unified.py); the suppressed set is chosen
from the model's own raw logits: the 40 likeliest next tokens after the prompt (of 512)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.convert.oracle import llama_logits
from tests.convert.tiny import linked_copy
from tests.convert.tiny_gemma4 import TINY_VOCAB_SIZE, convert_with_ours, token_ids
from tests.convert.tiny_gemma4_unified import unified_checkpoint

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow  # two conversions and three engine loads

PROMPT = token_ids(24, TINY_VOCAB_SIZE, seed=5)
N_SUPPRESSED = 40


def _with_suppress_tokens(source: Path, directory: Path, ids: list[int] | None) -> Path:
    def suppress(generation: dict) -> None:
        generation.pop("suppress_tokens")
        if ids is not None:
            generation["suppress_tokens"] = ids

    return linked_copy(source, directory, suppress, edited="generation_config.json")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path, list[int]]:
    """(GGUF without suppress tokens, GGUF suppressing the likeliest next tokens, those ids best first)."""
    root = tmp_path_factory.mktemp("suppress")
    source = unified_checkpoint()
    plain = convert_with_ours(_with_suppress_tokens(source, root / "plain", None), root / "plain.gguf", "f32")
    ranked = [int(i) for i in np.argsort(llama_logits(plain, PROMPT)[-1])[::-1]]
    checkpoint = _with_suppress_tokens(source, root / "suppressing", ranked[:N_SUPPRESSED])
    return plain, convert_with_ours(checkpoint, root / "suppressing.gguf", "f32"), ranked


def _generated(path: Path, runs: int = 4, **sampling) -> list[list[int]]:
    from gemma_edge.llama.engine import Engine
    from gemma_edge.model import read_model_facts
    from gemma_edge.runtime import resolve_settings
    from gemma_edge.sampling import Sampling

    facts = read_model_facts(path)
    engine = Engine(facts, resolve_settings(facts, n_ctx=256, n_threads=2))
    try:
        runs_tokens = []
        for seed in range(runs):
            generation = engine.generate(PROMPT, Sampling(seed=seed, **sampling), max_tokens=48)
            generation.text()
            runs_tokens.append(generation.tokens)
        return runs_tokens
    finally:
        engine.close()


def test_facts_read_the_suppressed_ids(models) -> None:
    from gemma_edge.model import read_model_facts

    plain, suppressing, ranked = models
    assert read_model_facts(suppressing).suppress_tokens == tuple(sorted(ranked[:N_SUPPRESSED]))
    assert read_model_facts(plain).suppress_tokens == ()


def test_greedy_skips_the_suppressed_argmax(models) -> None:
    plain, suppressing, ranked = models
    [unsuppressed] = _generated(plain, runs=1, temperature=0)
    assert unsuppressed[0] == ranked[0]  # the raw argmax
    [greedy] = _generated(suppressing, runs=1, temperature=0)
    assert greedy[0] == ranked[N_SUPPRESSED]  # the best token that is not suppressed
    assert not set(greedy) & set(ranked[:N_SUPPRESSED])


def test_sampling_never_picks_a_suppressed_id(models) -> None:
    plain, suppressing, ranked = models
    ids = ranked[:N_SUPPRESSED]
    hot = dict(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    assert set().union(*_generated(plain, **hot)) & set(ids)  # they would be generated
    for run in _generated(suppressing, **hot):
        assert not set(run) & set(ids), run
