"""RPC split over loopback: decode tokens/s in one process vs the same model split across this process
and 1 or 2 `gemma-edge worker` processes, and the network bytes each worker moves per decoded token
(the kernel's byte counters of the workers' TCP connections, read with `ss`).

    python -m bench.rpc_split [--model M] [--threads N] [--tokens 64] [--repeat 3] [--quick]

Every process gets one thread by default: they share this machine's cores. Loopback has no real network
cost, so this measures the RPC overhead itself; on a real link add (round-trip time + bytes / bandwidth)
per worker per token, which `gemma-edge doctor --rpc` measures.
"""
from __future__ import annotations

import re
import socket
import statistics
import subprocess
import sys
from pathlib import Path

from bench import common
from gemma_edge.measure import PROMPT_TEXT

NAME = "rpc_split"


def start_workers(count: int, threads: int) -> list[tuple[str, subprocess.Popen]]:
    from gemma_edge.rpc.endpoints import wait_until_listening

    workers = []
    for _ in range(count):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        process = subprocess.Popen([sys.executable, "-m", "gemma_edge", "worker", "--port", str(port),
                                    "--threads", str(threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"127.0.0.1:{port}"
        if not wait_until_listening(endpoint, 30):
            raise RuntimeError(f"worker {endpoint} did not start")
        workers.append((endpoint, process))
    return workers


def socket_bytes(endpoint: str) -> int:
    """Bytes both ways on the worker's established connections (the kernel's tcp_info, via `ss`)."""
    port = endpoint.rpartition(":")[2]
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in re.findall(r"bytes_(?:sent|received):(\d+)", out))


def measure(path: Path, threads: int, tokens: int, repeat: int, workers) -> dict:
    from gemma_edge.model import read_model_facts
    from gemma_edge.runtime import open_engine, resolve_settings
    from gemma_edge.sampling import Sampling

    greedy = Sampling(temperature=0)
    facts = read_model_facts(path)
    # split runs go through the supervised child, as `run --rpc` and load(rpc=...) do
    engine = open_engine(facts, resolve_settings(facts, n_ctx=1024, n_threads=threads, rpc=[e for e, _ in workers]))
    placement = engine.placement.as_dict() if engine.placement else None
    prompt = engine.llm.tokenize(PROMPT_TEXT.encode(), add_bos=True)

    def generate(n):
        engine.reset()
        gen = engine.generate(prompt, greedy, max_tokens=n)
        gen.text()
        return gen.timings.as_dict(gen.prompt_evaluated, len(gen.tokens))

    runs = []
    for _ in range(repeat):
        before = [socket_bytes(e) for e, _ in workers]
        generate(1)  # prefill + one step: subtracted, the difference is the decode steps alone
        middle = [socket_bytes(e) for e, _ in workers]
        timings = generate(tokens + 1)
        after = [socket_bytes(e) for e, _ in workers]
        runs.append({"decode_tokens_per_s": timings["decode_tokens_per_s"],
                     "bytes_per_token": [((a - m) - (m - b)) / tokens for b, m, a in zip(before, middle, after)]})
    engine.close()
    return {"workers": len(workers), "placement": placement, "prompt_tokens": len(prompt),
            "decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in runs),
            "bytes_per_token": [statistics.median(r["bytes_per_token"][i] for r in runs) for i in range(len(workers))],
            "runs": runs}


def markdown(report: dict) -> str:
    rows = ["| setup | decode tokens/s | vs one process | network bytes per token (each worker) |",
            "|---|---|---|---|"]
    base = report["results"][0]["decode_tokens_per_s"]
    for r in report["results"]:
        setup = "one process" if not r["workers"] else f"this process + {r['workers']} worker(s)"
        net = ", ".join(f"{b / 1024:.1f} KiB" for b in r["bytes_per_token"]) or "—"
        rows.append(f"| {setup} | {r['decode_tokens_per_s']:.1f} | {r['decode_tokens_per_s'] / base:.2f}× | {net} |")
    return (f"RPC split over loopback, {report['model']}, {report['tokens']} decoded tokens, "
            f"{report['threads']} threads per process, median of {report['repeat']}.\n\n" + "\n".join(rows) + "\n")


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64, help="decoded tokens per run")
    args = p.parse_args(argv)
    if args.quick:
        args.tokens, args.repeat = 4, 1
    path = common.model_path(args.model)
    # All the processes share this machine's cores; more than one thread each oversubscribes them and the
    # spinning threads of idle stages slow the busy one (measured: 10× slower with 2 threads on 2 cores).
    threads = args.threads or 1
    results = []
    for count in (0, 1, 2):
        workers = start_workers(count, threads)
        try:
            results.append(measure(path, threads, args.tokens, args.repeat, workers))
        finally:
            for _, process in workers:
                process.kill()
                process.wait(10)
    from gemma_edge.model import read_model_facts

    report = {"model": read_model_facts(path).name, "tokens": args.tokens, "repeat": args.repeat,
              "threads": threads, "results": results}
    return common.finish(args.out, NAME, report, markdown(report))


if __name__ == "__main__":
    main()
