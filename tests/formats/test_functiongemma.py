"""FunctionGemma against Google's published documentation (no official template could be
obtained; formats/README.md lists the sources). The expected strings are quoted verbatim from
prompts the documents show rendered by the official template (`processor.apply_chat_template` /
`tokenizer.apply_chat_template` + decode)."""
from __future__ import annotations

import pytest
from transformers.utils import get_json_schema

from gemma_edge.formats import TemplateError, get_format, render_prompt, render_segments

TRIGGER = "You are a model that can do function calling with the following functions"

# --- https://ai.google.dev/gemma/docs/functiongemma/full-function-calling-sequence-with-functiongemma
# The guide passes the Python function below as a tool; transformers turns it into a schema with
# get_json_schema (the docstring's choices become an enum, its Returns a "return" entry).


def get_current_weather(location: str, unit: str = "celsius"):
    """
    Gets the current weather in a given location.

    Args:
        location: The city and state, e.g. "San Francisco, CA" or "Tokyo, JP"
        unit: The unit to return the temperature in. (choices: ["celsius", "fahrenheit"])

    Returns:
        temperature: The current temperature in the given location
        weather: The current weather in the given location
    """
    return {"temperature": 15, "weather": "sunny"}


WEATHER_TOOL = get_json_schema(get_current_weather)
FULL_SEQUENCE_HISTORY = [
    {"role": "developer", "content": TRIGGER},
    {"role": "user", "content": "Hey, what's the weather in Tokyo right now?"},
    {"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "get_current_weather", "arguments": {"location": "Tokyo, Japan"}}}]},
    {"role": "tool", "content": [{"name": "get_current_weather", "response": {"temperature": 15, "weather": "sunny"}}]},
    {"role": "assistant", "content": "The current weather in Tokyo is sunny with a temperature of 15 degrees Celsius."},
]
FULL_SEQUENCE_OUTPUT = (  # "Output:" printed by the guide: the last prompt plus the generated answer
    "<bos><start_of_turn>developer\nYou are a model that can do function calling with the following functions"
    "<start_function_declaration>declaration:get_current_weather{description:<escape>Gets the current weather in a "
    "given location.<escape>,parameters:{properties:{location:{description:<escape>The city and state, e.g. "
    "\"San Francisco, CA\" or \"Tokyo, JP\"<escape>,type:<escape>STRING<escape>},unit:{description:<escape>The unit "
    "to return the temperature in.<escape>,enum:[<escape>celsius<escape>,<escape>fahrenheit<escape>],type:<escape>"
    "STRING<escape>} },required:[<escape>location<escape>],type:<escape>OBJECT<escape>} }<end_function_declaration>"
    "<end_of_turn>\n<start_of_turn>user\nHey, what's the weather in Tokyo right now?<end_of_turn>\n<start_of_turn>"
    "model\n<start_function_call>call:get_current_weather{location:<escape>Tokyo, Japan<escape>}<end_function_call>"
    "<start_function_response>response:get_current_weather{temperature:15,weather:<escape>sunny<escape>}"
    "<end_function_response>The current weather in Tokyo is sunny with a temperature of 15 degrees Celsius."
    "<end_of_turn>")
FIRST_CALL = "<start_function_call>call:get_current_weather{location:<escape>Tokyo, Japan<escape>}<end_function_call>"

# --- https://ai.google.dev/gemma/docs/functiongemma/finetuning-with-functiongemma
# "--- dataset input ---" and "--- Formatted prompt ---" (add_generation_prompt=False).
SEARCH_TOOLS = [
    {"function": {"description": "Search internal company documents, policies and project data.",
                  "name": "search_knowledge_base",
                  "parameters": {"properties": {"query": {"description": "query string", "type": "string"}},
                                 "required": ["query"], "type": "object"},
                  "return": {"type": "string"}}, "type": "function"},
    {"function": {"description": "Search public information.", "name": "search_google",
                  "parameters": {"properties": {"query": {"description": "query string", "type": "string"}},
                                 "required": ["query"], "type": "object"},
                  "return": {"type": "string"}}, "type": "function"},
]
FINETUNING_MESSAGES = [
    {"content": TRIGGER, "role": "developer", "tool_calls": None},
    {"content": "What is the reimbursement limit for travel meals?", "role": "user", "tool_calls": None},
    {"content": None, "role": "assistant", "tool_calls": [{"function": {
        "arguments": {"query": "travel meal reimbursement limit policy"}, "name": "search_knowledge_base"},
        "type": "function"}]},
]
FINETUNING_PROMPT = (
    "<bos><start_of_turn>developer\nYou are a model that can do function calling with the following functions"
    "<start_function_declaration>declaration:search_knowledge_base{description:<escape>Search internal company "
    "documents, policies and project data.<escape>,parameters:{properties:{query:{description:<escape>query string"
    "<escape>,type:<escape>STRING<escape>} },required:[<escape>query<escape>],type:<escape>OBJECT<escape>} }"
    "<end_function_declaration><start_function_declaration>declaration:search_google{description:<escape>Search "
    "public information.<escape>,parameters:{properties:{query:{description:<escape>query string<escape>,type:"
    "<escape>STRING<escape>} },required:[<escape>query<escape>],type:<escape>OBJECT<escape>} }"
    "<end_function_declaration><end_of_turn>\n<start_of_turn>user\nWhat is the reimbursement limit for travel "
    "meals?<end_of_turn>\n<start_of_turn>model\n<start_function_call>call:search_knowledge_base{query:<escape>travel "
    "meal reimbursement limit policy<escape>}<end_function_call><start_function_response>")

# --- https://ai.google.dev/gemma/docs/functiongemma/formatting-and-best-practices, "Example: Weather
# Tool Flow": the turns shown one by one (Turn 1 is hand-formatted there: a line break after the
# trigger and no space in "} }", unlike the machine-rendered prompts above; see README).
FORMATTING_TURNS = [
    "<start_of_turn>user\nHey, what's the weather in Tokyo right now?<end_of_turn>",
    "<start_function_call>call:get_current_weather{location:<escape>Tokyo, Japan<escape>}<end_function_call>",
    "<start_function_response>response:get_current_weather{temperature:15,weather:<escape>sunny<escape>}"
    "<end_function_response>",
]


def test_full_sequence_final_prompt_plus_answer_is_the_documented_output():
    prompt = render_prompt(FULL_SEQUENCE_HISTORY[:4], format="functiongemma", tools=[WEATHER_TOOL])
    answer = FULL_SEQUENCE_HISTORY[4]["content"] + "<end_of_turn>"
    assert prompt + answer == FULL_SEQUENCE_OUTPUT


def test_full_sequence_history_rerenders_as_the_documented_output():
    rendered = render_prompt(FULL_SEQUENCE_HISTORY, format="functiongemma", tools=[WEATHER_TOOL],
                             add_generation_prompt=False)
    assert rendered == FULL_SEQUENCE_OUTPUT + "\n"


def test_full_sequence_first_prompt_leads_to_the_documented_call():
    prompt = render_prompt(FULL_SEQUENCE_HISTORY[:2], format="functiongemma", tools=[WEATHER_TOOL])
    assert FULL_SEQUENCE_OUTPUT.startswith(prompt + FIRST_CALL)


def test_tool_content_as_one_mapping_is_the_same_response():
    """The guide's recommended form: {"name": …, "response": …} as the tool message content."""
    as_list = render_prompt(FULL_SEQUENCE_HISTORY[:4], format="functiongemma", tools=[WEATHER_TOOL])
    single = dict(FULL_SEQUENCE_HISTORY[3], content=FULL_SEQUENCE_HISTORY[3]["content"][0])
    assert render_prompt([*FULL_SEQUENCE_HISTORY[:3], single], format="functiongemma",
                         tools=[WEATHER_TOOL]) == as_list


def test_finetuning_formatted_prompt():
    assert render_prompt(FINETUNING_MESSAGES, format="functiongemma", tools=SEARCH_TOOLS,
                         add_generation_prompt=False) == FINETUNING_PROMPT


def test_formatting_page_turns_appear_verbatim():
    prompt = render_prompt(FULL_SEQUENCE_HISTORY[:4], format="functiongemma", tools=[WEATHER_TOOL])
    for turn in FORMATTING_TURNS:
        assert turn in prompt


def test_format_facts():
    fmt = get_format("functiongemma")
    assert (fmt.end_of_turn, fmt.supports_tools, fmt.supports_thinking) == ("<end_of_turn>", True, False)
    # "NOTE: <start_function_response> is an additional stop sequence for the inference engine."
    # (formatting-and-best-practices)
    assert fmt.stop_markers == ("<start_function_response>",)


def test_markers_are_special_segments_and_strings_are_text():
    segments = render_segments(FULL_SEQUENCE_HISTORY[:4], format="functiongemma", tools=[WEATHER_TOOL])
    specials = {s.text for s in segments if s.special}
    assert specials == {"<bos>", "<start_of_turn>", "<end_of_turn>", "<start_function_declaration>",
                        "<end_function_declaration>", "<escape>", "<start_function_call>", "<end_function_call>",
                        "<start_function_response>", "<end_function_response>"}
    assert "".join(s.text for s in segments) == render_prompt(FULL_SEQUENCE_HISTORY[:4], format="functiongemma",
                                                             tools=[WEATHER_TOOL])


def test_string_arguments_are_parsed_leniently_and_refused_strictly():
    call = {"function": {"name": "get_current_weather", "arguments": '{"location": "Tokyo, Japan"}'}}
    messages = [*FULL_SEQUENCE_HISTORY[:2], {"role": "assistant", "tool_calls": [call]}]
    assert FIRST_CALL in render_prompt(messages, format="functiongemma")
    with pytest.raises(TemplateError, match="must be a JSON object"):
        render_prompt(messages, format="functiongemma", strict=True)
