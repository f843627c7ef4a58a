"""Conversion speed and memory: our converter vs llama.cpp's ``convert_hf_to_gguf.py``, same run, same checkpoint.

The checkpoint is the real Gemma 3 270M as BF16 safetensors (the embedded GGUF de-quantized, built and
cached by tests/convert/real_gemma3.py). Each conversion runs in its own process, started by a fresh
probe process so ``RUSAGE_CHILDREN``'s peak RSS belongs to that conversion alone.

    python -m bench.convert [--repeat R] [--quick] [--out DIR]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import common

NAME = "convert"

_PROBE = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
)


def measure(command: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of ``command`` run in a fresh child."""
    out = subprocess.run([sys.executable, "-c", _PROBE, *command], check=True, capture_output=True, text=True)
    seconds, peak = out.stdout.split()
    return float(seconds), int(peak)


def median_of(command: list[str], repeat: int) -> dict:
    runs = [measure(command) for _ in range(repeat)]
    return {"seconds": round(statistics.median(r[0] for r in runs), 2),
            "peak_rss_mb": round(statistics.median(r[1] for r in runs) / 1e6, 1),
            "runs": [{"seconds": round(s, 2), "peak_rss_mb": round(p / 1e6, 1)} for s, p in runs]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per side (medians reported)")
    p.add_argument("--quick", action="store_true", help="one run per side")
    p.add_argument("--out", type=Path, default=common.RESULTS)
    p.add_argument("--threads", type=int, default=None, help="ignored (conversion is single-threaded)")
    args = p.parse_args(argv)
    repeat = 1 if args.quick else args.repeat

    from tests.convert.oracle import reference_converter_dir
    from tests.convert.real_gemma3 import real_checkpoint

    checkpoint = real_checkpoint()
    reference = reference_converter_dir() / "convert_hf_to_gguf.py"
    with tempfile.TemporaryDirectory(dir=common.CACHE if common.CACHE.exists() else None) as tmp:
        tmp = Path(tmp)
        ours_f16, ref_f16, q4 = tmp / "ours-f16.gguf", tmp / "ref-f16.gguf", tmp / "q4_k_m.gguf"
        rows = {
            "ours_f16": median_of([sys.executable, "-m", "convert", "convert", str(checkpoint), "-o", str(ours_f16),
                                   "--type", "f16", "--force", "--quiet"], repeat),
            "reference_f16": median_of([sys.executable, str(reference), str(checkpoint), "--outfile", str(ref_f16),
                                        "--outtype", "f16"], repeat),
            "quantize_f16_to_q4_k_m": median_of([sys.executable, "-m", "convert", "quantize", str(ours_f16), "-o",
                                                 str(q4), "--type", "q4_k_m", "--force"], repeat),
        }
    ours, ref = rows["ours_f16"], rows["reference_f16"]
    report = {
        "checkpoint": "Gemma 3 270M, BF16 safetensors (de-quantized embedded Q4_K_M)",
        "repeat": repeat,
        "results": rows,
        "speedup": round(ref["seconds"] / ours["seconds"], 2),
        "rss_ratio": round(ours["peak_rss_mb"] / ref["peak_rss_mb"], 3),
        "goal": {"speedup_at_least": 1.5, "rss_ratio_at_most": 0.5},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    markdown = "\n".join([
        "### Conversion: Gemma 3 270M BF16 safetensors → F16 GGUF",
        "",
        "| converter | wall time (s) | peak RSS (MB) |",
        "|---|---:|---:|",
        f"| gemma-edge `convert` | {ours['seconds']} | {ours['peak_rss_mb']} |",
        f"| llama.cpp `convert_hf_to_gguf.py` | {ref['seconds']} | {ref['peak_rss_mb']} |",
        f"| gemma-edge `quantize` F16 → Q4_K_M | {rows['quantize_f16_to_q4_k_m']['seconds']} | "
        f"{rows['quantize_f16_to_q4_k_m']['peak_rss_mb']} |",
        "",
        f"Speed-up {report['speedup']}× at {report['rss_ratio']}× the reference's peak RSS "
        f"(goal ≥ 1.5× at ≤ 0.5×); medians of {repeat} run(s).",
    ])
    common.finish(args.out, NAME, report, markdown)
    return report


if __name__ == "__main__":
    main()
