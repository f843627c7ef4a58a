"""A draft model (`--spec draft:MODEL`) on real weights: the real Gemma 3 270M converted to Q8_0 by our
converter is the target, the embedded Q4_K_M of the same model drafts. Greedy output is the same as
without speculation; the drafter's KV cache rolls back rejected drafts exactly; bad pairs are refused in
one line before anything loads."""
from __future__ import annotations

import numpy as np
import pytest

from gemma_edge.errors import DraftModelError
from gemma_edge.llama import internals
from tests.runtime.test_cli import invoke
from tests.runtime.test_speculative import COPY, generate

PROMPTS = {
    "copy": COPY,
    "story": "Write a short story about a fox who learns to sail.\n\nStory:\n\n",
    "list": "The planets of the solar system, in order from the Sun:\n1.",
}


@pytest.fixture(scope="module")
def target_path():
    pytest.importorskip("transformers")
    from tests.convert.real_gemma3 import real_checkpoint, real_conversion

    return real_conversion(real_checkpoint(), "q8_0")


@pytest.fixture(scope="module")
def pair(target_path, embedded_model_path):
    from gemma_edge.api import Model

    model = Model(target_path, n_ctx=1024, speculative=f"draft:{embedded_model_path}")
    yield model
    model.close()


@pytest.mark.slow
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_greedy_output_is_identical_with_the_draft_model(pair, prompt):
    """Exact identity needs the target's batched logits to equal its one-token logits: the target loaded
    with a draft model decodes in exact batches (gemma_edge.llama.exact), so the story's near-tie at token
    28 (0.022 apart) no longer flips."""
    plain, plain_text, _ = generate(pair, PROMPTS[prompt], "off", raw=True, temperature=0, max_tokens=48)
    spec, spec_text, response = generate(pair, PROMPTS[prompt], None, raw=True, temperature=0, max_tokens=48)
    assert spec.tokens == plain.tokens and spec_text == plain_text
    assert response.usage["accepted_tokens"] > 0  # the Q4_K_M of the same weights agrees with the target


@pytest.mark.slow
def test_a_chat_across_turns_is_identical_and_the_drafter_reuses_its_cache(pair):
    from gemma_edge.chat import Chat

    replies = {}
    for spec in ("off", None):
        pair.engine.reset()
        chat = Chat(pair, temperature=0, max_tokens=24, **({"speculative": spec} if spec else {}))
        replies[spec] = [chat.send(f"Say it back: the number {i} is between {i - 1} and {i + 1}.") for i in range(3)]
    assert [r.content for r in replies[None]] == [r.content for r in replies["off"]]
    assert sum(r.usage["accepted_tokens"] for r in replies[None]) > 0


def test_a_draft_model_other_than_the_loaded_one_is_refused(model, embedded_model_path):
    """A request never makes a loaded model open another file (the server passes clients' values)."""
    with pytest.raises(DraftModelError, match="names a draft model this model did not load"):
        model.stream("hi", speculative=f"draft:{embedded_model_path}")


@pytest.mark.slow
def test_rolling_back_rejected_drafts_leaves_the_drafter_as_if_they_never_were(embedded_model_path, model):
    """Drafts past a context longer than the sliding window (512) and the KV cache's batch, then the
    context diverges at the first draft: the logits equal those of a drafter that never drafted."""
    from gemma_edge.llama.draft_model import DraftModel
    from gemma_edge.model import read_model_facts

    facts = read_model_facts(embedded_model_path)
    text = " ".join(f"Line {i}: the river rose and the keeper counted {i * 7} boats." for i in range(60))
    context = model.tokenize_raw(text)[:560]
    assert len(context) == 560

    def drafter():
        return DraftModel(facts, facts, n_ctx=1024, n_threads=2, available=1 << 50, n_batch=64)

    rolled, fresh = drafter(), drafter()
    try:
        assert rolled.follow(context, 10)
        drafted = []
        for _ in range(6):
            drafted.append(rolled.best()[0])
            rolled.push(drafted[-1])
        other = next(t for t in range(300, 400) if t != drafted[0])
        assert rolled.follow(context + [other], 8)
        assert internals.cached_ids(rolled.llm).tolist() == context + [other]
        fresh.follow(context, 8)
        fresh.push(other)
        logits = [internals.logits(d.llm, -1).copy() for d in (rolled, fresh)]
        np.testing.assert_array_equal(*logits)
        assert not rolled.follow(context, 1024 - len(context) + 1)  # past its context: no draft
    finally:
        rolled.close()
        fresh.close()


@pytest.mark.parametrize("draft, message", [
    ("GEMMA4_VOCAB", "draft model ggml-vocab-gemma-4.gguf's token 5 '[multimodal]' (normal) differs from target "
                     "gemma-3-270m-q4_k_m.gguf's '[multimodal]' (user-defined)"),
    ("README.md", "draft model README.md: not a GGUF file (wrong magic bytes)"),
    ("EMBEDDED", "is not smaller than the target"),
    ("no-such-model", "draft model unknown model 'no-such-model'"),
])
def test_bad_pairs_are_one_line_exit_2(draft, message, gemma4_vocab_path, embedded_model_path):
    draft = {"GEMMA4_VOCAB": str(gemma4_vocab_path), "EMBEDDED": str(embedded_model_path)}.get(draft, draft)
    result = invoke("run", "--raw", "hi", "-n", "2", "--spec", f"draft:{draft}")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_the_api_refuses_another_vocabulary_before_loading(gemma4_vocab_path):
    import gemma_edge

    with pytest.raises(DraftModelError, match="needs the target's vocabulary"):
        gemma_edge.load(speculative=f"draft:{gemma4_vocab_path}")
