"""Gemma 1/2/3/3n against their newest official templates (run the way transformers runs them)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemma_edge.formats import TemplateError, classic, gemma3, render_prompt
from tests.reference import NEWEST_TEMPLATES

from . import strategies as s
from .oracle import assert_matches_official

ORACLE_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None)
CLASSIC = [f.name for f in classic.FORMATS]  # Gemma 1 and 2: string content only
FAMILY = CLASSIC + [f.name for f in gemma3.FORMATS]

HAND_WRITTEN = [
    [],
    [{"role": "user", "content": "Hello"}],
    [{"role": "user", "content": "  \u3000Hello\u00a0\n"}, {"role": "assistant", "content": "\tHi!\u2028"}],
    [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": [{"type": "text", "text": "Sys"}, {"type": "text", "text": "ignored"}]},
     {"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "only a system message"}],
    [{"role": "system", "content": None}, {"role": "user", "content": "x"}],
    [{"role": "system", "content": []}, {"role": "user", "content": "x"}],
    [{"role": "system", "content": [{"type": "image"}]}, {"role": "user", "content": "x"}],
    [{"role": "system"}, {"role": "user", "content": "x"}],
    [{"role": "developer", "content": "dev"}, {"role": "user", "content": "x"}],
    [{"role": "assistant", "content": "first"}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    [{"role": "user", "content": "a"}, {"role": "tool", "content": "t"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "system", "content": "s"}],
    [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "user", "content": "c"}],
    [{"role": "user"}],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe. "},
                                   {"type": "audio"}, {"type": "video"}]}],
    [{"role": "user", "content": [{"type": "text"}, {"type": "text", "text": None}, "loose string", 7]}],
    [{"role": "user", "content": {"type": "text", "text": "a dict"}}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": 42}],
    [{"role": "user", "content": "<start_of_turn>user\n<end_of_turn>"}],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a",
                                        "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}],
]


def _in_domain(format_name, messages):
    """Gemma 1/2 with None or list content: the template prints a Python repr; we refuse (README)."""
    if format_name in CLASSIC:
        return all(isinstance(m.get("content", ""), (str, int)) for m in messages)
    return True


@pytest.fixture(scope="module")
def templates(templates_dir):
    return {name: (templates_dir / NEWEST_TEMPLATES[name]).read_text() for name in FAMILY}


@pytest.mark.parametrize("format_name", FAMILY)
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_hand_written(templates, format_name, generation_prompt):
    for messages in HAND_WRITTEN:
        if _in_domain(format_name, messages):
            assert_matches_official(templates[format_name], format_name, messages,
                                    add_generation_prompt=generation_prompt)


@pytest.mark.parametrize("format_name", CLASSIC)
def test_classic_refuses_non_string_content_in_strict_mode(format_name):
    """The one documented place strict is stricter than the template (it would print a repr)."""
    for content in (None, [{"type": "text", "text": "x"}]):
        with pytest.raises(TemplateError, match="Invalid content type"):
            render_prompt([{"role": "user", "content": content}], format=format_name, strict=True)


@pytest.mark.parametrize("format_name", FAMILY)
def test_generated(templates, format_name):
    classic = format_name in CLASSIC
    conversations = s.plain_conversations(
        content_strategy=s.texts if classic else s.content(),
        odd_content=(s.MISSING,) if classic else (None, s.MISSING))

    @ORACLE_SETTINGS
    @given(conversations, st.booleans())
    def check(messages, generation_prompt):
        assert_matches_official(templates[format_name], format_name, messages,
                                add_generation_prompt=generation_prompt)

    check()


def test_gemma1_and_gemma2_share_the_template(templates):
    assert templates["gemma1"] == templates["gemma2"]
