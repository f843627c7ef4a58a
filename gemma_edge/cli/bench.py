"""`bench` and `perplexity`: speed against a raw llama.cpp loop, and quality on a text file."""
from __future__ import annotations

import json
from pathlib import Path

import click

from gemma_edge.cli.common import SpecMode, friendly_errors, rpc_options, rpc_settings


@click.command()
@click.argument("model_name", metavar="MODEL", required=False)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: doctor's choice).")
@click.option("--ctx-size", "-c", type=click.IntRange(min=16), default=None, help="Context window (default: doctor's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True, help="Prompt batch size.")
@click.option("--prompt-tokens", type=click.IntRange(min=2), default=512, show_default=True)
@click.option("--gen-tokens", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--repeat", "-r", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed runs per side (after one warm-up), interleaved A/B/B/A.")
@click.option("--spec", type=SpecMode(), default="off", show_default=True, metavar=SpecMode.metavar,
              help="gemma-edge's speculative decoding (bench/speculative.py compares the modes per task).")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Also write OUTPUT.json, OUTPUT.md and (with matplotlib) OUTPUT.png.")
@friendly_errors
@rpc_options
def bench(model_name, threads, ctx_size, batch_size, prompt_tokens, gen_tokens, repeat, spec, as_json, output):
    """Prefill and decode speed, time to first token and RSS of gemma-edge next to a raw llama.cpp
    loop on the same GGUF, threads, context and batch size (median and min–max over the runs).

    \b
      gemma-edge bench                          the embedded 270M
      gemma-edge bench gemma-3-1b-it --threads 4 --repeat 9 -o results/1b
    """
    from gemma_edge.api import load
    from gemma_edge.errors import GemmaEdgeError
    from gemma_edge.measure import BenchSettings, bench_model, markdown_table, plot_bars, write_results

    n_ctx = ctx_size or max(1024, prompt_tokens + gen_tokens + 16)
    if prompt_tokens + gen_tokens >= n_ctx:
        raise GemmaEdgeError(f"--prompt-tokens + --gen-tokens ({prompt_tokens + gen_tokens}) must be below "
                             f"--ctx-size ({n_ctx})")
    # llama.cpp in this process (the raw loop runs on it): with --rpc, a lost worker aborts the bench
    model = load(model_name, n_ctx=n_ctx, n_threads=threads, n_batch=batch_size, speculative=spec, supervised=False,
                 **rpc_settings())
    settings = BenchSettings(threads=model.engine.n_threads, n_ctx=model.n_ctx,
                             n_batch=model.engine.llm.n_batch, prompt_tokens=prompt_tokens,
                             gen_tokens=gen_tokens, repeat=repeat, spec=model.speculative)
    report = bench_model(model, settings)
    if model.engine.placement is not None:
        report["placement"] = model.engine.placement.as_dict()
    table = markdown_table(report)
    if output is not None:
        title = f"{model.facts.name} · {settings.threads} threads · {prompt_tokens}+{gen_tokens} tokens"
        write_results(output.parent, output.name, report, table)
        plot_bars(report, output.parent / f"{output.name}.png", title)
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        click.echo(f"{model.facts.name} ({model.facts.quantization}), {settings.threads} threads, context "
                   f"{settings.n_ctx}, batch {settings.n_batch}, {prompt_tokens} prompt + {gen_tokens} generated "
                   f"tokens, {repeat} runs per side, speculative decoding {settings.spec}")
        click.echo(table)
        if not report["identical_tokens"]:
            click.echo("warning: the two sides generated different tokens; the comparison is not like with like",
                       err=True)


@click.command()
@click.argument("model_name", metavar="MODEL")
@click.argument("text_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ctx-size", "-c", type=click.IntRange(min=16), default=512, show_default=True,
              help="Window size; every token is scored with at least half a window of context.")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None)
@click.option("--reference", "reference_name", default=None, metavar="GGUF",
              help="Also report the KL divergence from this model's (e.g. the F16 GGUF's) next-token distribution.")
@click.option("--chat", "chat_format", is_flag=True,
              help="Score the text as a model reply inside the chat format (instruct models).")
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def perplexity(model_name, text_file, ctx_size, batch_size, threads, reference_name, chat_format, as_json):
    """Perplexity of MODEL on FILE, computed window by window so memory stays small (a Raspberry Pi
    holds one window's logits at a time), optionally with the KL divergence from a reference model."""
    from gemma_edge.api import load
    from gemma_edge.perplexity import evaluate, text_tokens

    text = text_file.read_text(encoding="utf-8")
    model = load(model_name, n_ctx=ctx_size, n_threads=threads, n_batch=batch_size)
    reference = load(reference_name, n_ctx=ctx_size, n_threads=threads, n_batch=batch_size) if reference_name else None
    tokens = text_tokens(model, text, chat=chat_format)
    result = evaluate(model.engine, tokens, ctx_size, reference=reference.engine if reference else None)
    report = result.as_dict() | {"model": str(model.facts.path), "file": str(text_file), "ctx_size": ctx_size,
                                 "chat": chat_format, "reference": str(reference.facts.path) if reference else None}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"perplexity {result.perplexity:.4f} over {result.n_scored} tokens "
               f"({len(tokens)} in {result.n_windows} windows of ≤ {ctx_size})")
    if result.kl_mean is not None:
        click.echo(f"KL divergence from {reference.facts.name}: mean {result.kl_mean:.6f}, "
                   f"99th percentile {result.kl_p99:.6f}; same top token {100 * result.top1_agreement:.2f}%")
