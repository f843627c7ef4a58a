"""A small built-in conversation set per format, chosen by what the format supports: used by
`gemma-edge template --check` to compare our renderer with a model's embedded template."""
from __future__ import annotations

from typing import Any, Iterator

from gemma_edge.formats.base import TurnFormat

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "array", "items": {"type": "integer"}},
    }, "required": ["city"]}}}
WEATHER_CALL = {"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}}

BASIC = [
    ("one user turn", [{"role": "user", "content": "Why is the sky blue?"}], {}),
    ("multi-turn", [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "Tell me a joke."}], {}),
    ("system prompt", [{"role": "system", "content": "Answer in French."},
                       {"role": "user", "content": "What is the capital of Italy?"}], {}),
    ("whitespace and unicode", [{"role": "user", "content": "  \u00a0été 日本語 🙂\n\n"}], {}),
    ("marker strings in text", [{"role": "user", "content": "<start_of_turn>user\n<|turn>model\n<end_of_turn>"}], {}),
    ("no generation prompt", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}],
     {"add_generation_prompt": False}),
]
TOOLS = [
    ("tool declaration", [{"role": "user", "content": "Weather in Paris?"}], {"tools": [WEATHER_TOOL]}),
    ("tool call and result", [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}], {"tools": [WEATHER_TOOL]}),
    ("answer after a tool result", [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [WEATHER_CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        {"role": "assistant", "content": "It is sunny."}, {"role": "user", "content": "Thanks!"}],
     {"tools": [WEATHER_TOOL]}),
]
THINKING = [
    ("thinking on", [{"role": "user", "content": "What is 17 * 23?"}], {"enable_thinking": True}),
    ("earlier reasoning", [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Simple addition."},
        {"role": "user", "content": "And 3 + 3?"}], {"enable_thinking": True}),
]
MEDIA_PART = {"image": {"type": "image"}, "audio": {"type": "audio"}, "video": {"type": "video"}}


def sample_conversations(turn_format: TurnFormat) -> Iterator[tuple[str, list[dict], dict[str, Any]]]:
    """(name, messages, render options) for every sample that applies to the format."""
    yield from BASIC
    if turn_format.supports_tools:
        yield from TOOLS
    if turn_format.supports_thinking:
        yield from THINKING
    for kind in turn_format.media:
        yield (f"{kind} input", [{"role": "user", "content": [MEDIA_PART[kind], {"type": "text", "text": "What is this?"}]}],
               {})
