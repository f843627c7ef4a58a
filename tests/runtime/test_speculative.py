"""Speculative decoding on the real embedded Gemma 3 270M (it has sliding-window layers): on a model loaded
for it (exact batches, gemma_edge.llama.exact) the output is token for token the same with and without
drafting; only the number of decode steps changes."""
from __future__ import annotations

import pytest

# A prompt the model continues by copying: prompt lookup drafts, and most drafts are accepted.
COPY = ("Repeat the paragraph exactly.\n\nThe river rose for three days. On the fourth, the bridge keeper "
        "opened the old gates, and the water ran into the fields behind the mill, where nobody lived any more."
        "\n\nRepeat:\n\nThe river rose for three days.")


def generate(model, prompt, spec, **kw):
    model.engine.reset()  # the same KV-cache state (prompt split into the same batches) for both runs
    stream = model.stream(prompt, speculative=spec, **kw)
    deltas = [event["text"] for event in stream if event["type"] == "content"]
    return stream.decode_run, "".join(deltas), stream.response


def test_greedy_raw_output_is_identical_and_drafts_are_accepted(spec_model):
    plain, plain_text, _ = generate(spec_model, COPY, "off", raw=True, temperature=0, max_tokens=48)
    spec, spec_text, response = generate(spec_model, COPY, "ngram", raw=True, temperature=0, max_tokens=48)
    assert spec.tokens == plain.tokens and spec_text == plain_text
    assert response.usage["accepted_tokens"] > 10  # speculation really ran, and paid
    assert "drafted_tokens" not in plain.usage


def test_sampled_output_with_a_seed_is_the_same_draw_for_draw(spec_model):
    """Sampled decoding keeps the target's distribution (the rule is tested in test_speculative_units): the
    engine draws each row's token with the target's own sampler, in the same order, from the same logits,
    so with a seed the output is the same as without drafting."""
    kw = dict(raw=True, temperature=1.0, seed=11, max_tokens=24)
    plain, _, _ = generate(spec_model, COPY, "off", **kw)
    first, _, _ = generate(spec_model, COPY, "ngram", **kw)
    again, _, _ = generate(spec_model, COPY, "ngram", **kw)
    assert first.tokens == again.tokens == plain.tokens and first.usage["drafted_tokens"] > 0


def test_stop_token_inside_an_accepted_draft_ends_the_reply(spec_model):
    """Copying a line the prompt holds four times: drafts are accepted, and a stop token in the middle
    of an accepted draft ends the reply there (a word of the line is made a stop token: the base 270M
    does not copy <end_of_turn> itself). The next generation reuses the KV cache as without speculation."""
    from gemma_edge.formats import Segment
    from gemma_edge.speculative import make_speculation

    model = spec_model
    engine = model.engine
    line = engine.tokenize([Segment("The river rose for three days and the old bridge held.", False)])
    stop = line[9]
    prompt = model.tokenize_raw("Lines:\n") + (line + [engine.llm.token_nl()]) * 4 + line[:3]
    results = {}
    saved = set(engine.stop_ids)
    engine.stop_ids.add(stop)
    try:
        for spec in ("off", "ngram"):
            engine.reset()
            gen = engine.generate(prompt, model.sampling(temperature=0), max_tokens=40,
                                  speculation=make_speculation(spec))
            gen.text()
            follow = engine.generate(prompt + gen.tokens + [stop], model.sampling(temperature=0), max_tokens=4,
                                     speculation=make_speculation(spec))
            follow.text()
            results[spec] = gen, follow
    finally:
        engine.stop_ids = saved
    (plain, plain_follow), (spec, spec_follow) = results["off"], results["ngram"]
    assert plain.tokens == spec.tokens == line[3:9]
    assert plain.finish_reason == spec.finish_reason == "stop"
    assert spec.usage["accepted_tokens"] >= 5  # the stop token came in an accepted draft
    assert spec_follow.tokens == plain_follow.tokens
    assert spec_follow.prompt_evaluated == plain_follow.prompt_evaluated < len(prompt)


def test_context_full_stops_at_the_same_token(spec_small_context_model):
    model = spec_small_context_model
    prompt = COPY + " " + " ".join(["The river rose for three days."] * 18)
    plain, _, plain_response = generate(model, prompt, "off", raw=True, temperature=0, max_tokens=200)
    spec, _, response = generate(model, prompt, "ngram", raw=True, temperature=0, max_tokens=200)
    assert plain_response.finish_reason == response.finish_reason == "length"
    assert spec.tokens == plain.tokens
    assert response.usage["total_tokens"] == model.n_ctx
    assert response.usage["accepted_tokens"] > 0


@pytest.mark.slow
def test_chat_across_turns_with_kv_reuse_and_overflow_is_identical(spec_small_context_model):
    """8 turns of a base-model chat in a 256-token context: later turns reuse the KV cache of earlier ones
    (the speculative replies' accepted drafts included) and old turns are dropped when it overflows. Before
    exact batches this conversation diverged in reply 1 at a near-tie (one-token vs batch kernels)."""
    from gemma_edge.chat import Chat

    model = spec_small_context_model
    replies, notices = {}, []
    for spec in ("off", "ngram"):
        model.engine.reset()
        chat = Chat(model, system="Repeat what the user says.", temperature=0, max_tokens=32, speculative=spec,
                    on_notice=notices.append)
        replies[spec] = [chat.send(f"Say it back: the number {i} is between {i - 1} and {i + 1}.")
                         for i in range(8)]
    assert [r.content for r in replies["ngram"]] == [r.content for r in replies["off"]]
    assert [r.usage["prompt_tokens_evaluated"] for r in replies["ngram"]] == \
        [r.usage["prompt_tokens_evaluated"] for r in replies["off"]]
    assert any("dropped" in notice for notice in notices)  # the context did overflow
    assert sum(r.usage["accepted_tokens"] for r in replies["ngram"]) > 0


def test_a_model_loaded_without_speculation_refuses_it(model):
    """Drafting on an engine that decodes one token per step would change the output at near-ties."""
    from gemma_edge.errors import GemmaEdgeError

    with pytest.raises(GemmaEdgeError, match="loaded for it"):
        model.stream(COPY, raw=True, speculative="ngram")


def test_grammar_and_interventions_decode_one_token_at_a_time(spec_model):
    """Both must see every token before the next is chosen: speculation is not used with them."""
    model = spec_model
    gen = model.engine.generate(model.tokenize_raw(COPY), model.sampling(temperature=0), max_tokens=4,
                                grammar='root ::= "yes" | "no"', speculation=make())
    gen.text()
    assert "drafted_tokens" not in gen.usage
    gen = model.engine.generate(model.tokenize_raw(COPY), model.sampling(temperature=0), max_tokens=4,
                                intervene=lambda generated: None, speculation=make())
    gen.text()
    assert "drafted_tokens" not in gen.usage


def make():
    from gemma_edge.speculative import make_speculation

    return make_speculation("ngram")


def test_unknown_mode_is_refused(model):
    from gemma_edge.errors import GemmaEdgeError

    with pytest.raises(GemmaEdgeError, match="unknown speculative mode"):
        model.stream("hi", speculative="turbo")


def test_run_json_reports_the_counts_and_validates(spec_model):
    import json

    import jsonschema

    from tests.runtime.test_cli import SCHEMA, invoke

    result = invoke("run", "--raw", COPY, "--json", "-t", "0", "-n", "16", "--ctx-size", "1024", "--spec", "ngram")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert doc["usage"]["accepted_tokens"] > 0
    _, without_drafting, _ = generate(spec_model, COPY, "off", raw=True, temperature=0, max_tokens=16)
    assert doc["content"] == without_drafting  # the same exact batches, loaded the same way
    off = json.loads(invoke("run", "--raw", COPY, "--json", "-t", "0", "-n", "16", "--ctx-size", "1024",
                            "--spec", "off").stdout)
    assert "drafted_tokens" not in off["usage"]


@pytest.mark.slow
def test_exact_rows_give_every_row_the_logits_of_a_single_step(spec_model):
    """What exactness rests on (gemma_edge.llama.exact): on the model loaded for speculation, a position's
    logits are bit for bit the same whether it is decoded on its own (with its throwaway row) or as any row
    of a 2..7-row batch, also once the KV cache passes its 256-cell padding."""
    import numpy as np

    from gemma_edge.llama import internals
    from gemma_edge.llama.exact import EXACT_ROWS

    engine = spec_model.engine
    llm = engine.llm
    tokens = spec_model.tokenize_raw(" ".join([COPY] * 6))

    def logits(row):
        return internals.logits(llm, row).copy()

    for start in (40, 252):
        engine.reset()
        llm.eval(tokens[:start])
        single = []
        for token in tokens[start:start + EXACT_ROWS.stop - 1]:
            first = engine._decode_rows([token, token], [True, engine._pad_logits])
            single.append(logits(0))
            engine._keep(first, [token])
        for n in EXACT_ROWS:
            engine._keep(start, [])
            engine._decode_rows(tokens[start:start + n], [True] * n)
            for row in range(n):
                assert np.array_equal(logits(row), single[row]), (start, n, row)
    engine.reset()


@pytest.mark.slow
def test_throwaway_row_needs_logits_unless_every_matrix_type_sums_alike(embedded_model_path, tmp_path):
    import platform

    from gemma_edge.llama.exact import throwaway_row_needs_logits
    from tests.convert.tiny_gemma4 import tiny_gemma4_gguf

    x86 = platform.machine().lower() in ("x86_64", "amd64")
    assert throwaway_row_needs_logits(embedded_model_path) is not x86  # Q4_K, Q5_0, Q6_K, Q8_0
    assert throwaway_row_needs_logits(tiny_gemma4_gguf("e2b"))  # F32 matrices: tinyBLAS vs vec_dot_f32
