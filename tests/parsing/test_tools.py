"""gemma_edge.tools: schemas from Python functions (oracle: transformers' get_json_schema on
Google-style docstrings; NumPy and reST docstrings must give the same schema) and the tool-call
runner that never raises."""
from __future__ import annotations

import enum
import json
from typing import Literal, Optional, Union

import pytest
from transformers.utils.chat_template_utils import get_json_schema

from gemma_edge.parsing import parse_response
from gemma_edge.tools import function_schema, normalize_tools, run_tool_call


def google_style(city: str, unit: Literal["c", "f"] = "c", days: Optional[int] = None, tags: list[str] = [],
                 extra: dict[str, float] | None = None, mix: Union[int, str] = 1, ratio: float = 0.5,
                 flag: bool = False, matrix: list[list[int]] | None = None) -> str:
    """Get the weather for a city.

    Uses the local forecast service.

    Args:
        city: The city name,
            for example Paris.
        unit: Temperature unit.
        days: How many days ahead.
        tags: Labels to attach.
        extra: Extra numbers.
        mix: An int or a string.
        ratio: A ratio.
        flag: A switch.
        matrix: Rows of numbers.

    Returns:
        The forecast.
    """
    return city


def numpy_style(city: str, unit: Literal["c", "f"] = "c", days: Optional[int] = None, tags: list[str] = [],
                extra: dict[str, float] | None = None, mix: Union[int, str] = 1, ratio: float = 0.5,
                flag: bool = False, matrix: list[list[int]] | None = None) -> str:
    """Get the weather for a city.

    Uses the local forecast service.

    Parameters
    ----------
    city : str
        The city name,
        for example Paris.
    unit : {"c", "f"}
        Temperature unit.
    days : int, optional
        How many days ahead.
    tags : list of str
        Labels to attach.
    extra : dict
        Extra numbers.
    mix : int or str
        An int or a string.
    ratio : float
        A ratio.
    flag : bool
        A switch.
    matrix : list
        Rows of numbers.

    Returns
    -------
    str
        The forecast.
    """
    return city


def rest_style(city: str, unit: Literal["c", "f"] = "c", days: Optional[int] = None, tags: list[str] = [],
               extra: dict[str, float] | None = None, mix: Union[int, str] = 1, ratio: float = 0.5,
               flag: bool = False, matrix: list[list[int]] | None = None) -> str:
    """Get the weather for a city.

    Uses the local forecast service.

    :param city: The city name,
        for example Paris.
    :param unit: Temperature unit.
    :param int days: How many days ahead.
    :param tags: Labels to attach.
    :param extra: Extra numbers.
    :param mix: An int or a string.
    :param ratio: A ratio.
    :param flag: A switch.
    :param matrix: Rows of numbers.
    :returns: The forecast.
    """
    return city


def _without_return(schema: dict) -> dict:
    fn = dict(schema["function"])
    fn.pop("return", None)
    return {**schema, "function": fn}


def test_google_docstring_matches_transformers():
    assert function_schema(google_style) == _without_return(get_json_schema(google_style))


@pytest.mark.parametrize("fn", [numpy_style, rest_style])
def test_numpy_and_rest_docstrings_give_the_same_schema(fn):
    expected = _without_return(get_json_schema(google_style))
    expected["function"]["name"] = fn.__name__
    assert function_schema(fn) == expected


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_enum_tuple_and_undocumented_parameters():
    def paint(color: Color, size=3, where: tuple[int, int] = (0, 0), *args, note=None, **kwargs):
        """Paint."""

    params = function_schema(paint)["function"]["parameters"]
    assert params == {"type": "object", "required": ["color"], "properties": {
        "color": {"type": "string", "enum": ["red", "blue"]},
        "size": {"type": "integer"},
        "where": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "integer"}]},
        "note": {"type": "string"},
    }}


def add(a: int, b: int = 0) -> int:
    """Add two numbers."""
    return a + b


def explode() -> None:
    """Always fails."""
    raise RuntimeError("boom")


def test_normalize_tools_mixes_callables_and_schemas():
    schema = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}}
    bare = {"name": "lookup", "description": "Look up.", "parameters": {"type": "object", "properties": {}}}
    decls, callables = normalize_tools([add, schema, bare])
    assert [d["function"]["name"] for d in decls] == ["add", "search", "lookup"]
    assert decls[0] == function_schema(add) and decls[1] == schema and decls[2] == {"type": "function", "function": bare}
    assert callables == {"add": add}
    with pytest.raises(ValueError, match="two tools"):
        normalize_tools([add, add])


def test_run_tool_call_success_with_id_and_json_arguments():
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
    assert run_tool_call(call, {"add": add}) == {"role": "tool", "name": "add", "tool_call_id": "call_1", "content": "5"}


def test_run_tool_call_from_a_parsed_model_output():
    parsed = parse_response("<|tool_call>call:add{a:40,b:2}<tool_call|>", format="gemma4")
    assert run_tool_call(parsed["tool_calls"][0], {"add": add}) == {"role": "tool", "name": "add", "content": "42"}


@pytest.mark.parametrize("call, fragment", [
    ({"function": {"name": "nope", "arguments": {}}}, "unknown tool 'nope'"),
    ({"function": {"name": "add", "arguments": {"x": 1}}}, "bad arguments for add"),
    ({"function": {"name": "add", "arguments": "{not json"}}, "not valid JSON"),
    ({"function": {"name": "add", "arguments": [1, 2]}}, "must be an object"),
    ({"function": {"name": "explode", "arguments": {}}}, "RuntimeError: boom"),
    ({}, "unknown tool"),
])
def test_run_tool_call_reports_errors_instead_of_raising(call, fragment):
    message = run_tool_call(call, {"add": add, "explode": explode})
    assert message["role"] == "tool"
    assert fragment in json.loads(message["content"])["error"]


def test_results_are_text_or_json():
    def text():
        return "plain"

    def data():
        return {"temp": 21.5, "ok": True}

    assert run_tool_call({"function": {"name": "text"}}, {"text": text})["content"] == "plain"
    assert json.loads(run_tool_call({"function": {"name": "data"}}, {"data": data})["content"]) == {"temp": 21.5, "ok": True}


def test_callables_as_parse_response_tools_enable_schema_repairs():
    def write(path: str, content: str) -> str:
        """Write a file."""
        return path

    text = "<|tool_call>call:write{path:a.txt,content:hello, world}<tool_call|>"
    got = parse_response(text, format="gemma4", tools=[write])
    assert got["tool_calls"] == [{"type": "function", "function": {
        "name": "write", "arguments": {"path": "a.txt", "content": "hello, world"}}}]
    assert parse_response(text, format="gemma4")["tool_calls"] == []
