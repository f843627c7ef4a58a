"""Property tests: rendered structures round-trip through the parser, any chunking of any output
(including real token-by-token detokenization with the Gemma 4 vocabulary) gives the whole-output
parse, and no input makes either parser raise.

The renderer is the project's own Gemma 4 turn format (`gemma_edge.formats`), itself tested
byte-exact against the official chat template, so the expected structure comes from the
template's way of writing an assistant turn, not from the parser."""
from __future__ import annotations

import codecs
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_edge.formats import render_prompt
from gemma_edge.parsing import SYNTAX_BY_FORMAT, StreamParser, parse_response
from tests.parsing.streamcheck import check_stream

GEMMA4_MARKERS = SYNTAX_BY_FORMAT["gemma4"].all_markers()
ALL_MARKERS = tuple(dict.fromkeys(m for s in SYNTAX_BY_FORMAT.values() for m in s.all_markers()))
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text a model writes between markers: anything, including marker-like near misses.
free_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
near_miss = st.sampled_from(["<", "|", ">", "<|", "|>", "<|tool", "call:", "{", "}", "thought\n", '"', "'",
                             ",", ":", "=", "\n", " ", "<channel", "tool_call|", "<turn", "😀", "é"])


def _clean(text: str) -> bool:
    return not any(m in text for m in GEMMA4_MARKERS)


clean_text = st.lists(st.one_of(free_text, near_miss), max_size=6).map("".join).filter(_clean)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,15}", fullmatch=True)
keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,10}", fullmatch=True)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**40, max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False), clean_text)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
calls = st.builds(lambda name, args: {"type": "function", "function": {"name": name, "arguments": args}},
                  names, st.dictionaries(keys, values, max_size=5))


def _model_turn(message: dict) -> str:
    """The assistant turn as the official template writes it: the text a model emits."""
    prompt = render_prompt([{"role": "user", "content": "hi"}, message], format="gemma4-small",
                           add_generation_prompt=False)
    return prompt.split("<|turn>model\n", 1)[1]


def _same(a, b) -> bool:
    """Equality that also tells 0.0 from -0.0 and 1 from 1.0 from True."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


@SETTINGS
@given(thinking=st.one_of(st.just(""), clean_text), tool_calls=st.lists(calls, max_size=3), content=clean_text)
def test_rendered_turn_round_trips(thinking, tool_calls, content):
    message = {"role": "assistant", "content": content}
    if thinking:
        message["reasoning_content"] = thinking
    if tool_calls:
        message["tool_calls"] = tool_calls
    text = _model_turn(message)
    got = parse_response(text, format="gemma4")
    assert got["errors"] == []
    assert got["thinking"] == (thinking.strip() or None)
    assert got["content"] == content.strip()
    assert _same(got["tool_calls"], tool_calls)
    check_stream(list(text), "gemma4")


# Outputs of any shape: markers, calls good and bad, text, in any order.
call_blocks = st.one_of(
    calls.map(lambda c: _model_turn({"role": "assistant", "content": "", "tool_calls": [c]}).split("<|tool_response>")[0]),
    st.sampled_from(['<|tool_call>call:f{a:<|"|>x}', "<|tool_call>call:f{a:1", "<|tool_call>call:f{a=1}<tool_call|>",
                     "<|tool_call>oops<tool_call|>", '<|tool_call>call:g{"k":\'v\'<|"|>}']))
pieces = st.one_of(free_text, near_miss, st.sampled_from(ALL_MARKERS), call_blocks,
                   st.sampled_from(["<|channel>thought\n", "<|channel>", "<channel|>"]))
outputs = st.lists(pieces, max_size=25).map("".join)
options = st.fixed_dictionaries({}, optional={
    "enable_thinking": st.sampled_from([None, True, False]),
    "prompt_tail": st.sampled_from(["<|turn>model\n", "<|turn>model\n<|channel>thought\n", "<|channel>thought",
                                    "<|channel>thought\n<channel|>", "<tool_response|><|channel>thought\n"]),
    "tools": st.just([{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}}}]),
})


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]


@SETTINGS
@given(text=outputs, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30),
       fmt=st.sampled_from(["gemma4", "functiongemma", "gemma3"]), opts=options)
def test_any_chunking_reassembles_to_whole_parse(text, cuts, fmt, opts):
    check_stream(_split(text, cuts), fmt, **opts)
    check_stream(list(text), fmt, **opts)


# Degenerate channel markup: openers, closers and labels in any order and number, around text that
# holds no '<' or '>' (so no marker can be formed by joining text across a dropped marker).
plain_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="<>"),
                     max_size=12)
channel_pieces = st.one_of(plain_text, st.sampled_from(
    ["<|channel>", "<channel|>", "<|channel>thought", "<|channel>thought\n", "thought", "thought\n", "\n", " ",
     "<turn|>", "<|tool_call>call:f{a:1}<tool_call|>", "<|tool_response>"]))


@SETTINGS
@given(text=st.lists(channel_pieces, max_size=20).map("".join),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=20), opts=options)
def test_channel_markers_never_reach_thinking_or_content(text, cuts, opts):
    for pieces in (_split(text, cuts), list(text)):
        whole = check_stream(pieces, "gemma4", **opts)
        for field in (whole["content"], whole["thinking"] or ""):
            assert "<|channel>" not in field and "<channel|>" not in field


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=10_000), st.text(min_size=2_000, max_size=10_000),
                     st.lists(pieces, min_size=100, max_size=400).map("".join).map(lambda t: t[:10_000])),
       cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=50),
       fmt=st.sampled_from(sorted(SYNTAX_BY_FORMAT)), opts=options)
def test_no_input_makes_a_parser_raise(text, cuts, fmt, opts):
    whole = parse_response(text, format=fmt, **opts)
    parser = StreamParser(fmt, **opts)
    for piece in _split(text, cuts):
        parser.feed(piece)
    parser.finish()
    assert parser.close() == whole


@pytest.fixture(scope="module")
def gemma4_vocab(gemma4_vocab_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(str(gemma4_vocab_path), vocab_only=True, verbose=False)


def _detokenized_pieces(vocab, text: str) -> list[str]:
    """The text as a streaming engine sees it: one token at a time, bytes decoded incrementally
    (a character split across byte-fallback tokens arrives when its last byte does)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    tokens = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    return [decoder.decode(vocab.detokenize([t], special=True)) for t in tokens] + [decoder.decode(b"", final=True)]


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=outputs, rare=st.text(alphabet=st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF) | st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF), min_size=1, max_size=6))
def test_token_by_token_detokenization(gemma4_vocab, text, rare):
    text = '<|tool_call>call:f{s:<|"|>' + rare + '<|"|>}<tool_call|>' + rare + text
    pieces = _detokenized_pieces(gemma4_vocab, text)
    assert "".join(pieces) == text
    whole = check_stream(pieces, "gemma4")
    assert whole["tool_calls"][0]["function"]["arguments"] == {"s": rare}


def test_detokenization_splits_characters(gemma4_vocab):
    """The vocabulary really splits rare characters across tokens (byte fallback), so the
    property above exercises incremental UTF-8 decoding."""
    rare = "\U0002A6A5\U0001FAE8"
    tokens = gemma4_vocab.tokenize(rare.encode(), add_bos=False, special=True)
    assert any(len(gemma4_vocab.detokenize([t], special=True).decode("utf-8", "ignore")) == 0 for t in tokens)
