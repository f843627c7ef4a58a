"""The output contract of issue 4, rule by rule, on the whole-output parser. Each expected value
is read off the contract text (quoted in the case id), not off the parser's output."""
from __future__ import annotations

import pytest

from gemma_edge.parsing import StreamParser, parse_response

Q = '<|"|>'


def call(name, **arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


WRITE_TOOL = {"type": "function", "function": {"name": "write", "parameters": {
    "type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"},
                                     "mode": {"type": "integer"}}}}}

# (id, text, kwargs, thinking, content, tool_calls, error kinds)
CASES = [
    ("r1 ends at first <turn|>", "Hello<turn|>ignored<|tool_call>call:f{}<tool_call|>", {}, None, "Hello", [], []),
    ("r1 ends at <eos>", "Hi there<eos><turn|>more", {}, None, "Hi there", [], []),
    ("r2 thought block label removed, stripped", "<|channel>thought\n  Let me think. \n<channel|>Answer", {},
     "Let me think.", "Answer", [], []),
    ("r2 empty thought block is None", "<|channel>thought\n<channel|>Answer", {}, None, "Answer", [], []),
    ("r2 blocks concatenated in order", "<|channel>thought\nA <channel|>x<|channel>thought\n B<channel|>y", {},
     "AB", "xy", [], []),
    ("r2 block cut off runs to the end", "<|channel>thought\nStill thinking about", {},
     "Still thinking about", "", [], []),
    ("r2 prompt opened the channel", "I should greet.<channel|>Hello!", {"prompt_tail": "<|turn>model\n<|channel>thought\n"},
     "I should greet.", "Hello!", [], []),
    ("r2 prompt closed the empty channel (large, thinking off)", "Hello!",
     {"prompt_tail": "<|turn>model\n<|channel>thought\n<channel|>", "enable_thinking": False}, None, "Hello!", [], []),
    ("r2 thinking off drops an emitted channel", "<|channel>thought\nsecret<channel|>Visible",
     {"enable_thinking": False}, None, "Visible", [], []),
    ("r2 thinking unknown reports the channel", "<|channel>thought\nmine<channel|>Visible",
     {"enable_thinking": None}, "mine", "Visible", [], []),
    ("r2 channel opened after a tool response", "Result is 4.<channel|>It is 4.",
     {"prompt_tail": "<tool_response|><|channel>thought\n", "enable_thinking": True}, "Result is 4.", "It is 4.", [], []),
    ("r2 label name alone before the close is an empty block (thinking budget 0)", "<|channel>thought<channel|>Answer",
     {}, None, "Answer", [], []),
    ("r2 label name alone cut off by the end", "<|channel>thought", {}, None, "", [], []),
    ("r2 label name alone before the end of turn", "<|channel>thought<turn|>late", {}, None, "", [], []),
    ("r2 label name followed by text is text", "<|channel>thoughtful reply<channel|>A", {}, "thoughtful reply", "A", [], []),
    ("r2 part of the label name is text", "<|channel>thou<channel|>A", {}, "thou", "A", [], []),
    ("r2 prompt wrote the label name, the model closes", "<channel|>Hello!",
     {"prompt_tail": "<|turn>model\n<|channel>thought", "enable_thinking": True}, None, "Hello!", [], []),
    ("r2 prompt wrote the label name, never output", " Let me see.<channel|>Hello!",
     {"prompt_tail": "<|turn>model\n<|channel>thought", "enable_thinking": True}, "Let me see.", "Hello!", [], []),
    ("r2 unpaired close at the start dropped", "<channel|>Answer", {}, None, "Answer", [], []),
    ("r2 unpaired close mid-content dropped", "An <channel|>answer<channel|>", {}, None, "An answer", [], []),
    ("r2 second close after a block dropped", "<|channel>thought\nA<channel|>B<channel|>C", {}, "A", "BC", [], []),
    ("r2 repeated opener starts a new block", "<|channel><|channel>thought\nA<channel|>B", {}, "A", "B", [], []),
    ("r2 opener inside a block starts a new block", "<|channel>thought\nA <|channel>thought\n B<channel|>C", {},
     "AB", "C", [], []),
    ("r2 empty thought block after the answer", "Answer<|channel>thought\n<channel|>", {}, None, "Answer", [], []),
    ("r2 label-only thought block after the answer", "Answer\n<|channel>thought<channel|>", {}, None, "Answer", [], []),
    ("r2 bare empty thought block after the answer", "Answer <|channel><channel|><turn|>", {}, None, "Answer", [], []),
    ("r2 unpaired markers with thinking off", "<channel|>A<|channel><|channel>thought\nx<channel|><channel|>B",
     {"enable_thinking": False}, None, "AB", [], []),
    ("r3 single call", f"<|tool_call>call:get_weather{{city:{Q}Paris{Q}}}<tool_call|>", {}, None, "",
     [call("get_weather", city="Paris")], []),
    ("r3 strings verbatim: braces quotes commas colons backslashes newlines unicode",
     f"<|tool_call>call:f{{s:{Q} {{a}}, \"b\": c\\n\\\\ \n ünï 😀 {Q}}}<tool_call|>", {}, None, "",
     [call("f", s=' {a}, "b": c\\n\\\\ \n ünï 😀 ')], []),
    ("r3 numbers by JSON literal rules", "<|tool_call>call:f{a:1,b:-2,c:3.5,d:-1e3,e:2E-2,f:123456789012345678901234567890}<tool_call|>",
     {}, None, "", [call("f", a=1, b=-2, c=3.5, d=-1000.0, e=0.02, f=123456789012345678901234567890)], []),
    ("r3 true false null nested objects arrays", "<|tool_call>call:f{a:true,b:false,c:null,d:{e:[1,{g:[]}],h:{}}}<tool_call|>",
     {}, None, "", [call("f", a=True, b=False, c=None, d={"e": [1, {"g": []}], "h": {}})], []),
    ("r3 JSON double-quoted strings decoded", '<|tool_call>call:f{a:"x\\ty\\u00e9"}<tool_call|>', {}, None, "",
     [call("f", a="x\ty\u00e9")], []),
    ("r3 whitespace between tokens insignificant", f"<|tool_call> call:f {{ a : 1 , b : [ 1 , 2 ] , c : {Q}x{Q} }} <tool_call|>",
     {}, None, "", [call("f", a=1, b=[1, 2], c="x")], []),
    ("r3 name may contain - . _", "<|tool_call>call:my-tool.v2_x{}<tool_call|>", {}, None, "", [call("my-tool.v2_x")], []),
    ("r3 several calls, text before and after", f"Checking.<|tool_call>call:a{{x:1}}<tool_call|><|tool_call>call:b{{y:{Q}z{Q}}}<tool_call|>Done.",
     {}, None, "Checking.Done.", [call("a", x=1), call("b", y="z")], []),
    ("r3 missing final <tool_call|> tolerated", "<|tool_call>call:f{a:1}", {}, None, "", [call("f", a=1)], []),
    ("r3 <|tool_response> right after a call dropped", "<|tool_call>call:f{}<tool_call|><|tool_response>", {}, None, "",
     [call("f")], []),
    ("r3 stray <tool_call|> right after a call dropped", "<|tool_call>call:f{}<tool_call|><tool_call|>Next", {}, None, "Next",
     [call("f")], []),
    ("r3 only calls inside markers count", "Use call:f{a:1} like this.", {}, None, "Use call:f{a:1} like this.", [], []),
    ("r4 trailing <|tool_response> dropped", "Hello <|tool_response>", {}, None, "Hello", [], []),
    ("r4 content joined as-is then stripped", "  A \n<|tool_call>call:f{}<tool_call|>\n B  ", {}, None, "A \n\n B",
     [call("f")], []),
    ("r5 unparseable call not returned, not content", "Before<|tool_call>call:f{a:1 2}<tool_call|>After", {}, None,
     "BeforeAfter", [], ["invalid_tool_call"]),
    ("r5 no call: prefix", "<|tool_call>f{a:1}<tool_call|>", {}, None, "", [], ["invalid_tool_call"]),
    ("repair missing final }", "<|tool_call>call:f{a:{b:1}<tool_call|>", {}, None, "", [call("f", a={"b": 1})],
     ["repaired_tool_call"]),
    ("repair unclosed string before }", f"<|tool_call>call:f{{a:{Q}hello}}<tool_call|>", {}, None, "",
     [call("f", a="hello")], ["repaired_tool_call"]),
    ("repair unclosed string at the end", f"<|tool_call>call:f{{a:{Q}hello", {}, None, "", [call("f", a="hello")],
     ["repaired_tool_call"]),
    ("repair = for :", f"<|tool_call>call:f{{a={Q}x{Q},b=2}}<tool_call|>", {}, None, "", [call("f", a="x", b=2)],
     ["repaired_tool_call"]),
    ("repair JSON-style keys", '<|tool_call>call:f{"a": "x", "b": 2}<tool_call|>', {}, None, "", [call("f", a="x", b=2)],
     ["repaired_tool_call"]),
    ("repair single-quoted keys and values", "<|tool_call>call:f{'a': 'it''s', b:'y'}<tool_call|>", {}, None, "",
     [call("f", a="it''s", b="y")], ["repaired_tool_call"]),
    ("repair bare multi-line value for a string parameter",
     "<|tool_call>call:write{path:/tmp/a.md,content:\n# Title\n\nSome text, with: punctuation}<tool_call|>",
     {"tools": [WRITE_TOOL]}, None, "", [call("write", path="/tmp/a.md", content="\n# Title\n\nSome text, with: punctuation")],
     ["repaired_tool_call"]),
    ("repair bare value kept verbatim, leading newlines included",
     "<|tool_call>call:write{content:\n\n  indented\n}<tool_call|>", {"tools": [WRITE_TOOL]}, None, "",
     [call("write", content="\n\n  indented\n")], ["repaired_tool_call"]),
    ("repair bare value up to the next declared parameter, verbatim",
     "<|tool_call>call:write{content: two words ,path:a.txt}<tool_call|>", {"tools": [WRITE_TOOL]}, None, "",
     [call("write", content=" two words ", path="a.txt")], ["repaired_tool_call"]),
    ("bare value of only whitespace is missing", "<|tool_call>call:write{content:\n }<tool_call|>",
     {"tools": [WRITE_TOOL]}, None, "", [], ["invalid_tool_call"]),
    ("no bare-value repair without the schema", "<|tool_call>call:write{path:/tmp/a.md}<tool_call|>", {}, None, "", [],
     ["invalid_tool_call"]),
    ("no bare-value repair for a non-string parameter", "<|tool_call>call:write{mode:fast}<tool_call|>",
     {"tools": [WRITE_TOOL]}, None, "", [], ["invalid_tool_call"]),
    ("repair duplicated name:name prefix", "<|tool_call>call:get_time:get_time{}<tool_call|>", {}, None, "",
     [call("get_time")], ["repaired_tool_call"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_contract(case):
    _id, text, kwargs, thinking, content, tool_calls, error_kinds = case
    got = parse_response(text, format="gemma4", **kwargs)
    assert got["role"] == "assistant"
    assert got["thinking"] == thinking
    assert got["content"] == content
    assert got["tool_calls"] == tool_calls
    assert [e["kind"] for e in got["errors"]] == error_kinds


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_contract_streamed_char_by_char(case):
    _id, text, kwargs, *_ = case
    parser = StreamParser("gemma4", **kwargs)
    events = [ev for ch in text for ev in parser.feed(ch)]
    assert parser.close() == parse_response(text, format="gemma4", **kwargs)


def test_invalid_call_raw_text_in_errors():
    raw = "<|tool_call>call:f{a:1 2}<tool_call|>"
    got = parse_response("x" + raw, format="gemma4")
    assert got["errors"][0]["raw"] == raw


def test_format_names():
    for fmt in ("gemma1", "gemma2", "gemma3", "gemma3n"):
        got = parse_response("  Hi!<end_of_turn>\nmore", format=fmt)
        assert (got["content"], got["thinking"], got["tool_calls"]) == ("Hi!", None, [])
    for fmt in ("gemma4", "gemma4-small", "gemma4-large"):
        assert parse_response("<|channel>thought\nx<channel|>y", format=fmt)["thinking"] == "x"
    with pytest.raises(ValueError, match="unknown output format"):
        parse_response("x", format="llama")


def test_huge_integer_kept_exact():
    """Beyond CPython's 4,300-digit int() limit; the oracle is int() with the limit lifted."""
    import sys

    digits = "9" + "0123456789" * 1000
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        expected = -int(digits)
    finally:
        sys.set_int_max_str_digits(old)
    got = parse_response(f"<|tool_call>call:f{{n:-{digits}}}<tool_call|>", format="gemma4")
    assert got["tool_calls"][0]["function"]["arguments"]["n"] == expected


def test_absurd_nesting_is_an_invalid_call_not_a_crash():
    got = parse_response("<|tool_call>call:f{a:" + "[" * 5000 + "<tool_call|>Next", format="gemma4")
    assert (got["tool_calls"], got["content"]) == ([], "Next")
    assert [e["kind"] for e in got["errors"]] == ["invalid_tool_call"]


_USER = [{"role": "user", "content": "weather?"}]
_AFTER_TOOL = _USER + [
    {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                          "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]


@pytest.mark.parametrize("fmt, messages, thinking_on, output, thinking, content", [
    # large models, thinking off: the prompt pre-closes an empty channel
    ("gemma4-large", _USER, False, "It is sunny.", None, "It is sunny."),
    # thinking on after a tool response: the prompt opens the channel itself
    ("gemma4-small", _AFTER_TOOL, True, "The tool said sunny.<channel|>Sunny in Paris.",
     "The tool said sunny.", "Sunny in Paris."),
    # thinking off after a tool response: the model continues its turn with the answer
    ("gemma4-small", _AFTER_TOOL, False, "Sunny in Paris.<turn|>", None, "Sunny in Paris."),
    # thinking on, fresh turn: the model opens the channel
    ("gemma4-small", _USER, True, "<|channel>thought\nCheck.<channel|>Let me look.", "Check.", "Let me look."),
])
def test_prompt_tail_is_the_real_generation_prompt(fmt, messages, thinking_on, output, thinking, content):
    """The whole prompt the Gemma 4 renderer produces can be passed as `prompt_tail`."""
    from gemma_edge.formats import render_prompt

    prompt = render_prompt(messages, format=fmt, enable_thinking=thinking_on)
    got = parse_response(output, format=fmt, prompt_tail=prompt, enable_thinking=thinking_on)
    assert (got["thinking"], got["content"]) == (thinking, content)
