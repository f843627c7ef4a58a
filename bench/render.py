"""Rendering speed: `render_prompt` / `render_segments` for a 1,000-message conversation per turn
format, next to the official Jinja template run the way transformers runs it (same process, same
conversation) as the baseline. The target is < 20 ms for render_prompt at 1,000 messages.

Run: .venv/bin/python -m bench.render   (writes bench/results/render.json)
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from gemma_edge.formats import FORMAT_NAMES, get_format, render_prompt, render_segments

MESSAGES = 1000
RUNS = 15
TARGET_MS = 20.0
RESULTS = Path(__file__).resolve().parent / "results" / "render.json"
PROSE = ("The harbour town woke slowly; fishing boats came back with the tide and the baker opened "
         "his shutters. ")


def conversation(format_name: str, size: int = MESSAGES) -> tuple[list[dict], list[dict] | None]:
    """A long, realistic chat: alternating turns of varied length and (for formats with tools) a
    tool call with its result every tenth exchange. No system message: Gemma 1/2's templates
    reject one, and the official baseline must render the same input."""
    with_tools = get_format(format_name).supports_tools
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look a word up.", "parameters": {
        "type": "object", "properties": {"word": {"type": "string"}, "limit": {"type": "integer"}},
        "required": ["word"]}}}] if with_tools else None
    messages: list[dict] = []
    exchange = 0
    while len(messages) < size:
        exchange += 1
        messages.append({"role": "user", "content": f"Question {exchange}: " + PROSE * (1 + exchange % 4)})
        if with_tools and exchange % 10 == 0 and len(messages) + 3 <= size:
            messages.append({"role": "assistant", "tool_calls": [{"id": f"c{exchange}", "type": "function",
                             "function": {"name": "lookup", "arguments": {"word": "harbour", "limit": 3}}}]})
            messages.append({"role": "tool", "tool_call_id": f"c{exchange}", "content": "a sheltered port"})
        messages.append({"role": "assistant", "content": f"Answer {exchange}. " + PROSE * (1 + exchange % 3)})
    return messages[:size], tools


def timed(fn, runs: int = RUNS) -> dict:
    fn()  # warm-up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(samples), 3), "min_ms": round(min(samples), 3),
            "max_ms": round(max(samples), 3), "runs": runs}


def official_baseline(format_name: str, messages, tools):
    from tests.reference import NEWEST_TEMPLATES, reference_dir

    reference = reference_dir()
    name = NEWEST_TEMPLATES.get(format_name)
    if name is None or not (reference / "templates" / name).exists():
        return None
    try:
        from transformers.utils.chat_template_utils import render_jinja_template
    except ImportError:
        return None
    text = (reference / "templates" / name).read_text()

    def run():
        return render_jinja_template([messages], tools=tools, chat_template=text, add_generation_prompt=True,
                                     bos_token="<bos>", eos_token="<eos>", enable_thinking=False)[0][0]

    if run() != render_prompt(messages, format=format_name, tools=tools):
        raise SystemExit(f"{format_name}: our prompt differs from the official template on the benchmark input")
    return timed(run, runs=3)


def main() -> int:
    rows = []
    for format_name in FORMAT_NAMES:
        messages, tools = conversation(format_name)
        row = {
            "format": format_name, "messages": len(messages),
            "prompt_chars": len(render_prompt(messages, format=format_name, tools=tools)),
            "render_prompt": timed(lambda: render_prompt(messages, format=format_name, tools=tools)),
            "render_segments": timed(lambda: render_segments(messages, format=format_name, tools=tools)),
            "official_jinja_baseline": official_baseline(format_name, messages, tools),
        }
        row["meets_target"] = row["render_prompt"]["median_ms"] < TARGET_MS
        rows.append(row)
        baseline = row["official_jinja_baseline"]
        print(f"{format_name:14s} render_prompt {row['render_prompt']['median_ms']:7.2f} ms   "
              f"render_segments {row['render_segments']['median_ms']:7.2f} ms   "
              f"official Jinja {baseline['median_ms'] if baseline else float('nan'):9.2f} ms   "
              f"{'ok' if row['meets_target'] else 'SLOW'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "render 1,000 messages", "target_ms": TARGET_MS,
        "python": sys.version.split()[0], "machine": platform.machine(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "results": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0 if all(row["meets_target"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
