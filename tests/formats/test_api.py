"""The package API other code relies on: names, format facts, errors, segments."""
from __future__ import annotations

import dataclasses

import pytest

import gemma_edge
from gemma_edge.formats import FORMAT_NAMES, Segment, TemplateError, get_format, render_prompt, render_segments

from . import strategies as s


def test_public_names():
    assert FORMAT_NAMES == ("gemma1", "gemma2", "gemma3", "gemma3n", "gemma4-small", "gemma4-large", "functiongemma")
    assert gemma_edge.render_prompt is render_prompt and gemma_edge.render_segments is render_segments
    assert gemma_edge.Segment is Segment and gemma_edge.TemplateError is TemplateError


def test_unknown_format_lists_the_valid_ones():
    with pytest.raises(ValueError, match="gemma4-small.*functiongemma"):
        get_format("gemma5")
    with pytest.raises(ValueError):
        render_prompt([{"role": "user", "content": "x"}], format="llama")


def test_segment_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Segment("x", False).text = "y"


def test_format_facts_match_the_templates(templates_dir):
    """end_of_turn is what each template writes after a model turn; supports_* follow the templates."""
    for name in FORMAT_NAMES:
        fmt = get_format(name)
        prompt = render_prompt([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                               format=name, add_generation_prompt=False)
        assert prompt.endswith(fmt.end_of_turn + "\n")
        thinking = render_prompt([{"role": "user", "content": "q"}], format=name, enable_thinking=True)
        assert (thinking != render_prompt([{"role": "user", "content": "q"}], format=name)) == fmt.supports_thinking
        tool = {"type": "function", "function": {"name": "zz_tool"}}
        assert ("zz_tool" in render_prompt([{"role": "user", "content": "q"}], format=name, tools=[tool])) == \
            fmt.supports_tools
    assert [f for f in FORMAT_NAMES if get_format(f).supports_system] == ["gemma4-small", "gemma4-large",
                                                                         "functiongemma"]
    assert get_format("gemma4-large").stop_markers == ("<|tool_response>",)


def test_segments_join_to_the_prompt_and_mark_only_markers():
    from hypothesis import given, settings

    @settings(max_examples=60, deadline=None, derandomize=True, database=None)
    @given(s.gemma4_conversations())
    def check(messages):
        for name in FORMAT_NAMES:
            try:
                prompt = render_prompt(messages, format=name, enable_thinking=True)
            except TemplateError:
                continue
            segments = render_segments(messages, format=name, enable_thinking=True)
            assert "".join(x.text for x in segments) == prompt
            for a, b in zip(segments, segments[1:]):
                assert a.special or b.special  # text runs are maximal
            for x in segments:
                if x.special:
                    assert x.text.startswith("<") and x.text.endswith(">") and len(x.text) <= 30

    check()
