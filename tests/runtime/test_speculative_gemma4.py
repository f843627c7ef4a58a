"""Speculative decoding leaves Gemma 4 replies unchanged: thinking on and off, the thinking budget, tool
calls and their stop markers, grammars and images, on tiny random Gemma 4 GGUFs with the real Gemma 4
vocabulary. Each reply is generated twice on one model loaded for speculation (greedy): without drafting,
then with a drafter that knows that reply and spoils every fifth drafted token, so that verification
accepts long drafts, rejects others mid-way, and runs batches of every exact size (a random model's
output rarely repeats its prompt, so prompt lookup itself would draft little here)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

PROMPT = "Count: one two three one two three one two three one two three"


@pytest.fixture(scope="module")
def gemma4(gemma4_vocab_path):
    from gemma_edge.api import Model
    from tests.convert.tiny_gemma4 import tiny_gemma4_gguf

    model = Model(tiny_gemma4_gguf("e2b"), n_ctx=256, speculative="ngram")
    yield model
    model.close()


class KnowingDrafter:
    """Drafts the reference reply's next tokens, every fifth of them replaced by another token."""

    def __init__(self, reply: list[int]):
        self.reply, self.start = reply, None

    def propose(self, context, limit):
        if self.start is None:
            self.start = len(context) - 1  # first called once the first generated token is in the context
        done = len(context) - self.start
        return [t + 1 if (done + i) % 5 == 4 else t for i, t in enumerate(self.reply[done:done + limit])]


def both(model, prompt, monkeypatch, **kw):
    """(without drafting, with drafting): each reply's events, tokens and response, from an empty cache."""
    from gemma_edge import api
    from gemma_edge.speculative import DraftLength, Speculation

    out = []
    for spec in ("off", "ngram"):
        if out:
            reference = out[0][1]
            monkeypatch.setattr(api, "make_speculation",
                                lambda mode, *loaded: Speculation(KnowingDrafter(reference), DraftLength()))
        model.engine.reset()
        stream = model.stream(prompt, speculative=spec, temperature=0, max_tokens=48, **kw)
        events = [(e["type"], e.get("text")) for e in stream]
        out.append((events, stream.decode_run.tokens, stream.response))
    return out


@pytest.mark.parametrize("thinking", [False, True])
def test_thinking_on_and_off(gemma4, thinking, monkeypatch):
    (events, tokens, response), (spec_events, spec_tokens, spec_response) = both(gemma4, PROMPT, monkeypatch,
                                                                                 enable_thinking=thinking)
    assert spec_tokens == tokens and spec_events == events
    assert spec_response.finish_reason == response.finish_reason
    assert spec_response.usage["accepted_tokens"] > 10


def test_thinking_budget_decodes_as_without_drafting(gemma4, monkeypatch):
    """The budget intervenes token by token: such a reply is not drafted, and is the same."""
    (_, tokens, _), (_, spec_tokens, spec_response) = both(gemma4, PROMPT, monkeypatch, enable_thinking=True,
                                                           thinking_budget=4)
    assert spec_tokens == tokens
    assert "drafted_tokens" not in spec_response.usage


def test_tool_calls_and_their_stop_markers(gemma4, monkeypatch):
    from tests.runtime.test_gemma4_e2e import get_weather

    prompt = [{"role": "user", "content": "What's the weather in Paris? " + PROMPT}]
    (events, tokens, response), (spec_events, spec_tokens, spec_response) = both(gemma4, prompt, monkeypatch,
                                                                                 tools=[get_weather])
    assert spec_tokens == tokens and spec_events == events
    assert spec_response.tool_calls == response.tool_calls and spec_response.finish_reason == response.finish_reason


def test_grammar_response_format(gemma4, monkeypatch):
    grammar = 'root ::= "{\\"count\\": [" ("\\"one\\"" | "\\"two\\"" | "\\"three\\"") ("," " "? ("\\"one\\"" | "\\"two\\"" | "\\"three\\""))* "]}"'
    (_, tokens, response), (_, spec_tokens, spec_response) = both(gemma4, PROMPT, monkeypatch, grammar=grammar)
    assert spec_tokens == tokens and spec_response.content == response.content
    assert spec_response.content.startswith('{"count": [')


def test_image_in_the_prompt(gemma4_vocab_path, monkeypatch):
    from gemma_edge.api import Model
    from tests.runtime.test_gemma4_media import image_part
    from tests.runtime.tiny_gemma4_media import gemma4_media_pair

    text, mmproj = gemma4_media_pair("e2b")
    model = Model(text, n_ctx=256, n_threads=2, mmproj=mmproj, speculative="ngram")
    try:
        prompt = [{"role": "user", "content": [image_part(64, 48, seed=3), {"type": "text", "text": PROMPT}]}]
        (events, tokens, _), (spec_events, spec_tokens, spec_response) = both(model, prompt, monkeypatch)
    finally:
        model.close()
    assert spec_tokens == tokens and spec_events == events
    assert spec_response.usage["accepted_tokens"] > 10
