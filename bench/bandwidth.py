"""3. Memory bandwidth and decode efficiency: a multi-threaded read benchmark of this machine's RAM,
each model's bytes read per decoded token (all weights — Gemma ties the output projection to the
embedding table, so it is read whole every token — plus the KV cache up to that position), and
decode efficiency = measured decode tokens/s ÷ the bandwidth-bound tokens/s.

    python -m bench.bandwidth [--model M ...] [--threads N] [--size-mb 1024] [--repeat 5]
"""
from __future__ import annotations

import statistics
import threading
import time

import numpy as np

from bench import common
from gemma_edge.measure import BenchSettings, bench_model, pyplot, save_figure

NAME = "bandwidth"


def read_bandwidth(size_mb: int, threads: int, repeats: int) -> dict:
    """Bytes/s reading a buffer much larger than the caches, split across `threads` (numpy releases
    the GIL in reductions). Integer sum and bitwise-or reductions; the best of each round counts."""
    data = np.ones(size_mb * 2**20 // 8, dtype=np.int64)
    parts = np.array_split(data, threads)
    kernels = {"sum": np.add.reduce, "or": np.bitwise_or.reduce}
    rates = []
    for _ in range(repeats):
        best = 0.0
        for kernel in kernels.values():
            workers = [threading.Thread(target=kernel, args=(part,)) for part in parts]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            best = max(best, data.nbytes / (time.perf_counter() - start))
        rates.append(best)
    return {"gb_per_s_best": round(max(rates) / 1e9, 2), "gb_per_s_median": round(statistics.median(rates) / 1e9, 2),
            "buffer_mb": size_mb, "threads": threads, "repeats": repeats}


def bytes_per_token(facts, position: int) -> int:
    """Bytes a decode step reads at context `position`: every weight, plus the KV cache so far
    (an upper bound: Gemma 3's sliding-window layers read at most their window)."""
    return facts.weights_bytes + facts.kv_bytes_per_token * position


def model_efficiency(path, threads: int, bandwidth_bps: float, prompt_tokens: int, gen_tokens: int, repeat: int) -> dict:
    from gemma_edge.api import Model

    model = Model(path, n_ctx=max(1024, prompt_tokens + gen_tokens + 16), n_threads=threads)
    report = bench_model(model, BenchSettings(threads, model.n_ctx, model.engine.llm.n_batch, prompt_tokens,
                                              gen_tokens, repeat))
    facts = model.facts
    model.close()
    per_token = bytes_per_token(facts, prompt_tokens + gen_tokens // 2)
    bound = bandwidth_bps / per_token
    raw = report["sides"]["llama.cpp"]["decode_tokens_per_s"]["median"]
    edge = report["sides"]["gemma-edge"]["decode_tokens_per_s"]["median"]
    return {"model": facts.name, "path": str(path), "quantization": facts.quantization,
            "weights_mb": round(facts.weights_bytes / 2**20, 1), "bytes_per_token_mb": round(per_token / 2**20, 1),
            "bound_tokens_per_s": round(bound, 1), "llama_cpp_decode_tokens_per_s": raw,
            "gemma_edge_decode_tokens_per_s": edge, "llama_cpp_efficiency": round(raw / bound, 3),
            "gemma_edge_efficiency": round(edge / bound, 3), "decode": report["sides"]}


def markdown(report: dict) -> str:
    bw = report["bandwidth"]
    lines = [f"### Memory bandwidth and decode efficiency ({bw['threads']} threads)", "",
             f"Read bandwidth: **{bw['gb_per_s_best']} GB/s** best, {bw['gb_per_s_median']} GB/s median "
             f"({bw['buffer_mb']} MB buffer, {bw['repeats']} rounds).", "",
             "| model | weights (MB) | bytes/token (MB) | bandwidth bound (tok/s) | llama.cpp decode (tok/s) | "
             "gemma-edge decode (tok/s) | efficiency llama.cpp | efficiency gemma-edge |",
             "|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        lines.append(f"| {m['model']} {m['quantization']} | {m['weights_mb']} | {m['bytes_per_token_mb']} | "
                     f"{m['bound_tokens_per_s']:.1f} | {m['llama_cpp_decode_tokens_per_s']:.1f} | "
                     f"{m['gemma_edge_decode_tokens_per_s']:.1f} | {m['llama_cpp_efficiency']:.0%} | "
                     f"{m['gemma_edge_efficiency']:.0%} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path):
    plt = pyplot()
    if plt is None:
        return None
    models = report["models"]
    labels = [f"{m['model']}\n{m['quantization']}" for m in models]
    x = np.arange(len(models))
    fig, ax = plt.subplots(figsize=(max(4, 2.2 * len(models)), 3.4))
    ax.bar(x - 0.27, [m["bound_tokens_per_s"] for m in models], 0.27, label="bandwidth bound")
    ax.bar(x, [m["llama_cpp_decode_tokens_per_s"] for m in models], 0.27, label="llama.cpp")
    ax.bar(x + 0.27, [m["gemma_edge_decode_tokens_per_s"] for m in models], 0.27, label="gemma-edge")
    ax.set_xticks(x, labels)
    ax.set_ylabel("decode tokens/s")
    ax.legend()
    return save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=None, help="GGUF paths or registry names (default: --model)")
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=64)
    args = p.parse_args(argv)
    if args.quick:
        args.size_mb, args.prompt_tokens, args.gen_tokens, args.repeat = 64, 16, 4, 1
    paths = [common.model_path(m) for m in (args.models or [args.model])]
    threads = common.threads(args.threads, paths[0])
    bandwidth = read_bandwidth(args.size_mb, threads, max(3, args.repeat))
    report = {"bandwidth": bandwidth,
              "models": [model_efficiency(path, threads, bandwidth["gb_per_s_best"] * 1e9, args.prompt_tokens,
                                          args.gen_tokens, args.repeat) for path in paths],
              "settings": {"threads": threads, "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                           "repeat": args.repeat}}
    report["files"] = common.finish(args.out, NAME, report, markdown(report), lambda p: plot(report, p))
    return report


if __name__ == "__main__":
    main()
