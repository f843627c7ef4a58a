"""All five benchmarks, then `summary.md` (their tables one after another) — `make bench`.

    python -m bench.run_all [--quick] [--threads N] [--repeat R] [--out DIR] [--skip NAME ...]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench import bandwidth, common, kv_reuse, overhead, threads_quants, transformers_cpu

SCRIPTS = {"overhead": overhead, "kv_reuse": kv_reuse, "bandwidth": bandwidth, "transformers": transformers_cpu,
           "threads_quants": threads_quants}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeat", type=int, default=None)
    p.add_argument("--out", type=Path, default=common.RESULTS)
    p.add_argument("--skip", nargs="*", default=[], choices=sorted(SCRIPTS))
    p.add_argument("--extra", nargs="*", default=[], metavar="NAME=ARGS",
                   help="extra arguments for one script, e.g. threads_quants='--types q8_0'")
    args = p.parse_args(argv)
    extra = {name: value.split() for name, _, value in (e.partition("=") for e in args.extra)}
    done = {}
    for name, module in SCRIPTS.items():
        if name in args.skip:
            continue
        argv_ = ["--out", str(args.out)] + (["--quick"] if args.quick else [])
        argv_ += ["--threads", str(args.threads)] if args.threads else []
        argv_ += ["--repeat", str(args.repeat)] if args.repeat else []
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        module.main(argv_ + extra.get(name, []))
        done[name] = round(time.perf_counter() - start, 1)
    parts = ["## Benchmark results", "", _machine_line(), ""]
    for module in SCRIPTS.values():  # this run's results and earlier ones of skipped scripts
        md = args.out / f"{module.NAME}.md"
        if md.exists():
            parts += [md.read_text(encoding="utf-8"), ""]
    (args.out / "summary.md").write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote {args.out / 'summary.md'} ({', '.join(f'{k} {v} s' for k, v in done.items())})")
    return done


def _machine_line() -> str:
    from gemma_edge.measure import machine_description

    m = machine_description()
    return (f"Machine: {m['cpu']} ({m['machine']}, {m['system']}), {m['physical_cores']} physical cores / "
            f"{m['logical_cpus']} logical CPUs, {m['total_memory_gb']} GB RAM; Python {m['python']}, "
            f"llama-cpp-python {m['llama_cpp_python']}.")


if __name__ == "__main__":
    main()
