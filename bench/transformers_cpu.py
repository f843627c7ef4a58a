"""2. transformers on CPU vs gemma-edge, on the same Gemma 3 270M weights: the Hugging Face checkpoint
is the embedded Q4_K_M GGUF de-quantized (tests/convert/real_gemma3.py builds and caches it), so both
stacks run the same numbers. Each stack runs in its own process (its own peak RSS), with the same
prompt token ids, threads and greedy decoding; the transformers side is a forward/KV-cache loop (the
work `generate()` does, without its bookkeeping).

    python -m bench.transformers_cpu [--hf-dir DIR] [--threads N] [--prompt-tokens 128] [--gen-tokens 64]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import common
from gemma_edge.measure import Measurement, markdown_table, peak_rss_mb, plot_bars, spread, summarize
from gemma_edge.llama.engine import common_prefix

NAME = "transformers"
HF = "transformers"


def hf_checkpoint(hf_dir: Path | None) -> Path:
    """The de-quantized 270M checkpoint: given, or the converter tests' cached build, or built now."""
    if hf_dir:
        return hf_dir
    from tests.convert.real_gemma3 import real_checkpoint

    return real_checkpoint()


def transformers_runs(hf_dir: Path, tokens: list[int], gen_tokens: int, stop_ids: list[int], threads: int,
                      repeat: int, dtype: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=getattr(torch, dtype))
    model.eval()
    load_s = time.perf_counter() - start
    ids = torch.tensor([tokens])
    stop = set(stop_ids)
    runs = []
    for round_ in range(1 + repeat):
        with torch.inference_mode():
            start = time.perf_counter()
            out = model(ids, use_cache=True)
            token = int(out.logits[0, -1].argmax())
            first = time.perf_counter()
            generated, past = [], out.past_key_values
            while token not in stop:
                generated.append(token)
                if len(generated) == gen_tokens:
                    break
                out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = int(out.logits[0, -1].argmax())
            end = time.perf_counter()
        if round_:
            runs.append(Measurement(len(tokens), len(generated), first - start, end - start,
                                    _rss_mb(), tuple(generated)))
    return {"runs": [m.as_dict() | {"tokens": list(m.tokens)} for m in runs], "load_s": round(load_s, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1), "dtype": dtype, "torch": torch.__version__}


def _rss_mb() -> float:
    from gemma_edge.measure import current_rss_mb

    return current_rss_mb()


def edge_runs(model_path: Path, tokens: list[int], gen_tokens: int, threads: int, repeat: int) -> dict:
    from gemma_edge.api import Model
    from gemma_edge.measure import EDGE, RAW, edge_stream, interleaved, raw_loop

    model = Model(model_path, n_ctx=max(1024, len(tokens) + gen_tokens + 16), n_threads=threads)
    engine = model.engine
    results = interleaved({EDGE: lambda: edge_stream(model, tokens, gen_tokens),
                           RAW: lambda: raw_loop(engine.llm, tokens, gen_tokens, engine.stop_ids)},
                          repeat, engine.reset)
    return {name: [m.as_dict() | {"tokens": list(m.tokens)} for m in runs] for name, runs in results.items()} | {
        "peak_rss_mb": round(peak_rss_mb(), 1)}


def worker(args) -> None:
    job = json.loads(Path(args.worker_job).read_text())
    if args.worker == HF:
        result = transformers_runs(Path(job["hf_dir"]), job["tokens"], job["gen_tokens"], job["stop_ids"],
                                   job["threads"], job["repeat"], job["dtype"])
    else:
        result = edge_runs(Path(job["model"]), job["tokens"], job["gen_tokens"], job["threads"], job["repeat"])
    print(json.dumps(result))


def prompt_and_stops(model_path: Path, n_tokens: int) -> tuple[list[int], list[int]]:
    """The prompt ids and stop ids from the GGUF's tokenizer alone (no weights loaded here)."""
    from gemma_edge.measure import prompt_tokens
    from gemma_edge.llama.loader import open_vocabulary

    vocab = open_vocabulary(model_path)
    stops = [vocab.token_eos()] + vocab.tokenize(b"<end_of_turn>", add_bos=False, special=True)
    tokens = prompt_tokens(vocab, n_tokens)
    vocab.close()
    return tokens, sorted(set(stops))


def in_subprocess(side: str, job: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    job_file = out / f".{NAME}-job.json"
    job_file.write_text(json.dumps(job))
    try:
        done = subprocess.run([sys.executable, "-m", "bench.transformers_cpu", "--worker", side, "--worker-job",
                               str(job_file)], capture_output=True, text=True, check=False,
                              cwd=Path(__file__).resolve().parent.parent)
    finally:
        job_file.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(model_path: Path, hf_dir: Path, threads: int, prompt_tokens: int, gen_tokens: int, repeat: int,
        dtype: str, out: Path) -> dict:
    tokens, stops = prompt_and_stops(model_path, prompt_tokens)
    job = {"model": str(model_path), "hf_dir": str(hf_dir), "tokens": tokens, "stop_ids": stops,
           "gen_tokens": gen_tokens, "threads": threads, "repeat": repeat, "dtype": dtype}
    edge = in_subprocess("gemma-edge", job, out)
    hf = in_subprocess(HF, job, out)

    def measurements(rows):
        return [Measurement(r["prompt_tokens"], r["generated_tokens"], r["ttft_s"], r["total_s"], r["rss_mb"],
                            tuple(r["tokens"])) for r in rows]

    report = summarize({"gemma-edge": measurements(edge["gemma-edge"]), "llama.cpp": measurements(edge["llama.cpp"]),
                        HF: measurements(hf["runs"])})
    report["peak_rss_mb"] = {"gemma-edge and llama.cpp (one process)": edge["peak_rss_mb"], HF: hf["peak_rss_mb"]}
    for side in ("gemma-edge", "llama.cpp"):  # peak RSS is what a user sees; per-run RSS is in "runs"
        report["sides"][side]["rss_mb"] = spread([edge["peak_rss_mb"]])
    report["sides"][HF]["rss_mb"] = spread([hf["peak_rss_mb"]])
    report["greedy_tokens_in_common_with_llama_cpp"] = common_prefix(edge["llama.cpp"][0]["tokens"],
                                                                     hf["runs"][0]["tokens"])
    report["settings"] = {"gguf": str(model_path), "hf_checkpoint": str(hf_dir), "threads": threads,
                          "prompt_tokens": len(tokens), "gen_tokens": gen_tokens, "repeat": repeat,
                          "transformers_dtype": dtype, "transformers_load_s": hf["load_s"], "torch": hf["torch"]}
    return report


def markdown(report: dict) -> str:
    s = report["settings"]
    table = markdown_table(report).replace("| RSS (MB) |", "| peak RSS (MB) |")
    return (f"### transformers ({s['transformers_dtype']}, torch {s['torch']}) vs gemma-edge on the same 270M weights "
            f"({s['prompt_tokens']}-token prompt, {s['gen_tokens']} generated, {s['threads']} threads, "
            f"median of {s['repeat']})\n\n{table}\n\nGreedy tokens identical to llama.cpp's before the first "
            f"difference: {report['greedy_tokens_in_common_with_llama_cpp']} (transformers computes in "
            f"{s['transformers_dtype']} from de-quantized weights, llama.cpp on the Q4_K_M blocks).\n")


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--hf-dir", type=Path, default=None)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-job", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.quick:
        args.prompt_tokens, args.gen_tokens, args.repeat = 16, 4, 1
    path = common.model_path(args.model)
    threads = common.threads(args.threads, path)
    report = run(path, hf_checkpoint(args.hf_dir), threads, args.prompt_tokens, args.gen_tokens, args.repeat,
                 args.dtype, args.out)
    title = f"transformers vs gemma-edge · 270M · {threads} threads"
    report["files"] = common.finish(args.out, NAME, report, markdown(report), lambda p: plot_bars(report, p, title))
    return report



if __name__ == "__main__":
    main()
