"""Gemma 4: `<|turn>role … <turn|>` turns, a system turn carrying `<|think|>`, the system or
developer text and the tool declarations, tool calls and tool responses inside the model turn,
thought channels (`<|channel>thought … <channel|>`), and media placeholders.

The E2B/E4B ("small") and 12B/26B-A4B/31B ("large") templates differ in one place only: with
thinking off, the large models' generation prompt opens and closes an empty thought channel.
FunctionGemma has the same turn structure with other tokens and no thinking or media; its table
lives in `functiongemma.py`.

Strict rendering follows the official template statement by statement (its O(n²) forward scans
are precomputed, so rendering stays linear). Lenient rendering is strict rendering unless the
template would raise; then the conversation is repaired (`_repair`) and rendered strictly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any, Mapping, Sequence

from gemma_edge.formats import gemma4_values as values
from gemma_edge.formats.base import (
    BOS, MediaExpansion, Request, SegmentWriter, TemplateError, TurnFormat, part_type,
)
from gemma_edge.formats.jinja_values import UNDEFINED, is_sequence, item, printed

CHANNEL, END_CHANNEL = "<|channel>", "<channel|>"
ARGUMENTS_NOT_MAPPING = (
    "chat_template: tool_calls[].function.arguments must be a JSON object (mapping), not a string. "
    "Deserialize arguments before passing to the template.")
# transformers copies a message's reasoning from the first of these names into reasoning_content
REASONING_ALIASES = ("reasoning_content", "thinking", "reasoning")


@dataclass(frozen=True)
class ToolTurnTable:
    """The tokens of one format of the Gemma 4 turn structure, and what it does differently."""

    turn: str
    end_turn: str
    system_role: str                    # the role name of the first (system/tools) turn
    tool: str                           # around one tool declaration
    end_tool: str
    tool_call: str
    end_tool_call: str
    notation: values.Notation           # string quotes, tool-response tokens, declaration spacing
    media_markers: Mapping[str, str]
    media_expansion: Mapping[str, MediaExpansion]  # how the model sees a placeholder
    thinking: bool                      # <|think|>, thought channels, strip_thinking of model text
    named_tool_content: bool            # a tool message's content may be {name, response} or a list of them
    empty_thought_when_not_thinking: bool  # large models: generation prompt closes an empty thought


GEMMA4_MEDIA = {"image": "<|image|>", "audio": "<|audio|>", "video": "<|video|>"}
# transformers' Gemma4Processor: "<|image>" + N x "<|image|>" + "<image|>" (audio likewise), nothing
# around; llama.cpp's mtmd uses the same begin/end markers for gemma4v and gemma4a. Video (frames
# with timestamps) has no expansion: it cannot reach the model.
GEMMA4_EXPANSION = {
    "image": MediaExpansion(begin="<|image>", end="<image|>", soft_token="<|image|>"),
    "audio": MediaExpansion(begin="<|audio>", end="<audio|>", soft_token="<|audio|>"),
}


def render(table: ToolTurnTable, request: Request, out: SegmentWriter) -> None:
    if request.strict:
        _render(table, request, request.messages, request.tools, out, lenient=False)
        return
    attempt = SegmentWriter()
    try:
        _render(table, request, request.messages, request.tools, attempt, lenient=False)
    except TemplateError:
        _render(table, request, _repair(request.messages), _repair_tools(request.tools), out, lenient=True)
    else:
        out.extend(attempt)


def _render(table: ToolTurnTable, request: Request, messages: Sequence[Mapping[str, Any]],
            tools: Any, out: SegmentWriter, lenient: bool) -> None:
    thinking = request.enable_thinking and table.thinking
    notation = table.notation
    preserve_thinking = request.variables.get("preserve_thinking", False)
    prev_type = None  # ns.prev_message_type
    out.mark(BOS)
    loop_messages = messages
    first_is_system = bool(messages) and item(messages[0], "role") in ("system", "developer")
    if thinking or tools or first_is_system:
        out.mark(table.turn)
        out.text(table.system_role + "\n")
        if thinking:
            out.mark("<|think|>")
            out.text("\n")
            prev_type = "think"
        if first_is_system:
            _system_content(out, item(messages[0], "content"))
            loop_messages = messages[1:]
        if tools:
            for tool in tools:
                if not isinstance(item(tool, "function"), Mapping):
                    raise TemplateError(f"'{_jinja_type(tool)} object' has no attribute 'function'")
                out.mark(table.tool)
                values.declaration(out, tool, notation)
                out.mark(table.end_tool)
            prev_type = "tool"
        out.mark(table.end_turn)
        out.text("\n")

    roles = [item(m, "role") for m in loop_messages]
    last_user = max((i for i, role in enumerate(roles) if role == "user"), default=-1)
    next_non_tool = _next_non_tool_roles(roles)
    prev_non_tool_role = None
    for index, message in enumerate(loop_messages):
        raw_role = roles[index]
        if raw_role == "tool":
            continue
        prev_type = None
        if raw_role is UNDEFINED:
            raise TemplateError(f"'{_jinja_type(message)} object' has no attribute 'role'")
        role = "model" if raw_role == "assistant" else raw_role
        if not (role == "model" and prev_non_tool_role == "assistant"):
            out.mark(table.turn)
            out.text(printed(role) + "\n")

        thought = message.get("reasoning") or _aliased_reasoning(message)
        tool_calls = message.get("tool_calls")
        if table.thinking and thought and (index > last_user or (preserve_thinking and tool_calls)):
            out.mark(CHANNEL)
            out.text("thought\n" + thought + "\n")
            out.mark(END_CHANNEL)

        if tool_calls:
            for call in tool_calls:
                _tool_call(out, call, table)
            prev_type = "tool_call"

        responded = False
        tool_responses = message.get("tool_responses")
        if tool_responses:
            for response in tool_responses:
                values.tool_response(out, item(response, "name") or "unknown", item(response, "response"),
                                     notation)
                responded = True
                prev_type = "tool_response"
        elif tool_calls:
            for follower_index in range(index + 1, len(loop_messages)):
                if roles[follower_index] != "tool":
                    break
                _tool_message(out, tool_calls, loop_messages[follower_index], table, lenient)
                responded = True
                prev_type = "tool_response"

        has_content = _content(out, message.get("content"), table, model=role == "model")

        next_role, next_found = next_non_tool[index]
        continues_into_next = role == "model" and next_role == "assistant" and (not tool_calls or responded)
        if prev_type == "tool_call" and not responded:
            out.mark(notation.response_open)
        elif continues_into_next:
            pass
        elif not (responded and not has_content and not next_found):
            out.mark(table.end_turn)
            out.text("\n")
        prev_non_tool_role = raw_role

    if request.add_generation_prompt:
        if prev_type not in ("tool_response", "tool_call"):
            out.mark(table.turn)
            out.text("model\n")
            if table.thinking and not thinking and table.empty_thought_when_not_thinking:
                out.mark(CHANNEL)
                out.text("thought\n")
                out.mark(END_CHANNEL)
        elif prev_type == "tool_response" and thinking:
            out.mark(CHANNEL)
            out.text("thought\n")


def _jinja_type(value: Any) -> str:
    return "dict" if isinstance(value, Mapping) else type(value).__name__


def _aliased_reasoning(message: Mapping[str, Any]) -> Any:
    return next((message[k] for k in REASONING_ALIASES if message.get(k) is not None), None)


def _next_non_tool_roles(roles: list) -> list[tuple[Any, bool]]:
    """For each index: (role of the next message after it that is not a tool message, found?)."""
    result: list[tuple[Any, bool]] = [(None, False)] * len(roles)
    following: tuple[Any, bool] = (None, False)
    for index in range(len(roles) - 1, -1, -1):
        result[index] = following
        if roles[index] != "tool":
            following = (roles[index], True)
    return result


def _system_content(out: SegmentWriter, content: Any) -> None:
    if isinstance(content, str):
        out.text(content.strip())
    elif is_sequence(content):
        for part in content:
            out.text(printed(item(part, "text")).strip() + " ")


def _tool_call(out: SegmentWriter, call: Any, table: ToolTurnTable) -> None:
    function = item(call, "function")
    if not isinstance(function, Mapping):
        raise TemplateError(f"'{_jinja_type(call)} object' has no attribute 'function'")
    name = item(function, "name")
    if not isinstance(name, str):
        raise TemplateError("'dict object' has no attribute 'name'")
    out.mark(table.tool_call)
    out.text("call:" + name + "{")
    arguments = item(function, "arguments")
    if isinstance(arguments, Mapping):
        values.bare_object(out, arguments, table.notation)
    elif arguments is not None:
        raise TemplateError(ARGUMENTS_NOT_MAPPING)
    out.text("}")
    out.mark(table.end_tool_call)


def _tool_message(out: SegmentWriter, tool_calls: Sequence[Any], follower: Mapping[str, Any],
                  table: ToolTurnTable, lenient: bool) -> None:
    """One OpenAI-style `role: tool` message answering a call of the preceding assistant."""
    name = follower.get("name") or "unknown"
    for call in tool_calls:
        if call.get("id") == follower.get("tool_call_id"):
            name = call["function"]["name"]
    body = follower.get("content")
    if table.named_tool_content:
        named = [body] if isinstance(body, Mapping) else body if isinstance(body, (list, tuple)) else None
        if named and all(isinstance(r, Mapping) and "response" in r for r in named):
            for response in named:
                values.tool_response(out, response.get("name") or name, response["response"], table.notation)
            return
    if isinstance(body, str) or (lenient and isinstance(body, Mapping)):
        values.tool_response(out, name, body, table.notation)
    elif is_sequence(body):
        if not all(isinstance(p, Mapping) for p in body):
            raise TemplateError("'str object' has no attribute 'get'")
        texts = [p.get("text") for p in body if p.get("type") == "text"]
        if not all(isinstance(t, str) for t in texts):  # the template's `'' + None` fails
            raise TemplateError("a text part of a tool message has no string 'text'")
        values.tool_response(out, name, "".join(texts), table.notation)
        for part in body:
            marker = table.media_markers.get(part_type(part))
            if marker:
                out.media(marker, part)
    else:
        values.tool_response(out, name, body, table.notation)


def _content(out: SegmentWriter, content: Any, table: ToolTurnTable, model: bool) -> bool:
    """Write a message's content; True when it has non-whitespace output (`has_content`)."""
    model = model and table.thinking  # only thinking formats strip thoughts from model text
    if isinstance(content, str):
        text = strip_thinking(content) if model else content.strip()
        out.text(text)
        return bool(text.strip())
    if content is None or not is_sequence(content):
        return False
    if not all(isinstance(p, Mapping) for p in content):
        raise TemplateError("'str object' has no attribute 'get'")
    has_content = False
    for part in content:
        kind = part_type(part)
        if kind == "text":
            text = part.get("text", UNDEFINED)
            if model and not isinstance(text, str):
                raise TemplateError(_no_split(text))
            text = strip_thinking(text) if model else printed(text).strip()
            out.text(text)
            has_content = has_content or bool(text.strip())
        elif kind in table.media_markers:
            out.media(table.media_markers[kind], part)
            has_content = True
    return has_content


def _no_split(text: Any) -> str:
    """Jinja's message for `text.split(...)` on a value that is not a string."""
    if text is UNDEFINED:
        return "'dict object' has no attribute 'text'"
    if text is None:
        return "'None' has no attribute 'split'"
    return f"'{type(text).__name__} object' has no attribute 'split'"


def strip_thinking(text: str) -> str:
    """Macro `strip_thinking`: drop every `<|channel>…<channel|>` thought, then trim."""
    result = []
    for part in text.split(END_CHANNEL):
        result.append(part.split(CHANNEL, 1)[0])
    return "".join(result).strip()


# ---- lenient repair -------------------------------------------------------------------------

def _repair(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Make a conversation the template rejects renderable:

    * tool-call arguments given as a JSON string (OpenAI style) are parsed; missing ones are {};
    * content parts that are bare strings become text parts; a text part without a string text
      has the empty text (or its printed value);
    * a mapping as a tool message's content is the tool's response object (`key:value,…`);
    * a mapping as any other message's content is ignored, as the template ignores its keys.
    """
    repaired = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [_repair_call(call) for call in message["tool_calls"]]
        content = message.get("content")
        if isinstance(content, (list, tuple)):
            message["content"] = [_repair_part(p) for p in content if isinstance(p, (str, Mapping))]
        elif isinstance(content, Mapping) and message.get("role") != "tool":
            message["content"] = []  # a tool message's mapping is rendered as the response object
        repaired.append(message)
    return repaired


def _repair_part(part: Any) -> Any:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if part.get("type") == "text" and not isinstance(part.get("text"), str):
        return {**part, "text": "" if part.get("text") is None else printed(part["text"])}
    return part


def _repair_call(call: Any) -> Any:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    function = dict(call["function"])
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            raise TemplateError(f"tool call arguments are not JSON: {arguments[:80]!r}") from None
    elif "arguments" not in function:
        function["arguments"] = {}
    return {**call, "function": function}


def _repair_tools(tools: Any) -> Any:
    """Tools given as bare function schemas ({"name", "parameters", …}) get the
    {"type": "function", "function": …} wrapper the template reads."""
    if not tools:
        return tools
    return [tool if isinstance(item(tool, "function"), Mapping) else {"type": "function", "function": tool}
            for tool in tools]


def _table(empty_thought_when_not_thinking: bool) -> ToolTurnTable:
    return ToolTurnTable(
        turn="<|turn>", end_turn="<turn|>", system_role="system", tool="<|tool>", end_tool="<tool|>",
        tool_call="<|tool_call>", end_tool_call="<tool_call|>", notation=values.GEMMA4,
        media_markers=GEMMA4_MEDIA, media_expansion=GEMMA4_EXPANSION, thinking=True, named_tool_content=False,
        empty_thought_when_not_thinking=empty_thought_when_not_thinking)


def turn_format(name: str, table: ToolTurnTable) -> TurnFormat:
    return TurnFormat(
        name=name,
        end_of_turn=table.end_turn,
        supports_thinking=table.thinking,
        supports_tools=True,
        supports_system=True,
        render=partial(render, table),
        media=tuple(table.media_markers),
        media_expansion=table.media_expansion,
        stop_markers=(table.notation.response_open,),
    )


FORMATS = (
    turn_format("gemma4-small", _table(empty_thought_when_not_thinking=False)),
    turn_format("gemma4-large", _table(empty_thought_when_not_thinking=True)),
)
