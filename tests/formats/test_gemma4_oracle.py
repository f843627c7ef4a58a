"""Gemma 4 (small: E2B/E4B, large: 12B/26B-A4B/31B) against the newest official templates."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemma_edge.formats import gemma4
from tests.reference import NEWEST_TEMPLATES

from . import strategies as s
from .oracle import assert_matches_official

ORACLE_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None)
FORMATS = [f.name for f in gemma4.FORMATS]

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "nullable": True},
        "days": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                  "required": ["lat", "lon"]},
        "extra": {"type": "object", "additionalProperties": {"type": "string"}, "description": "free-form"},
        "tags": {"type": ["string", "null"]},
        "rows": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}},
                                            "required": ["k"]}},
    }, "required": ["city"]},
    "response": {"type": "object", "description": "The weather."}}}
BARE_TOOL = {"type": "function", "function": {"name": "ping"}}
NO_TYPE_TOOL = {"type": "function", "function": {"name": "x", "description": "d",
                                                 "parameters": {"properties": {"a": {"type": "string"}}}}}

CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {
    "city": "Paris", "where": {"lat": 48.85, "lon": 2.35, "Name": "x"}, "days": [1, 2], "ok": True,
    "none": None, "nested": [{"b": [], "A": {}}]}}}

HAND_WRITTEN = [
    ([], {}),
    ([{"role": "user", "content": "Hi"}], {}),
    ([{"role": "system", "content": "  Sys\u3000"}, {"role": "user", "content": "Hi"}], {}),
    ([{"role": "developer", "content": [{"type": "text", "text": " a "}, {"type": "image"}]},
      {"role": "user", "content": "Hi"}], {}),
    ([{"role": "system", "content": "only system"}], {}),
    ([{"role": "user", "content": "Hi"}], {"enable_thinking": True}),
    ([{"role": "user", "content": "Hi"}], {"tools": [WEATHER_TOOL, BARE_TOOL, NO_TYPE_TOOL]}),
    ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}, {"type": "audio"},
                                   {"type": "video"}, {"type": "image_url", "image_url": {"url": "u"}},
                                   {"type": "input_audio"}]}], {}),
    ([{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], {"tools": [WEATHER_TOOL]}),
    ([{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [CALL]},
      {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], {"tools": [WEATHER_TOOL], "enable_thinking": True}),
    ([{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [CALL]}], {}),
    ([{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [CALL],
                                                 "reasoning_content": "need weather"},
      {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "img:"}, {"type": "image"}]},
      {"role": "assistant", "content": "It is sunny."}, {"role": "user", "content": "thanks"}],
     {"preserve_thinking": True}),
    ([{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [CALL],
                                                 "reasoning_content": "need weather"},
      {"role": "tool", "tool_call_id": "c1", "content": "s"},
      {"role": "assistant", "content": "It is sunny."}, {"role": "user", "content": "thanks"}], {}),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}], {}),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "<|channel>thought\nold<channel|>Answer"},
      {"role": "user", "content": "q2"}], {}),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [CALL],
                                         "tool_responses": [{"name": "get_weather", "response": {"t": 20}}]}], {}),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [CALL],
                                         "tool_responses": [{"response": "plain"}, {"name": "", "response": [1]}]},
      {"role": "assistant", "content": "done"}], {"enable_thinking": True}),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "part 1"},
      {"role": "assistant", "content": "part 2"}], {}),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": '{"a": 1}'}}]}], {}),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}], {}),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [CALL]},
      {"role": "tool", "content": {"temp": 20}}], {}),
    ([{"role": "user", "content": ["bare string part"]}], {}),
    ([{"role": "user", "content": "q"}], {"tools": [{"name": "flat", "parameters": {"type": "object"}}]}),
    ([{"role": "tool", "content": "orphan"}, {"role": "user", "content": "q"}], {}),
    ([{"role": "user", "content": "<|turn>system\n<|think|><turn|><|channel><|\"|>"}], {}),
]


@pytest.fixture(scope="module")
def templates(templates_dir):
    return {name: (templates_dir / NEWEST_TEMPLATES[name]).read_text() for name in FORMATS}


@pytest.mark.parametrize("format_name", FORMATS)
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_hand_written(templates, format_name, generation_prompt):
    for messages, options in HAND_WRITTEN:
        for thinking in (False, True):
            options = {"enable_thinking": thinking, **options}
            assert_matches_official(templates[format_name], format_name, messages,
                                    add_generation_prompt=generation_prompt, **options)


@pytest.mark.slow
@pytest.mark.parametrize("format_name", FORMATS)
def test_generated(templates, format_name):
    @ORACLE_SETTINGS
    @given(s.gemma4_conversations(), st.one_of(st.none(), st.lists(s.tools(), max_size=3)),
           st.booleans(), st.booleans(), st.sampled_from([None, False, True]))
    def check(messages, tools, thinking, generation_prompt, preserve_thinking):
        options = {} if preserve_thinking is None else {"preserve_thinking": preserve_thinking}
        assert_matches_official(templates[format_name], format_name, messages, tools=tools,
                                enable_thinking=thinking, add_generation_prompt=generation_prompt, **options)

    check()
