"""The oracle: an official chat template rendered exactly the way transformers renders it.

We call transformers' own `render_jinja_template` (the function behind `apply_chat_template`):
ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, loopcontrols, the
`raise_exception` global, HF's `tojson`, plain-data conversion of inputs and the reasoning-field
aliasing. bos/eos are the Gemma strings `apply_chat_template` passes from the tokenizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import jinja2
from transformers.utils.chat_template_utils import render_jinja_template

from gemma_edge.formats import TemplateError, render_prompt, render_segments
from gemma_edge.formats.base import PART_ALIASES


@dataclass(frozen=True)
class Raised:
    message: str


def with_gemma_part_types(messages):
    """Our message contract maps OpenAI's `image_url` / `input_audio` parts to `image` / `audio`
    before rendering (formats/README.md); the template is given the mapped messages."""
    def part(p):
        if isinstance(p, dict) and p.get("type") in PART_ALIASES:
            return {**p, "type": PART_ALIASES[p["type"]]}
        return p

    def message(m):
        content = m.get("content")
        return {**m, "content": [part(p) for p in content]} if isinstance(content, list) else m

    return [message(m) for m in messages]


def official(template: str, messages, *, tools=None, enable_thinking=False,
             add_generation_prompt=True, **variables):
    """The template's output, or Raised(message) where the template fails."""
    messages = with_gemma_part_types(messages)
    try:
        rendered, _ = render_jinja_template(
            [messages], tools=tools, chat_template=template, add_generation_prompt=add_generation_prompt,
            bos_token="<bos>", eos_token="<eos>", enable_thinking=enable_thinking, **variables)
    except jinja2.TemplateError as error:  # raise_exception and UndefinedError alike
        return Raised(str(error))
    return rendered[0]


def ours(format_name, messages, *, strict, **options):
    try:
        return render_prompt(messages, format=format_name, strict=strict, **options)
    except TemplateError as error:
        return Raised(str(error))


def assert_matches_official(template: str, format_name: str, messages, **options) -> None:
    """Strict equals the template (string or error message); lenient equals it wherever the
    template succeeds and renders something wherever it raises; segments join to the prompt."""
    expected = official(template, messages, **options)
    strict = ours(format_name, messages, strict=True, **options)
    assert strict == expected, f"strict differs for {messages!r} {options!r}"
    lenient = ours(format_name, messages, strict=False, **options)
    if isinstance(expected, Raised):
        assert isinstance(lenient, str), f"lenient raised {lenient} for {messages!r}"
    else:
        assert lenient == expected
    if isinstance(lenient, str):
        segments = render_segments(messages, format=format_name, **options)
        assert "".join(s.text for s in segments) == lenient
