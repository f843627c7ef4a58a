"""transformers <= 5.12's `response_schema` parser (`utils/chat_parsing_utils.py`, removed in
5.13+) run on Gemma 4's response schema, as a second oracle for the corpus.

The module is taken from the transformers 5.12.0 wheel on PyPI, downloaded once into the test
cache (`${GEMMA_EDGE_TEST_CACHE:-~/.cache/gemma-edge/test}`); its only import of transformers
internals (`is_jmespath_available`, for transforms the Gemma 4 schema does not use) is replaced
by `False`. The schema is the `_RESPONSE_SCHEMA` that transformers' Gemma 4 conversion script
(`src/transformers/models/gemma4/convert_gemma4_weights.py`) writes into tokenizer_config.json.
"""
from __future__ import annotations

import os
import subprocess
import sys
import types
import zipfile
from functools import lru_cache
from pathlib import Path

VERSION = "5.12.0"
MODULE = "transformers/utils/chat_parsing_utils.py"

GEMMA4_RESPONSE_SCHEMA = {
    "type": "object",
    "properties": {
        "role": {"const": "assistant"},
        "thinking": {"type": "string"},
        "content": {"type": "string"},
        "tool_calls": {
            "x-regex-iterator": r"<\|tool_call>(.*?)<tool_call\|>",
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"const": "function"},
                    "function": {
                        "type": "object",
                        "x-regex": r"call\:(?P<name>\w+)(?P<arguments>\{.*\})",
                        "properties": {
                            "name": {"type": "string"},
                            "arguments": {"type": "object", "x-parser": "gemma4-tool-call", "additionalProperties": {}},
                        },
                    },
                },
            },
        },
    },
    "x-regex": r"(\<\|channel\>thought\n(?P<thinking>.*?)\<channel\|\>)?(?P<tool_calls>\<\|tool_call\>.*\<tool_call\|\>)?"
               r"(?P<content>(?:(?!\<turn\|\>)(?!\<\|tool_response\>).)+)?(?:\<turn\|\>|\<\|tool_response\>)?",
}


def cache_dir() -> Path:
    return Path(os.environ.get("GEMMA_EDGE_TEST_CACHE", Path.home() / ".cache" / "gemma-edge" / "test"))


def _wheel() -> Path:
    target = cache_dir() / "transformers-wheels"
    found = sorted(target.glob(f"transformers-{VERSION}-*.whl"))
    if not found:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", f"transformers=={VERSION}", "--no-deps",
                        "--only-binary", ":all:", "-q", "-d", str(target)], check=True)
        found = sorted(target.glob(f"transformers-{VERSION}-*.whl"))
    return found[0]


@lru_cache(maxsize=1)
def legacy_module() -> types.ModuleType:
    with zipfile.ZipFile(_wheel()) as wheel:
        source = wheel.read(MODULE).decode("utf-8")
    source = source.replace("from transformers.utils import is_jmespath_available",
                            "is_jmespath_available = lambda: False")
    module = types.ModuleType("legacy_chat_parsing_utils")
    exec(compile(source, f"transformers-{VERSION}/{MODULE}", "exec"), module.__dict__)
    return module


def legacy_view(text: str) -> dict | str:
    """The legacy parse in our shape, text fields stripped (the legacy parser never strips) and
    an empty thinking as None; "raises" when it throws."""
    try:
        got = legacy_module().recursive_parse(text, GEMMA4_RESPONSE_SCHEMA)
    except Exception:  # noqa: BLE001 - any failure of the oracle is the verdict "raises"
        return "raises"
    return {"thinking": (got.get("thinking") or "").strip() or None, "content": (got.get("content") or "").strip(),
            "tool_calls": got.get("tool_calls") or []}
