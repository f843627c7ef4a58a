"""The streaming parser on hand-made chunkings: held-back partial markers, event order, and
agreement with the whole-output parse."""
from __future__ import annotations

import pytest

from gemma_edge.parsing import StreamParser, parse_response
from tests.parsing.streamcheck import check_stream, feed_all

Q = '<|"|>'
OUTPUTS = [
    "<|channel>thought\nThe user greets me.\n<channel|>Hello! How can I help?",
    f"Let me check.<|tool_call>call:get_weather{{city:{Q}Paris, FR{Q},days:3}}<tool_call|><|tool_response>",
    f"<|channel>thought\nplan<channel|><|tool_call>call:a{{x:{Q}}}{{{Q}}}<tool_call|><|tool_call>call:b{{}}<tool_call|>ok<turn|>junk",
    "<|channel>thought\ncut off mid-thou",
    "Plain answer with < and <| and <turn but no markers.",
    "A\n\n<|tool_call>call:f{a:1}\n\nB <|tool_response>  ",
    "Answer <tool_call|> stray markers <|\"|> stay text",
    "<channel|>Stray <channel|>closes <|channel><|channel>thought\nand openers<channel|> vanish",
    "<|channel>thought<channel|>Budget zero.",
]


def split_every(text, size):
    return [text[i:i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("text", OUTPUTS)
@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 1000])
def test_any_fixed_chunking_matches_whole(text, size):
    check_stream(split_every(text, size), "gemma4")


def test_partial_marker_is_held_back():
    parser = StreamParser("gemma4")
    assert parser.feed("Hello <|chan") == [{"type": "content", "text": "Hello"}]
    assert parser.feed("nel>thou") == []                 # the channel label is still undecided
    assert parser.feed("ght\nhm") == [{"type": "thinking", "text": "hm"}]
    assert parser.feed("m, ok <chan") == [{"type": "thinking", "text": "m, ok"}]
    assert parser.feed("nel|> Bye") == [{"type": "content", "text": "  Bye"}]
    assert parser.close() == {"role": "assistant", "thinking": "hmm, ok", "content": "Hello  Bye",
                              "tool_calls": [], "errors": []}


def test_label_name_alone_is_never_emitted():
    parser = StreamParser("gemma4", enable_thinking=True)
    assert parser.feed("<|channel>thought") == []        # label, or the start of a thought?
    assert parser.feed("<channel|>Hi") == [{"type": "content", "text": "Hi"}]
    assert parser.close()["thinking"] is None


def test_tool_call_event_only_when_complete():
    parser = StreamParser("gemma4")
    events = []
    text = f"<|tool_call>call:f{{a:{Q}x{Q}}}<tool_call|>"
    for i, ch in enumerate(text):
        got = parser.feed(ch)
        if got:
            events.append((i, got))
    assert events == [(len(text) - 1, [{"type": "tool_call", "tool_call": {
        "type": "function", "function": {"name": "f", "arguments": {"a": "x"}}}}])]


def test_unclosed_call_is_emitted_at_finish():
    parser = StreamParser("gemma4")
    call = {"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}
    assert parser.feed("<|tool_call>call:f{a:1} and") == []
    assert parser.finish() == [{"type": "tool_call", "tool_call": call}, {"type": "content", "text": "and"}]
    assert parser.finish() == []
    assert parser.close()["tool_calls"] == [call]


def test_trailing_whitespace_held_until_more_text():
    parser = StreamParser("gemma4")
    assert parser.feed("Hi ") == [{"type": "content", "text": "Hi"}]
    assert parser.feed("\n") == []
    assert parser.feed("there") == [{"type": "content", "text": " \nthere"}]


def test_nothing_after_end_marker():
    parser = StreamParser("gemma4")
    parser.feed("Done<turn|>")
    assert parser.feed("<|channel>thought\nmore") == []
    assert parser.close()["thinking"] is None


def test_close_is_idempotent_and_equals_parse_response():
    text = OUTPUTS[2]
    parser = StreamParser("gemma4")
    parser.feed(text)
    assert parser.close() == parser.close() == parse_response(text, format="gemma4")


def test_thinking_off_emits_no_thinking_events():
    events, closed = feed_all(split_every(OUTPUTS[0], 3), "gemma4", enable_thinking=False)
    assert all(ev["type"] == "content" for ev in events)
    assert closed["thinking"] is None and closed["content"] == "Hello! How can I help?"


def test_large_call_streams_in_linear_time():
    """A 400 KB write() streamed 4 characters at a time finishes quickly (no re-scan per delta)."""
    import time

    body = "x, y: {z}\n" * 40_000
    text = f"<|tool_call>call:write{{content:{Q}{body}{Q}}}<tool_call|>"
    start = time.perf_counter()
    _events, closed = feed_all(split_every(text, 4), "gemma4")
    assert time.perf_counter() - start < 2.0
    assert closed["tool_calls"][0]["function"]["arguments"]["content"] == body


def test_state_follows_the_output():
    parser = StreamParser("gemma4")
    seen = []
    for delta in ["Hi", "<|channel>", "thought\nhm", "<channel|>", "<|tool_call>call:f{", "}<tool_call|>", "ok<turn|>"]:
        parser.feed(delta)
        seen.append(parser.state)
    assert seen == ["content", "thinking", "thinking", "content", "call", "content", "done"]
    assert StreamParser("gemma4", prompt_tail="<|turn>model\n<|channel>thought\n").state == "thinking"
