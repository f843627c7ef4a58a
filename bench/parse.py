"""Parsing speed: 1 MB of Gemma 4 output (thinking, markdown content, tool calls with nested
arguments) through the streaming parser, fed the way an engine feeds it: one detokenized Gemma 4
token at a time (real vocabulary, when the reference vocab and llama_cpp are available), plus
fixed 1- and 4-character chunks and the whole-output parse. Same-run baseline: transformers'
streaming `ResponseParser` with its Gemma 4 response template on the same token pieces.
The target is < 1 s for the token-by-token stream.

Run: .venv/bin/python -m bench.parse   (writes bench/results/parse.json)
"""
from __future__ import annotations

import codecs
import json
import os
import platform
import sys
import time
from pathlib import Path

from gemma_edge.parsing import StreamParser, parse_response

SIZE = 1_000_000
TARGET_S = 1.0
RUNS = 3
RESULTS = Path(__file__).resolve().parent / "results" / "parse.json"
Q = '<|"|>'


def sample_output(size: int = SIZE) -> str:
    """A long, realistic assistant turn: reasoning, prose with markdown and stray `<`, and tool
    calls whose strings hold code-like text."""
    unit = (
        "<|channel>thought\nThe user asks about the weather in Paris and a file edit. I should check "
        "the forecast first, then write the summary. Units: metric, since they are in France.\n<channel|>"
        "Sure — here is what I found about **Paris**:\n\n- Temperature: 21 °C (feels like 19 °C)\n"
        "- Wind: light, from the south-west\n- Note: values < 5 km/h count as calm; a <| is just text.\n\n"
        f"<|tool_call>call:get_weather{{city:{Q}Paris, FR{Q},days:3,detail:{{hourly:true,"
        f"units:[{Q}c{Q},{Q}kmh{Q}]}},threshold:-2.5e-1}}<tool_call|>"
        f"<|tool_call>call:write_file{{path:{Q}notes/paris.md{Q},content:{Q}# Paris\n\n```python\n"
        f"def f(x):\n    return {{'a': x, \"b\": [1, 2]}}\n```\n{Q}}}<tool_call|>"
        "I have saved the notes. Anything else you would like to know about the trip?\n\n"
    )
    text = unit * (size // len(unit) + 1)
    return text[:size]


def token_pieces(text: str) -> tuple[list[str], str]:
    """The text as detokenized Gemma 4 tokens (incremental UTF-8), or 4-character chunks when the
    vocabulary is not available."""
    from tests.reference import gemma4_vocab_path

    vocab_path = gemma4_vocab_path()
    try:
        from gemma_edge.llama.loader import open_vocabulary

        vocab = open_vocabulary(vocab_path)
    except Exception:  # noqa: BLE001 - no vocab or no llama_cpp: fixed chunks instead
        return [text[i:i + 4] for i in range(0, len(text), 4)], "4-char chunks (Gemma 4 vocab unavailable)"
    decoder = codecs.getincrementaldecoder("utf-8")()
    tokens = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    pieces = [decoder.decode(vocab.detokenize([t], special=True)) for t in tokens]
    assert "".join(pieces) == text
    return pieces, "Gemma 4 tokens, detokenized one at a time"


def stream_ours(pieces: list[str]) -> dict:
    parser = StreamParser("gemma4")
    for piece in pieces:
        parser.feed(piece)
    parser.finish()
    return parser.close()


def stream_transformers(pieces: list[str]):
    from transformers.cli.serving.utils import _RESPONSE_TEMPLATE_FALLBACKS
    from transformers.utils.chat_parsing import ResponseParser

    template = next(t for names, t in _RESPONSE_TEMPLATE_FALLBACKS.items() if "gemma4" in names)
    parser = ResponseParser(template, prefix="<|turn>model\n")
    for piece in pieces:
        parser.feed(piece)
    return parser.finalize()


def best_of(fn, *args) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    text = sample_output()
    pieces, how = token_pieces(text)
    whole = parse_response(text, format="gemma4")
    assert stream_ours(pieces) == whole
    rows = {
        "stream_tokens_s": best_of(stream_ours, pieces),
        "stream_4char_s": best_of(stream_ours, [text[i:i + 4] for i in range(0, len(text), 4)]),
        "stream_1char_s": best_of(stream_ours, list(text)),
        "whole_parse_s": best_of(lambda t: parse_response(t, format="gemma4"), text),
    }
    try:
        rows["baseline_transformers_stream_tokens_s"] = best_of(stream_transformers, pieces)
    except Exception as exc:  # noqa: BLE001 - the baseline is informative, not required
        rows["baseline_transformers_stream_tokens_s"] = f"unavailable: {type(exc).__name__}: {exc}"[:200]
    result = {
        "benchmark": "parse", "bytes": len(text.encode("utf-8")), "chars": len(text), "pieces": len(pieces),
        "pieces_kind": how, "tool_calls": len(whole["tool_calls"]), "runs": RUNS, "target_s": TARGET_S,
        "meets_target": rows["stream_tokens_s"] < TARGET_S, **rows,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
