"""Our sandboxed runner for GGUF-embedded templates renders exactly what transformers renders."""
from __future__ import annotations

import pytest

from gemma_edge.formats.embedded_template import render_embedded_template
from tests.reference import NEWEST_TEMPLATES

from .oracle import Raised, official
from .test_gemma4_oracle import HAND_WRITTEN as GEMMA4_CONVERSATIONS
from .test_start_of_turn_oracle import HAND_WRITTEN as START_OF_TURN_CONVERSATIONS


def _ours(template, messages, **options):
    from gemma_edge.formats import TemplateError

    try:
        return render_embedded_template(template, messages, **options)
    except TemplateError as error:
        return Raised(str(error))


@pytest.mark.parametrize("format_name", sorted(NEWEST_TEMPLATES))
def test_same_as_transformers(templates_dir, format_name):
    template = (templates_dir / NEWEST_TEMPLATES[format_name]).read_text()
    cases = (GEMMA4_CONVERSATIONS if format_name.startswith("gemma4")
             else [(m, {}) for m in START_OF_TURN_CONVERSATIONS])
    for messages, options in cases:
        for thinking in (False, True):
            options = {**options, "enable_thinking": thinking}
            assert _ours(template, messages, **options) == official(template, messages, **options)
