"""What the benchmark scripts share: their command line, the model they run, where results go."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from gemma_edge.measure import machine_description, write_results

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(os.environ.get("GEMMA_EDGE_BENCH_CACHE", Path.home() / ".cache" / "gemma-edge" / "bench"))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default=None, help="GGUF path or registry name (default: the embedded 270M)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: doctor's recommendation)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per side (medians reported)")
    p.add_argument("--quick", action="store_true", help="a tiny budget: checks that the script works, not speed")
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return p


def model_path(name: str | None) -> Path:
    from gemma_edge.registry import resolve

    return resolve(name)[0]


def threads(value: int | None, path: Path) -> int:
    """`value`, else the threads load() would use (doctor's recommendation)."""
    from gemma_edge.model import read_model_facts
    from gemma_edge.runtime import default_threads

    return default_threads(read_model_facts(path), value)


def finish(out: Path, name: str, report: dict, markdown: str, plot=None) -> dict:
    """Write `name.json`/`name.md` (and `name.png` when `plot(path)` can draw it); print the table."""
    report.setdefault("machine", machine_description())
    paths = write_results(out, name, report, markdown)
    if plot is not None:
        png = plot(out / f"{name}.png")
        if png:
            paths["png"] = png
    print(markdown)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return {k: str(v) for k, v in paths.items()}


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)
