"""The cost of one MTP drafting step (`--spec mtp:DRAFTER`) against one decode step of its target, same
run, interleaved: what a drafted token costs before verification decides whether it pays.

Real Gemma 4 drafter weights cannot be had here, so by default this runs the tiny seeded pair of the
tests (tests/runtime/tiny_gemma4_mtp.py: a 6-layer, 64-wide target and its 4-layer, 32-wide drafter,
both with the real 262,144-token vocabulary, F32): a correctness-scale pair, not a speed claim for the
real models, where the target is far larger than its drafter. `--target`/`--drafter` take real GGUFs.

    python -m bench.mtp_step [--target T.gguf --drafter D.gguf] [--threads N] [--repeat 5] [--quick]
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench import common
from gemma_edge.measure import PROMPT_TEXT

NAME = "mtp_step"


def tiny_pair() -> tuple[Path, Path]:
    from tests.runtime.tiny_gemma4_mtp import drafter_gguf, target_gguf

    return target_gguf(), drafter_gguf()


def measure(target: Path, drafter: Path, threads: int | None, repeat: int, steps: int, prompt_tokens: int) -> dict:
    from gemma_edge.api import Model

    model = Model(target, n_ctx=prompt_tokens + 64, n_threads=threads, speculative=f"mtp:{drafter}")
    try:
        engine, mtp = model.engine, model._mtp
        prompt = model.tokenize_raw(PROMPT_TEXT * 8)[:prompt_tokens]
        position, token = len(prompt), prompt[-1]

        def target_steps(n: int) -> float:  # seconds per token decoded at the same position, n times
            engine._prefill(prompt)
            start = time.perf_counter()
            for _ in range(n):
                engine.llm.eval([token])
                engine.llm.n_tokens = position
            return (time.perf_counter() - start) / n

        def drafter_steps(n: int) -> float:  # seconds per drafting step at that position, n times
            engine._prefill(prompt)  # the cache holds the prompt only (the target's steps left a position)
            state = mtp.target_state()
            start = time.perf_counter()
            for _ in range(n):
                if mtp.step(token, position, state) is None:
                    raise RuntimeError("llama.cpp refused the drafting step")
            return (time.perf_counter() - start) / n

        times: dict[str, list[float]] = {"target decode step": [], "MTP drafting step": []}
        target_steps(2), drafter_steps(2)  # warm-up
        for i in range(repeat):
            order = [("target decode step", target_steps), ("MTP drafting step", drafter_steps)]
            for name, run in (order if i % 2 == 0 else order[::-1]):
                times[name].append(run(steps))
        target_ms = statistics.median(times["target decode step"]) * 1e3
        drafter_ms = statistics.median(times["MTP drafting step"]) * 1e3
        return {"target": str(target), "drafter": str(drafter), "threads": engine.n_threads,
                "prompt_tokens": prompt_tokens, "steps_per_run": steps, "repeat": repeat,
                "target_step_ms": round(target_ms, 3), "drafter_step_ms": round(drafter_ms, 3),
                "drafter_over_target": round(drafter_ms / target_ms, 3), "runs_ms": times}
    finally:
        model.close()


def markdown(report: dict) -> str:
    return "\n".join([
        f"### One MTP drafting step vs one target decode step ({report['threads']} threads, "
        f"{report['prompt_tokens']}-token context, median of {report['repeat']} interleaved runs of "
        f"{report['steps_per_run']} steps)", "",
        "| step | ms | ratio |", "|---|---:|---:|",
        f"| target decode step | {report['target_step_ms']} | 1.00 |",
        f"| MTP drafting step | {report['drafter_step_ms']} | {report['drafter_over_target']:.2f} |", ""])


def main() -> None:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--target", type=Path, default=None, help="target Gemma 4 GGUF (default: the tiny test pair)")
    p.add_argument("--drafter", type=Path, default=None, help="its gemma4-assistant GGUF")
    p.add_argument("--steps", type=int, default=50, help="steps per timed run")
    p.add_argument("--prompt-tokens", type=int, default=128)
    args = p.parse_args()
    target, drafter = (args.target, args.drafter) if args.target and args.drafter else tiny_pair()
    steps, repeat = (5, 1) if args.quick else (args.steps, args.repeat)
    report = measure(target, drafter, args.threads, repeat, steps, args.prompt_tokens)
    common.finish(args.out, NAME, report, markdown(report))


if __name__ == "__main__":
    main()
