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
