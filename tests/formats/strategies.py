"""Hypothesis strategies for conversations: text full of the things templates trip over
(Unicode whitespace that `trim` eats, control-token strings, JSON punctuation), content parts
of every type, roles that usually alternate and sometimes do not."""
from __future__ import annotations

from hypothesis import strategies as st

MARKERS = [
    "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<image_soft_token>",
    "<audio_soft_token>", "<|turn>", "<turn|>", "<|think|>", "<|channel>", "<channel|>", "<|tool>",
    "<tool|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>',
    "<|image|>", "<|audio|>", "<|video|>", "<start_function_call>", "<escape>",
]
WHITESPACE = [" ", "\n", "\t", "\r\n", "\u00a0", "\u2003", "\u3000", "\u2028", "\x85", "\x0b", "\x1f", "\n\n"]
WORDS = ["hi", "Hello", "été", "日本語", "🙂", "a b", "{", "}", ":", ",", '"', "[", "]", "null", "true",
         "thought", "call:x{}", "model", "user", "\\n", "{{ x }}", "{% if %}"]

texts = st.lists(
    st.one_of(st.sampled_from(WORDS), st.sampled_from(WHITESPACE), st.sampled_from(MARKERS),
              st.text(max_size=4)),
    max_size=6,
).map("".join)

text_parts = texts.map(lambda t: {"type": "text", "text": t})
media_parts = st.sampled_from([
    {"type": "image"}, {"type": "image", "url": "x.png"}, {"type": "audio"}, {"type": "video"},
    {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
    {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, {"type": "unknown"},
])


def content(media=True):
    parts = st.lists(st.one_of(text_parts, media_parts) if media else text_parts, max_size=4)
    return st.one_of(texts, texts, parts)  # strings twice as likely as part lists


rarely = st.sampled_from(range(20)).map(lambda n: n == 7)  # true about 1 in 20
MISSING = "__missing__"


def message(role, body):
    return {"role": role} if body == MISSING else {"role": role, "content": body}


@st.composite
def plain_conversations(draw, roles=("user", "assistant", "system", "developer", "tool"),
                        content_strategy=None, system_roles=("system",), odd_content=(None, MISSING)):
    """Mostly user/assistant alternation, optionally led by a system message, now and then a
    role out of place (which the templates reject)."""
    if content_strategy is None:
        content_strategy = content()
    def body():
        if odd_content and draw(rarely):  # now and then content that is None or missing
            return draw(st.sampled_from(odd_content))
        return draw(content_strategy)

    messages = []
    if draw(st.sampled_from(range(3))) == 1:
        messages.append(message(draw(st.sampled_from(system_roles)), body()))
    for index in range(draw(st.integers(0, 5))):
        role = "user" if index % 2 == 0 else "assistant"
        if draw(rarely):
            role = draw(st.sampled_from(roles))
        messages.append(message(role, body()))
    return messages


# ---- Gemma 4: JSON values, JSON-Schema tools, tool calls and responses, thoughts ----------------

keys = st.one_of(st.sampled_from(["a", "A", "b", "B", "city", "City", "type", "description", "items",
                                  "properties", "required", "nullable", "enum", "value", "Ünïcode", "_x"]),
                 texts.filter(bool))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=False, allow_infinity=False), texts)
json_values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8)

schema_types = st.sampled_from(["string", "integer", "number", "boolean", "array", "object", "STRING",
                                "Object", "null"])


@st.composite
def schemas(draw, depth=0):
    """A JSON-Schema property: every field the Gemma 4 serialiser treats specially, now and then."""
    kind = draw(schema_types)
    schema = {}
    if draw(st.booleans()):
        schema["type"] = kind if draw(rarely).__eq__(False) else [kind, "null"]
    if draw(st.booleans()):
        schema["description"] = draw(texts)
    if kind.lower() == "string" and draw(st.booleans()):
        schema["enum"] = draw(st.lists(st.one_of(texts, st.integers(0, 9)), max_size=3))
    if kind.lower() == "array" and draw(st.booleans()):
        schema["items"] = draw(schemas(depth + 1)) if depth < 2 else {"type": "string"}
        if draw(st.booleans()):
            schema["items"]["required"] = draw(st.lists(keys, max_size=2))
        if draw(rarely):
            schema["items"]["nothing"] = None
    if kind.lower() == "object" and depth < 2 and draw(st.booleans()):
        schema["properties"] = draw(st.dictionaries(keys, schemas(depth + 1), max_size=3))
    if kind.lower() == "object" and draw(st.booleans()):
        schema["required"] = draw(st.lists(keys, max_size=2))
    if draw(st.sampled_from(range(4))) == 0:
        schema["nullable"] = draw(st.booleans())
    if draw(st.sampled_from(range(4))) == 0:
        schema[draw(st.sampled_from(["format", "minimum", "default", "additionalProperties", "title"]))] = (
            draw(json_values))
    return schema


@st.composite
def tools(draw):
    function = {"name": draw(st.sampled_from(["get_weather", "search", "f", "do_it"]))}
    if draw(st.sampled_from(range(6))):
        function["description"] = draw(texts)
    if draw(st.sampled_from(range(5))):
        parameters = {"type": draw(st.sampled_from(["object", "OBJECT"]))} if draw(
            st.sampled_from(range(6))) else {}
        if draw(st.sampled_from(range(4))):
            parameters["properties"] = draw(st.dictionaries(keys, schemas(), max_size=4))
        if draw(st.booleans()):
            parameters["required"] = draw(st.lists(keys, max_size=3))
        function["parameters"] = parameters
    if draw(rarely):
        function["response"] = draw(st.one_of(schemas(), st.just({"type": "object", "description": "r"})))
    return {"type": "function", "function": function}


tool_names = st.sampled_from(["get_weather", "search", "f"])


@st.composite
def tool_calls(draw, call_ids):
    calls = []
    for call_id in call_ids:
        arguments = draw(st.one_of(*[st.dictionaries(keys, json_values, max_size=4)] * 8, st.none(),
                                   st.just('{"as": "json string"}')))
        call = {"type": "function", "function": {"name": draw(tool_names), "arguments": arguments}}
        if call_id is not None:
            call["id"] = call_id
        calls.append(call)
    return calls


tool_contents = st.one_of(
    texts, texts, st.none(), st.integers(), st.lists(st.one_of(text_parts, media_parts), max_size=3),
    st.dictionaries(keys, json_values, max_size=2))

thoughts = st.one_of(texts, st.just("planning <|channel>x<channel|> more"))


@st.composite
def model_content(draw):
    """Model text as a model writes it: sometimes with a leftover thought channel in it."""
    base = draw(content())
    if isinstance(base, str) and draw(st.booleans()):
        base = draw(st.sampled_from(["", "pre "])) + "<|channel>thought\n" + draw(texts) + "<channel|>" + base
    return base


@st.composite
def gemma4_conversations(draw):
    messages = []
    if draw(st.booleans()):
        messages.append(message(draw(st.sampled_from(["system", "developer"])),
                                draw(st.one_of(texts, st.lists(st.one_of(text_parts, media_parts), max_size=3)))))
    for _ in range(draw(st.integers(0, 5))):
        step = draw(st.sampled_from(["user", "user", "assistant", "assistant", "tool_round", "native_round",
                                     "odd"]))
        if step == "user":
            messages.append(message("user", draw(content())))
        elif step == "assistant":
            assistant = message("assistant", draw(model_content()))
            if draw(st.booleans()):
                assistant[draw(st.sampled_from(["reasoning_content", "reasoning", "thinking"]))] = draw(thoughts)
            messages.append(assistant)
        elif step == "tool_round":
            ids = draw(st.lists(st.sampled_from(["c1", "c2", None]), min_size=1, max_size=3))
            assistant = {"role": "assistant", "tool_calls": draw(tool_calls(ids))}
            if draw(st.booleans()):
                assistant["content"] = draw(model_content())
            if draw(st.booleans()):
                assistant["reasoning_content"] = draw(thoughts)
            messages.append(assistant)
            for _ in range(draw(st.integers(0, 3))):
                tool = {"role": "tool", "content": draw(tool_contents)}
                if draw(st.booleans()):
                    tool["tool_call_id"] = draw(st.sampled_from(["c1", "c2", "zz"]))
                if draw(st.booleans()):
                    tool["name"] = draw(st.sampled_from(["named", ""]))
                messages.append(tool)
        elif step == "native_round":
            responses = draw(st.lists(st.fixed_dictionaries(
                {"name": st.sampled_from(["get_weather", "", None])},
                optional={"response": st.one_of(json_values, st.dictionaries(keys, json_values, max_size=3))}),
                min_size=1, max_size=2))
            assistant = {"role": "assistant", "tool_calls": draw(tool_calls([None])), "tool_responses": responses}
            if draw(st.booleans()):
                assistant["content"] = draw(model_content())
            messages.append(assistant)
        else:
            messages.append(message(draw(st.sampled_from(["system", "developer", "model", "tool", "critic"])),
                                    draw(content())))
    return messages
