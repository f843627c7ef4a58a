"""Loading the output corpus (corpus.yaml) and running transformers' Gemma 4 parser on it."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
KINDS = {"invalid": "invalid_tool_call", "repaired": "repaired_tool_call"}
DEFAULT_PROMPT = "<|turn>model\n"


@lru_cache(maxsize=1)
def load() -> dict:
    return yaml.safe_load((HERE / "corpus.yaml").read_text(encoding="utf-8"))


def cases() -> list[dict]:
    return load()["cases"]


def text_of(case: dict) -> str:
    return "".join(case["chunks"]) if "chunks" in case else case["input"]


def options_of(case: dict) -> dict:
    options = dict(case.get("options") or {})
    if "tools" in options:
        options["tools"] = [load()["tools"][name] for name in options["tools"]]
    return options


def expected_of(case: dict) -> dict:
    exp = case["expect"]
    return {
        "role": "assistant",
        "thinking": exp.get("thinking"),
        "content": exp.get("content", ""),
        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}
                       for name, args in exp.get("calls", [])],
        "error_kinds": [KINDS[k] for k in exp.get("errors", [])],
    }


@lru_cache(maxsize=1)
def _transformers_template() -> dict:
    from transformers.cli.serving.utils import _RESPONSE_TEMPLATE_FALLBACKS

    return next(t for names, t in _RESPONSE_TEMPLATE_FALLBACKS.items() if "gemma4" in names)


def transformers_view(case: dict) -> dict | str:
    """What transformers' Gemma 4 response_template parser makes of the case, in our shape
    (thinking/content/tool_calls), or "raises" when it throws."""
    from transformers.utils.chat_parsing import parse_response

    prefix = (case.get("options") or {}).get("prompt_tail") or DEFAULT_PROMPT
    try:
        got: Any = parse_response(text_of(case), _transformers_template(), prefix=prefix)
    except Exception:  # noqa: BLE001 - any failure of the oracle is the verdict "raises"
        return "raises"
    return {"thinking": got.get("reasoning_content") or None, "content": got.get("content") or "",
            "tool_calls": got.get("tool_calls") or []}


def transformers_verdicts(case: dict, ours: dict) -> dict[str, str]:
    """{"5.23": verdict, "5.12": verdict}, each agree / differ / raises / n/a: transformers 5.23's
    Gemma 4 response_template parser, and the legacy response_schema parser of <= 5.12 (which has
    no prompt prefix, so cases that need `prompt_tail` are n/a for it)."""
    from tests.parsing.legacy_transformers import legacy_view

    if case.get("format", "gemma4") not in ("gemma4", "gemma4-small", "gemma4-large"):
        return {"5.23": "n/a", "5.12": "n/a"}
    legacy = "n/a" if (case.get("options") or {}).get("prompt_tail") else legacy_view(text_of(case))
    return {"5.23": _verdict(transformers_view(case), ours), "5.12": _verdict(legacy, ours)}


def _verdict(view: dict | str, ours: dict) -> str:
    if isinstance(view, str):
        return view
    same = all(view[k] == ours[k] for k in ("thinking", "content", "tool_calls"))
    return "agree" if same else "differ"
