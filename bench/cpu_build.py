"""llama.cpp builds and load options, each side in its own worker process (its own venv, hence its
own llama.cpp), all on the same GGUF, prompt tokens, threads and greedy decoding:

* `builds`: the wheel built with flags derived from this CPU (scripts/build-llama-wheel.sh) vs one
  built with GGML_NATIVE on (-march=native), the old default;
* `extra-buffers`: loading with llama.cpp's extra buffer types (REPACK; AMX where built and granted)
  vs without (`use_extra_bufts = False`, what gemma-edge does on an AMX build unless GEMMA_EDGE_AMX=1).

    python -m bench.cpu_build builds --baseline-python NATIVE_VENV/bin/python --python DERIVED_VENV/bin/python
    python -m bench.cpu_build extra-buffers [--python P] [--threads 2] [--repeat 7]

Each worker loads the model once, then answers "run" with one raw llama.cpp measurement from an
empty KV cache (gemma_edge.measure.raw_loop); runs are interleaved A B, B A, … after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import common
from gemma_edge.measure import Measurement, interleaved, markdown_table, summarize

REPO = Path(__file__).resolve().parent.parent


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def worker(model: str, threads: int, prompt_tokens: int, gen_tokens: int, extra_buffers: bool, clock: str) -> None:
    from gemma_edge.llama.ggml import cpu_backend_features
    from gemma_edge.llama.loader import load_llama
    from gemma_edge.measure import prompt_tokens as make_prompt, raw_loop

    llm = load_llama(model, extra_buffers=extra_buffers, n_ctx=prompt_tokens + gen_tokens + 16,
                     n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    tokens = make_prompt(llm, prompt_tokens)
    print(json.dumps({"features": cpu_backend_features()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        m = raw_loop(llm, tokens, gen_tokens, clock=CLOCKS[clock])
        print(json.dumps({"prompt_tokens": m.prompt_tokens, "generated_tokens": m.generated_tokens, "ttft_s": m.ttft_s,
                          "total_s": m.total_s, "rss_mb": m.rss_mb, "tokens": m.tokens}), flush=True)


class Worker:
    def __init__(self, python: str, args, extra_buffers: bool):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen(
            [python, "-m", "bench.cpu_build", "worker", "--model", str(args.model_path), "--threads", str(args.threads),
             "--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens),
             "--extra-buffers", "1" if extra_buffers else "0", "--clock", args.clock],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        self.python = python
        self.features = json.loads(self.process.stdout.readline())["features"]

    def run(self) -> Measurement:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        data = json.loads(self.process.stdout.readline())
        return Measurement(data["prompt_tokens"], data["generated_tokens"], data["ttft_s"], data["total_s"],
                           data["rss_mb"], tuple(data["tokens"]))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("mode", choices=["builds", "extra-buffers", "worker"])
    p.add_argument("--python", default=sys.executable, help="the venv's python whose llama.cpp is measured")
    p.add_argument("--baseline-python", default=None, help="builds: the venv's python with the native build")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--gen-tokens", type=int, default=128)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time, or the process's CPU time (steadier on a shared machine; use with --threads 1)")
    p.add_argument("--extra-buffers", default="1", help=argparse.SUPPRESS)  # worker only
    args = p.parse_args(argv)
    if args.mode == "worker":
        return worker(args.model, args.threads, args.prompt_tokens, args.gen_tokens, args.extra_buffers == "1",
                      args.clock)
    if args.quick:
        args.prompt_tokens, args.gen_tokens, args.repeat = 48, 6, 1
    args.model_path = common.model_path(args.model)
    args.threads = common.threads(args.threads, args.model_path)
    if args.mode == "builds":
        if not args.baseline_python:
            p.error("builds needs --baseline-python (the venv with the GGML_NATIVE=on build)")
        baseline, sides = "native", {"native": Worker(args.baseline_python, args, True),
                                     "derived": Worker(args.python, args, True)}
    else:
        baseline, sides = "with extra buffers", {"with extra buffers": Worker(args.python, args, True),
                                                 "without": Worker(args.python, args, False)}
    try:
        report = summarize(interleaved({name: w.run for name, w in sides.items()}, args.repeat, lambda: None),
                           baseline=baseline)
    finally:
        for w in sides.values():
            w.close()
    report["settings"] = {"model": str(args.model_path), "threads": args.threads, "clock": args.clock,
                          "prompt_tokens": args.prompt_tokens,
                          "gen_tokens": args.gen_tokens, "repeat": args.repeat,
                          "sides": {name: {"python": w.python, "built_for": sorted(w.features)}
                                    for name, w in sides.items()}}
    what = ("derived CPU flags vs GGML_NATIVE=on" if args.mode == "builds"
            else "llama.cpp with vs without its extra buffer types (REPACK)")
    markdown = (f"### {what} ({args.prompt_tokens}-token prompt, {args.gen_tokens} generated, {args.threads} threads, "
                f"{args.repeat} interleaved runs per side, {args.clock} clock)\n\n" +
                markdown_table(report, baseline=baseline) +
                f"\n\nSame tokens generated by both sides: {report['identical_tokens']}.\n")
    name = f"cpu_build_{args.mode.replace('-', '_')}_{args.clock}"
    report["files"] = common.finish(args.out, name, report, markdown)
    return report


if __name__ == "__main__":
    main()
