"""Run a chat template shipped inside a GGUF (`tokenizer.chat_template`) the way transformers runs
chat templates: a sandboxed, immutable Jinja environment with trim_blocks, lstrip_blocks and
loopcontrols, a `raise_exception` global, a `tojson` that does not HTML-escape, `strftime_now`,
and the reasoning-field aliasing transformers applies to messages. Used only to compare our
renderers with a model's own template (`gemma-edge template --check`); prompts are never
rendered this way.
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

from gemma_edge.formats.base import PART_ALIASES, TemplateError

REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


@lru_cache(maxsize=8)
def _compile(template: str):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return environment.from_string(template)


def _prepared(message: Mapping[str, Any]) -> dict:
    """Our message contract (OpenAI part types mapped) plus transformers' reasoning aliases."""
    message = dict(message)
    content = message.get("content")
    if isinstance(content, list):
        message["content"] = [
            {**part, "type": PART_ALIASES[part["type"]]}
            if isinstance(part, Mapping) and part.get("type") in PART_ALIASES else part
            for part in content]
    reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


def render_embedded_template(
    template: str, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] | None = None,
    enable_thinking: bool = False, add_generation_prompt: bool = True, **variables: Any,
) -> str:
    """The template's output with bos_token="<bos>", eos_token="<eos>"; TemplateError where it fails."""
    import jinja2

    try:
        return _compile(template).render(
            messages=[_prepared(m) for m in messages], tools=tools, documents=None,
            add_generation_prompt=add_generation_prompt, enable_thinking=enable_thinking,
            bos_token="<bos>", eos_token="<eos>", **variables)
    except jinja2.TemplateError as error:
        raise TemplateError(str(error)) from None
