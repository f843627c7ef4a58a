"""`doctor`: this machine's CPU, memory and llama.cpp build, and the settings gemma-edge will use."""
from __future__ import annotations

import json

import click

from gemma_edge.cli.common import friendly_errors


@click.command()
@click.argument("model_name", metavar="MODEL", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--rpc", "rpc", default=None, metavar="HOST:PORT[,HOST:PORT…]",
              help="Instead: measure each RPC worker link (round-trip time, bandwidth) and estimate decode "
                   "speed for MODEL split across them. RPC has NO authentication or encryption.")
@click.pass_context
@friendly_errors
def doctor(ctx, model_name, as_json, rpc):
    """Check CPU features (AVX2/AVX-512/NEON/dotprod/i8mm), cores and RAM, whether llama.cpp was
    built for them, and recommend threads, context size and quantization for MODEL (default: the
    embedded model). `run` and `chat` use these recommendations when you set nothing."""
    if rpc:
        from gemma_edge.cli.worker import rpc_doctor

        return ctx.invoke(rpc_doctor, endpoints=rpc, model_name=model_name, as_json=as_json)
    from gemma_edge.doctor import llama_system_info, report
    from gemma_edge.model import read_model_facts
    from gemma_edge.registry import resolve

    path, _ = resolve(model_name)
    result = report(read_model_facts(path), system_info=llama_system_info())
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    m, rec = result["machine"], result["recommended"]
    click.echo(f"machine     {m['cpu']} ({m['arch']}, {m['system']}), {m['physical_cores']} physical cores"
               + (f", {m['performance_cores']} performance cores" if m["performance_cores"] != m["physical_cores"] else ""))
    click.echo(f"memory      {m['available_memory_gb']} GB available of {m['total_memory_gb']} GB")
    click.echo(f"CPU         {' '.join(m['features']) or 'no SIMD features detected'}")
    missing = result["missing_build_features"]
    click.echo("llama.cpp   built for all of them" if not missing else
               f"llama.cpp   NOT built for: {' '.join(missing)} — rebuild with CMAKE_ARGS=\"-DGGML_NATIVE=on\"")
    click.echo(f"model       {result['model']['name']} ({result['model']['quantization']})")
    click.echo(f"threads     {rec['n_threads']}  ({rec['why']['n_threads']})")
    click.echo(f"context     {rec['n_ctx']}  ({rec['why']['n_ctx']})")
    click.echo(f"quantize    {rec['quantization']}  ({rec['why']['quantization']})")
    click.echo(f"fits in RAM {', '.join(result['quantizations_that_fit']) or 'none of the quantizations'}")
    flags = " ".join(f["flag"] for f in result["build_flags"])
    click.echo(f"build       CMAKE_ARGS=\"{flags}\" scripts/setup-venv.sh")
    for flag in result["build_flags"]:
        click.echo(f"              {flag['flag']}: {flag['why']}")
