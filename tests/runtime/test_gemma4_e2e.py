"""Gemma 4 end to end through the real engine: a tiny random Gemma 4 GGUF with the real Gemma 4
vocabulary (so <|channel>, <|tool_call>, <|"|> … are real tokens), outputs forced with GBNF grammars."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gemma4(gemma4_vocab_path):
    from gemma_edge.api import Model
    from tests.convert.tiny_gemma4 import tiny_gemma4_gguf

    model = Model(tiny_gemma4_gguf("e2b"), n_ctx=256)
    assert model.format == "gemma4-small"
    return model


def ids(model, *markers):
    return [model.engine.special_id(m) for m in markers]


def get_weather(city: str) -> dict:
    """Current weather for a city.

    Args:
        city: The city's name.
    """
    return {"city": city, "sky": "sunny", "celsius": 21}


def test_scripted_tool_loop_parses_streamed_calls_and_feeds_results_back(gemma4):
    # End-of-generation tokens (<turn|>, <|tool_response>, <eos>) cannot be named in a grammar: llama.cpp
    # allows them only once the grammar is complete, so each grammar ends where the model would stop.
    call, end_call, quote = ids(gemma4, "<|tool_call>", "<tool_call|>", '<|"|>')
    call_grammar = (f'root ::= <[{call}]> "call:get_weather{{city:" <[{quote}]> "Paris" <[{quote}]> "}}" '
                    f'<[{end_call}]>')
    answer_grammar = 'root ::= "It is sunny in Paris."'
    history = [{"role": "user", "content": "What's the weather in Paris?"}]
    from gemma_edge.chat import tool_rounds

    events = []
    rounds = tool_rounds(gemma4, history, tools=[get_weather], execute_tools=True, max_tool_rounds=2,
                         grammar=[call_grammar, answer_grammar], temperature=0, max_tokens=40)
    while True:
        try:
            events.append(next(rounds))
        except StopIteration as done:
            final = done.value
            break
    calls = [e["tool_call"] for e in events if e["type"] == "tool_call"]
    assert calls == [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    results = [e["message"] for e in events if e["type"] == "tool_result"]
    assert len(results) == 1 and json.loads(results[0]["content"]) == get_weather("Paris")
    assert final.content == "It is sunny in Paris." and final.tool_calls == [] and final.finish_reason == "stop"
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    # The second round's prompt holds the call and its response exactly as the template renders them.
    from gemma_edge.formats import render_prompt

    prompt = render_prompt(history[:3], format="gemma4-small")
    assert '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>' in prompt
    assert "<|tool_response>response:get_weather{" in prompt


def label_end(model, tokens, opened):
    """The index of the first token after the opener that is not part of the label `thought\\n`
    (a token running past the label counts as thinking)."""
    for end in range(opened + 2, len(tokens) + 1):
        text = model.engine.detokenize(tokens[opened + 1:end])
        if text.startswith("thought\n"):
            return end if text == "thought\n" else end - 1
    raise AssertionError("no `thought` label after the channel opener")


@pytest.mark.parametrize("budget", [3, 7])
def test_thinking_budget_closes_the_channel_after_exactly_n_tokens(gemma4, budget):
    channel, end_channel = ids(gemma4, "<|channel>", "<channel|>")
    grammar = f'root ::= <[{channel}]> "thought\\n" [a-z ]+ <[{end_channel}]> "Answer."'
    stream = gemma4.stream("Think, then answer.", enable_thinking=True, thinking_budget=budget, grammar=grammar,
                           temperature=0, max_tokens=60)
    events = list(stream)
    tokens = stream.decode_run.tokens
    opened, closed = tokens.index(channel), tokens.index(end_channel)
    assert closed - label_end(gemma4, tokens, opened) == budget  # the label is not thinking
    response = stream.response
    assert response.content == "Answer."
    assert response.thinking is not None and response.finish_reason == "stop"
    streamed = "".join(e["text"] for e in events if e["type"] == "thinking")
    assert streamed.strip() == response.thinking


def test_thinking_budget_zero_closes_the_channel_right_after_its_label(gemma4):
    """`--thinking-budget 0`: the grammar lets the model think after the label; the budget forces
    `<channel|>` right after it, and the label-only block parses to no thinking."""
    channel, end_channel = ids(gemma4, "<|channel>", "<channel|>")
    grammar = f'root ::= <[{channel}]> "thought" ("\\n" [a-z ]+)? <[{end_channel}]> "Answer."'
    stream = gemma4.stream("Think, then answer.", enable_thinking=True, thinking_budget=0, grammar=grammar,
                           temperature=0, max_tokens=60)
    events = list(stream)
    assert gemma4.engine.detokenize(stream.decode_run.tokens) == "<|channel>thought<channel|>Answer."
    response = stream.response
    assert (response.thinking, response.content, response.finish_reason) == (None, "Answer.", "stop")
    assert [e for e in events if e["type"] == "thinking"] == []


def test_thinking_off_drops_a_thought_channel_the_model_emits_anyway(gemma4):
    channel, end_channel = ids(gemma4, "<|channel>", "<channel|>")
    grammar = f'root ::= <[{channel}]> "thought\\nhmm" <[{end_channel}]> "Done."'
    response = gemma4.generate("Answer.", enable_thinking=False, grammar=grammar, temperature=0, max_tokens=30)
    assert response.thinking is None and response.content == "Done."
