"""4. Thread scaling (1 … cores) and quantization types (F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, IQ4_NL):
file size, prefill/decode speed, and quality as perplexity and KL divergence from F16 on a fixed
text scored as a model reply inside the chat format.

The F16 GGUF is converted (with this project's converter) from the Hugging Face checkpoint of the
embedded 270M, whose weights are themselves de-quantized from Q4_K_M: that flatters the low-bit
types (they re-quantize values that were already on a 4-bit grid). Converted and quantized files
are cached under ~/.cache/gemma-edge/bench (never committed).

    python -m bench.threads_quants [--hf-dir DIR] [--types f16 q8_0 …] [--threads-max N] [--repeat 5]
"""
from __future__ import annotations

import os
from pathlib import Path

from bench import common
from gemma_edge.measure import BenchSettings, bench_model, pyplot, save_figure

NAME = "threads_quants"
TYPES = ["f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "iq4_nl"]
TEXT = Path(__file__).resolve().parent / "data" / "prose.txt"
NOTE = ("The 270M's weights are de-quantized from the Q4_K_M release (the only copy that ships offline), so "
        "low-bit types re-quantize values already on a 4-bit grid: their quality loss here is smaller than "
        "on original BF16 weights.")


def speed(path: Path, threads: int, prompt_tokens: int, gen_tokens: int, repeat: int) -> dict:
    from gemma_edge.api import Model

    model = Model(path, n_ctx=max(1024, prompt_tokens + gen_tokens + 16), n_threads=threads)
    report = bench_model(model, BenchSettings(threads, model.n_ctx, model.engine.llm.n_batch, prompt_tokens,
                                              gen_tokens, repeat))
    model.close()
    sides = report["sides"]
    return {side: {m: sides[side][m]["median"] for m in ("prefill_tokens_per_s", "decode_tokens_per_s", "ttft_s")}
            for side in sides}


def thread_scaling(path: Path, max_threads: int, prompt_tokens: int, gen_tokens: int, repeat: int) -> list[dict]:
    return [{"threads": t, **speed(path, t, prompt_tokens, gen_tokens, repeat)} for t in range(1, max_threads + 1)]


def quantized_files(hf_dir: Path, types: list[str], cache: Path) -> dict[str, Path]:
    """F16 from the checkpoint, then each type from the F16 with llama.cpp's quantizer (cached)."""
    from convert.api import convert_checkpoint
    from convert.quantize import quantize

    cache.mkdir(parents=True, exist_ok=True)
    f16 = cache / "gemma-3-270m-f16.gguf"
    if not f16.exists():
        convert_checkpoint(hf_dir, f16, "f16")
    files = {"f16": f16}
    for t in types:
        if t == "f16":
            continue
        target = cache / f"gemma-3-270m-{t}.gguf"
        if not target.exists():
            quantize(f16, target, t)
        files[t] = target
    return files


def quality(path: Path, reference: Path, threads: int, n_ctx: int, max_tokens: int | None = None) -> dict:
    from gemma_edge.api import Model
    from gemma_edge.perplexity import evaluate, text_tokens

    model = Model(path, n_ctx=n_ctx, n_threads=threads, n_batch=64)
    ref = Model(reference, n_ctx=n_ctx, n_threads=threads, n_batch=64) if path != reference else None
    tokens = text_tokens(model, TEXT.read_text(encoding="utf-8"), chat=True)[:max_tokens]
    result = evaluate(model.engine, tokens, n_ctx, reference=ref.engine if ref else None)
    model.close()
    if ref:
        ref.close()
    return {"perplexity": round(result.perplexity, 4), "kl_mean": None if ref is None else round(result.kl_mean, 5),
            "top1_agreement": None if ref is None else round(result.top1_agreement, 4), "n_scored": result.n_scored}


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [f"### Thread scaling (llama.cpp raw loop and gemma-edge, {s['prompt_tokens']}-token prompt, "
             f"{s['gen_tokens']} generated, median of {s['repeat']})", "",
             "| threads | prefill llama.cpp | prefill gemma-edge | decode llama.cpp | decode gemma-edge |",
             "|---|---|---|---|---|"]
    for row in report["threads"]:
        lines.append(f"| {row['threads']} | {row['llama.cpp']['prefill_tokens_per_s']:.1f} | "
                     f"{row['gemma-edge']['prefill_tokens_per_s']:.1f} | {row['llama.cpp']['decode_tokens_per_s']:.1f} | "
                     f"{row['gemma-edge']['decode_tokens_per_s']:.1f} |")
    if report["quantizations"]:
        lines += ["", f"### Quantization types ({s['threads_for_quants']} threads; quality on bench/data/prose.txt "
                      f"as a chat reply, windows of {s['ppl_ctx']} tokens)", "",
                  "| type | size (MB) | prefill tok/s | decode tok/s | perplexity | KL vs F16 | same top token |",
                  "|---|---|---|---|---|---|---|"]
        for q in report["quantizations"]:
            kl = "–" if q["kl_mean"] is None else f"{q['kl_mean']:.5f}"
            top = "–" if q["top1_agreement"] is None else f"{100 * q['top1_agreement']:.1f}%"
            lines.append(f"| {q['type'].upper()} | {q['size_mb']} | {q['llama.cpp']['prefill_tokens_per_s']:.1f} | "
                         f"{q['llama.cpp']['decode_tokens_per_s']:.1f} | {q['perplexity']:.3f} | {kl} | {top} |")
        lines += ["", f"Note: {NOTE}"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path):
    plt = pyplot()
    if plt is None:
        return None
    panels = 2 if report["quantizations"] else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.4), squeeze=False)
    ax = axes[0][0]
    threads = [r["threads"] for r in report["threads"]]
    for side, style in (("llama.cpp", "-o"), ("gemma-edge", "--x")):
        ax.plot(threads, [r[side]["decode_tokens_per_s"] for r in report["threads"]], style, label=f"decode {side}")
        ax.plot(threads, [r[side]["prefill_tokens_per_s"] / 10 for r in report["threads"]], style,
                label=f"prefill/10 {side}")
    ax.set_xlabel("threads")
    ax.set_ylabel("tokens/s")
    ax.set_xticks(threads)
    ax.legend(fontsize=7)
    if report["quantizations"]:
        ax = axes[0][1]
        for q in report["quantizations"]:
            ax.scatter(q["size_mb"], q["llama.cpp"]["decode_tokens_per_s"])
            ax.annotate(q["type"].upper(), (q["size_mb"], q["llama.cpp"]["decode_tokens_per_s"]), fontsize=7)
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel("decode tokens/s")
    return save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--hf-dir", type=Path, default=None)
    p.add_argument("--types", nargs="*", default=TYPES)
    p.add_argument("--threads-max", type=int, default=None, help="default: physical cores")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--ppl-ctx", type=int, default=256)
    p.add_argument("--cache", type=Path, default=common.CACHE)
    args = p.parse_args(argv)
    if args.quick:
        args.prompt_tokens, args.gen_tokens, args.repeat, args.threads_max, args.ppl_ctx = 16, 4, 1, 1, 32
    path = common.model_path(args.model)
    threads = common.threads(args.threads, path)
    from gemma_edge.hardware import physical_cores

    report = {"threads": thread_scaling(path, args.threads_max or physical_cores(), args.prompt_tokens,
                                        args.gen_tokens, args.repeat), "quantizations": []}
    if args.types:
        from bench.transformers_cpu import hf_checkpoint

        files = quantized_files(hf_checkpoint(args.hf_dir), args.types, args.cache)
        for t in args.types:
            f = files[t]
            row = {"type": t, "path": str(f), "size_mb": round(os.path.getsize(f) / 2**20, 1)}
            row |= speed(f, threads, args.prompt_tokens, args.gen_tokens, args.repeat)
            row |= quality(f, files["f16"], threads, args.ppl_ctx, 48 if args.quick else None)
            report["quantizations"].append(row)
    report["settings"] = {"model": str(path), "prompt_tokens": args.prompt_tokens, "gen_tokens": args.gen_tokens,
                          "repeat": args.repeat, "threads_for_quants": threads, "ppl_ctx": args.ppl_ctx,
                          "types": args.types, "note": NOTE}
    report["files"] = common.finish(args.out, NAME, report, markdown(report), lambda p: plot(report, p))
    return report


if __name__ == "__main__":
    main()
