"""Gemma 4 MTP drafting (`--spec mtp:DRAFTER`) on a tiny seeded Gemma 4 target and its drafter converted
by our converter (tests.runtime.tiny_gemma4_mtp): the drafter's logits through llama.cpp's MTP context against
transformers', the greedy output unchanged by it, and the refusals."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from gemma_edge.errors import GemmaEdgeError
from gemma_edge.mtp import MtpDrafterError
from gemma_edge.speculative import mtp_drafter_name, parse_spec


def test_parse_mtp_modes():
    assert parse_spec(" MTP ") == "mtp" and mtp_drafter_name("mtp") == ""
    assert parse_spec("mtp:/models/Drafter.gguf") == "mtp:/models/Drafter.gguf"
    assert mtp_drafter_name("mtp:/models/Drafter.gguf") == "/models/Drafter.gguf"
    assert mtp_drafter_name("ngram") is None
    with pytest.raises(GemmaEdgeError, match="mtp:MODEL"):
        parse_spec("mtpx")


@pytest.fixture(scope="module")
def pair(gemma4_vocab_path):
    from tests.runtime.tiny_gemma4_mtp import drafter_gguf, target_gguf

    return target_gguf(), drafter_gguf()


@pytest.fixture(scope="module")
def mtp_model(pair):
    from gemma_edge.api import Model

    target, drafter = pair
    model = Model(target, n_ctx=256, speculative=f"mtp:{drafter}")
    yield model
    model.close()


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def llama_drafter_steps(model, prompt: list[int], token: int, tokens_fed: list[int]) -> list[np.ndarray]:
    """The drafter's logits through llama.cpp after the target read `prompt`: `token` (the target's
    choice) first, then each of `tokens_fed` with the drafter's own state, all at `token`'s position."""
    engine, drafter = model.engine, model._mtp
    engine.reset()
    engine._prefill(prompt)
    state, out = drafter.target_state(), []
    for fed in [token, *tokens_fed]:
        _, state = drafter.step(fed, len(prompt), state)
        out.append(drafter.logits().astype(np.float64))
    return out


@pytest.mark.slow
def test_drafter_logits_match_transformers_within_the_window(mtp_model):
    """Three drafting steps after a 12-token prompt (shorter than the 16-token sliding window)."""
    from tests.convert.tiny_gemma4 import token_ids
    from tests.runtime.tiny_gemma4_mtp import transformers_drafter_steps

    prompt = token_ids(12, 262144, seed=3)
    token, reference = transformers_drafter_steps(prompt, steps=3)
    fed = [int(np.argmax(r)) for r in reference[:-1]]
    ours = llama_drafter_steps(mtp_model, prompt, token, fed)
    for step, (mine, theirs) in enumerate(zip(ours, reference)):
        assert int(np.argmax(mine)) == int(np.argmax(theirs)), step
        assert cosine(mine, theirs) > 0.9999, step


@pytest.mark.slow
def test_beyond_the_window_llama_cpp_attends_to_window_minus_one_sliding_keys(mtp_model):
    """Past the sliding window llama.cpp's drafter sees the last window−1 positions in its sliding layers,
    transformers' the last window+1 (an inclusive bidirectional window): given window−1 keys transformers
    comes close to llama.cpp (cosine 0.998 here; not exact: at exactly 16 tokens 0.988, a remaining
    difference not pinned down), given its own it is far (0.46). Documented in gemma_edge.llama.mtp."""
    from tests.convert.tiny_gemma4 import token_ids
    from tests.runtime.tiny_gemma4_mtp import transformers_drafter_steps

    prompt = token_ids(40, 262144, seed=3)
    token, [as_llama] = transformers_drafter_steps(prompt, sliding_keys=16 - 1)
    _, [as_transformers] = transformers_drafter_steps(prompt)
    [ours] = llama_drafter_steps(mtp_model, prompt, token, [])
    assert cosine(ours, as_llama) > 0.99
    assert cosine(ours, as_transformers) < 0.9 * cosine(ours, as_llama)


def generate(model, prompt, spec, **kw):
    model.engine.reset()  # the same KV-cache state (prompt split into the same batches) for both runs
    stream = model.stream(prompt, speculative=spec, **{"temperature": 0, "max_tokens": 60, **kw})
    stream.consume()
    return stream.decode_run


PROMPTS = ["The quick brown fox", "Write a story about a dragon", "Once upon a time"]


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_output_is_unchanged_by_mtp_drafting(mtp_model, prompt):
    plain = generate(mtp_model, prompt, "off", raw=True)
    drafted = generate(mtp_model, prompt, "mtp", raw=True)
    assert drafted.usage["drafted_tokens"] > 0
    assert drafted.tokens == plain.tokens


@pytest.mark.slow
def test_greedy_chat_is_unchanged_by_mtp_drafting(mtp_model):
    messages = [{"role": "user", "content": "Name three rivers."}]
    plain = generate(mtp_model, messages, "off")
    drafted = generate(mtp_model, messages, None)  # the mode the model was loaded with
    assert drafted.usage["drafted_tokens"] > 0 and drafted.tokens == plain.tokens


@pytest.mark.slow
def test_sampled_output_with_a_seed_is_reproducible(mtp_model):
    kw = dict(raw=True, temperature=1.0, seed=5)
    first, again = (generate(mtp_model, "Once upon a time", "mtp", **kw) for _ in range(2))
    assert first.usage["drafted_tokens"] > 0 and first.tokens == again.tokens


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_refusals_name_what_is_wrong(pair, embedded_model_path, tmp_path):
    from gemma_edge.api import Model
    from tests.runtime.tiny_gemma4_mtp import drafter_gguf

    target, drafter = pair
    cases = [
        ("mtp", target, "no MTP drafter is known for"),
        (f"mtp:{tmp_path / 'none.gguf'}", target, "no such file"),
        (f"mtp:{target}", target, "is not an MTP drafter: its architecture is 'gemma4'"),
        (f"mtp:{drafter_gguf(backbone_hidden_size=48)}", target,
         "hidden size 48 (embedding_length_out), the model's is 64"),
        (f"mtp:{drafter_gguf(vocab='tiny')}", target, "vocabulary of 512 tokens, the model's has 262,144"),
        (f"mtp:{drafter}", embedded_model_path, "MTP drafters draft for Gemma 4 models"),
    ]
    for spec, model, message in cases:
        with pytest.raises(MtpDrafterError, match=message.replace("(", r"\(").replace(")", r"\)")):
            Model(model, n_ctx=256, speculative=spec)


@pytest.mark.slow
def test_a_request_cannot_name_a_drafter_the_model_did_not_load(pair, mtp_model):
    from gemma_edge.api import Model

    plain = Model(pair[0], n_ctx=256, speculative="off")
    try:
        with pytest.raises(MtpDrafterError, match="loaded without one"):
            plain.stream("hi", speculative="mtp")
    finally:
        plain.close()
    with pytest.raises(MtpDrafterError, match="did not load"):
        mtp_model.stream("hi", speculative=f"mtp:{pair[0]}")


@pytest.mark.slow
def test_cli_refuses_in_one_line_exit_2(pair):
    from gemma_edge.cli import main

    target, _ = pair
    for spec, message in ((f"mtp:{target}", "is not an MTP drafter"), ("mtp", "no MTP drafter is known")):
        result = CliRunner().invoke(main, ["run", "hi", "-m", str(target), "--spec", spec, "-n", "2"])
        assert result.exit_code == 2, (result.output, result.exception)
        assert message in result.stderr and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1
