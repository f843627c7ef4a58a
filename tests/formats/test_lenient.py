"""Lenient mode: identical to strict wherever the template accepts a conversation (checked by the
oracle tests), and where it would raise, a documented repair — each expectation here is the
official template's output for the repaired conversation."""
from __future__ import annotations

import pytest

from gemma_edge.formats import render_prompt
from tests.reference import NEWEST_TEMPLATES

from .oracle import official


@pytest.fixture(scope="module")
def template(templates_dir):
    return lambda name: (templates_dir / NEWEST_TEMPLATES[name]).read_text()


SYSTEM_CONVERSATIONS = [
    [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": " Hi"}],
    [{"role": "system", "content": "Sys"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
     {"role": "user", "content": "c"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "x"}],
]


@pytest.mark.parametrize("format_name", ["gemma1", "gemma2"])
def test_classic_folds_the_system_message_like_gemma3(template, format_name):
    for messages in SYSTEM_CONVERSATIONS:
        assert render_prompt(messages, format=format_name) == official(template("gemma3"), messages)


@pytest.mark.parametrize("format_name", ["gemma1", "gemma3", "gemma3n"])
def test_non_alternating_turns_are_merged(template, format_name):
    cases = [
        ([{"role": "user", "content": " a "}, {"role": "user", "content": "b"}],
         [{"role": "user", "content": "a\n\nb"}]),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}],
         [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x\n\ny"}]),
        ([{"role": "user", "content": "q"}, {"role": "user", "content": "ok?"}, {"role": "tool", "content": "42"}],
         [{"role": "user", "content": "q\n\nok?\n\n42"}]),
        ([{"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "hi"}],
         [{"role": "user", "content": ""}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "hi"}]),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "system", "content": "s"},
          {"role": "user", "content": "u"}],
         [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "s\n\nu"}]),
        ([{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}],
         [{"role": "user", "content": "d\n\nu"}]),
        ([], []),
    ]
    for messages, repaired in cases:
        expected = official(template(format_name), repaired) if repaired else "<bos><start_of_turn>model\n"
        assert render_prompt(messages, format=format_name) == expected, messages


def test_gemma3_null_content_is_empty(template):
    messages = [{"role": "user", "content": None}]
    assert render_prompt(messages, format="gemma3") == official(template("gemma3"), [{"role": "user", "content": ""}])


def test_classic_reads_text_parts(template):
    messages = [{"role": "user", "content": [{"type": "text", "text": " Hi "}, {"type": "image"},
                                             {"type": "text", "text": "there"}]}]
    expected = official(template("gemma1"), [{"role": "user", "content": "Hithere"}])
    assert render_prompt(messages, format="gemma2") == expected


@pytest.mark.parametrize("format_name", ["gemma4-small", "gemma4-large"])
def test_gemma4_repairs(template, format_name):
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"b": [1, {"c": null}], "a": "x"}'}}
    parsed = {**call, "function": {"name": "f", "arguments": {"b": [1, {"c": None}], "a": "x"}}}
    tool = {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}
    cases = [
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]},
                       {"role": "tool", "tool_call_id": "1", "content": "r"}]},
         {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [parsed]},
                       {"role": "tool", "tool_call_id": "1", "content": "r"}]}),
        ({"messages": [{"role": "user", "content": "q"}], "tools": [tool]},
         {"messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function", "function": tool}]}),
        ({"messages": [{"role": "user", "content": ["plain", {"type": "image"}]}]},
         {"messages": [{"role": "user", "content": [{"type": "text", "text": "plain"}, {"type": "image"}]}]}),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [parsed]},
                       {"role": "tool", "content": [{"type": "text"}, {"type": "text", "text": "r"}]}]},
         {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [parsed]},
                       {"role": "tool", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "r"}]}]}),
    ]
    for given, repaired in cases:
        for thinking in (False, True):
            assert render_prompt(format=format_name, enable_thinking=thinking, **given) == official(
                template(format_name), enable_thinking=thinking, **repaired)


def test_gemma4_tool_message_mapping_is_the_response_object(template):
    """The template rejects a mapping as tool content; lenient renders it the way the template
    renders a mapping response given natively (`tool_responses`)."""
    call = {"function": {"name": "f", "arguments": {}}}
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "content": {"t": 20, "s": "ok"}}]
    native = [{"role": "user", "content": "q"},
              {"role": "assistant", "tool_calls": [call], "tool_responses": [{"name": "f", "response": {"t": 20, "s": "ok"}}]}]
    assert render_prompt(messages, format="gemma4-large") == official(template("gemma4-large"), native)
