"""Embeddings: gemma-edge (llama.cpp) vs sentence-transformers on CPU, texts/s and peak RSS, same run.

No real EmbeddingGemma weights are on this machine, so both sides embed with a seeded random checkpoint
built by the tests (tests/convert/tiny_embeddinggemma.py): ``--size 300m`` has google/embeddinggemma-300m's
decoder shapes (768 wide, 24 layers, Dense 768→3072→768) with the tiny 400-token vocabulary, ``--size
tiny`` the 64-wide test model. gemma-edge runs our converter's GGUF (``--type``), sentence-transformers
its own Pooling/Dense/Normalize modules over transformers' Gemma3TextModel in float32, batched with
padding as ``SentenceTransformer.encode`` does (tokens from the checkpoint's SentencePiece model: this
environment cannot build a transformers tokenizer from it, see tests/convert/embed_oracle.py). Each side
runs in its own process (its own peak RSS), same texts, same threads, same batch size, one after the
other: texts per CPU-second (all threads) is the comparison that survives a shared machine.

    python -m bench.embed [--size 300m|tiny] [--type f32|f16|q8_0] [--texts 64] [--batch 16] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import common
from gemma_edge.measure import peak_rss_mb

NAME = "embed"
SIDES = ("gemma-edge", "sentence-transformers")
WORDS = "the a model text search local query document embedding vector small fast device memory".split()


def texts(count: int) -> list[str]:
    """Deterministic texts of 20 to 120 words."""
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(20 + (i * 37) % 100)) for i in range(count)]


def checkpoint(size: str) -> Path:
    from tests.convert.tiny_embeddinggemma import CONFIG, SHAPED_300M, tiny_embeddinggemma

    return tiny_embeddinggemma(settings=SHAPED_300M if size == "300m" else CONFIG)


def gguf(size: str, type_name: str) -> Path:
    from convert.api import convert_checkpoint

    path = common.CACHE / f"embeddinggemma-{size}-{type_name}.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        convert_checkpoint(checkpoint(size), path, type_name, force=True)
    return path


def edge_side(job: dict) -> dict:
    from gemma_edge.api import Model

    model = Model(Path(job["gguf"]), n_threads=job["threads"])
    inputs, batch = job["texts"], job["batch"]

    def once():
        for i in range(0, len(inputs), batch):
            model.embed(inputs[i:i + batch], task="document")
    return _timed(once, job["repeat"])


def st_side(job: dict) -> dict:
    import torch

    from tests.convert.embed_oracle import _pipeline, sentencepiece_ids
    from gemma_edge.embedding import TASK_PROMPTS

    torch.set_num_threads(job["threads"])
    folder = Path(job["checkpoint"])
    model, modules = _pipeline(folder)
    inputs, batch = [TASK_PROMPTS["document"] + t for t in job["texts"]], job["batch"]

    def once():
        with torch.inference_mode():
            for i in range(0, len(inputs), batch):
                ids = [sentencepiece_ids(folder, t) for t in inputs[i:i + batch]]
                width = max(map(len, ids))
                input_ids = torch.tensor([row + [0] * (width - len(row)) for row in ids])
                mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
                features = {"input_ids": input_ids, "attention_mask": mask,
                            "token_embeddings": model(input_ids=input_ids, attention_mask=mask).last_hidden_state}
                for module in modules:
                    features = module(features)
    return _timed(once, job["repeat"])


def _timed(once, repeat: int) -> dict:
    """Wall seconds and CPU seconds (all threads) of `repeat` passes after a warm-up pass."""
    once()  # warm-up: first-call allocations and lazy initialisation
    seconds, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        once()
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": round(peak_rss_mb(), 1)}


def in_subprocess(side: str, job: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    job_file = out / f".{NAME}-job.json"
    job_file.write_text(json.dumps(job))
    try:
        done = subprocess.run([sys.executable, "-m", "bench.embed", "--worker", side, "--worker-job", str(job_file)],
                              capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parent.parent)
    finally:
        job_file.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(size: str, type_name: str, count: int, batch: int, threads: int, repeat: int, out: Path) -> dict:
    job = {"gguf": str(gguf(size, type_name)), "checkpoint": str(checkpoint(size)), "texts": texts(count),
           "batch": batch, "threads": threads, "repeat": repeat}
    results = {side: in_subprocess(side, job, out) for side in SIDES}
    report = {"sides": {}, "settings": {"size": size, "gguf_type": type_name, "texts": count, "batch": batch,
                                         "threads": threads, "repeat": repeat, "task": "document"}}
    for side, result in results.items():
        median = statistics.median(result["seconds"])
        report["sides"][side] = {"texts_per_s": round(count / median, 2), "median_s": round(median, 4),
                                 "min_s": round(min(result["seconds"]), 4), "max_s": round(max(result["seconds"]), 4),
                                 "texts_per_cpu_s": round(count / statistics.median(result["cpu_seconds"]), 2),
                                 "peak_rss_mb": result["peak_rss_mb"]}
    edge, st = (report["sides"][s] for s in SIDES)
    report["ratio_gemma_edge_to_sentence_transformers"] = {
        key: round(edge[key] / st[key], 3) for key in ("texts_per_s", "texts_per_cpu_s", "peak_rss_mb")}
    return report


def markdown(report: dict) -> str:
    s, ratio = report["settings"], report["ratio_gemma_edge_to_sentence_transformers"]
    rows = "\n".join(f"| {side} | {v['texts_per_s']} | {v['median_s']} ({v['min_s']}–{v['max_s']}) | "
                     f"{v['texts_per_cpu_s']} | {v['peak_rss_mb']} |" for side, v in report["sides"].items())
    return (f"### Embeddings: gemma-edge ({s['gguf_type'].upper()} GGUF) vs sentence-transformers (float32), "
            f"{s['size']}-shaped random EmbeddingGemma, {s['texts']} texts of 20–120 words in batches of "
            f"{s['batch']}, {s['threads']} threads, median of {s['repeat']}\n\n"
            f"| side | texts/s | seconds per pass | texts per CPU-second | peak RSS (MB) |\n"
            f"|---|---:|---:|---:|---:|\n{rows}\n\n"
            f"gemma-edge / sentence-transformers: {ratio['texts_per_s']}× the texts/s "
            f"({ratio['texts_per_cpu_s']}× per CPU-second) at {ratio['peak_rss_mb']}× the peak RSS.\n")


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--size", choices=["300m", "tiny"], default="300m")
    p.add_argument("--type", dest="type_name", choices=["f32", "f16", "q8_0"], default="q8_0")
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-job", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        job = json.loads(Path(args.worker_job).read_text())
        print(json.dumps(edge_side(job) if args.worker == SIDES[0] else st_side(job)))
        return {}
    if args.quick:
        args.size, args.texts, args.repeat = "tiny", 8, 1
    threads = args.threads or 2
    report = run(args.size, args.type_name, args.texts, args.batch, threads, args.repeat, args.out)
    report["files"] = common.finish(args.out, NAME, report, markdown(report))
    return report


if __name__ == "__main__":
    main()
