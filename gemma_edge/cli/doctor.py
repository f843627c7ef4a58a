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
    from gemma_edge.doctor import llama_build, report
    from gemma_edge.hardware import detect_machine
    from gemma_edge.model import read_model_facts
    from gemma_edge.registry import resolve

    path, _ = resolve(model_name)
    machine = detect_machine()
    result = report(read_model_facts(path), machine, build=llama_build(machine))
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    m, rec = result["machine"], result["recommended"]
    click.echo(f"machine     {m['cpu']} ({m['arch']}, {m['system']}), {m['physical_cores']} physical cores"
               + (f", {m['performance_cores']} performance cores" if m["performance_cores"] != m["physical_cores"] else ""))
    click.echo(f"memory      {m['available_memory_gb']} GB available of {m['total_memory_gb']} GB")
    click.echo(f"CPU         {' '.join(m['features']) or 'no SIMD features detected'}")
    for line in build_lines(result["llama_cpp_build"]):
        click.echo(line)
    click.echo(f"model       {result['model']['name']} ({result['model']['quantization']})")
    click.echo(f"threads     {rec['n_threads']}  ({rec['why']['n_threads']})")
    click.echo(f"context     {rec['n_ctx']}  ({rec['why']['n_ctx']})")
    click.echo(f"quantize    {rec['quantization']}  ({rec['why']['quantization']})")
    click.echo(f"--spec auto {rec['speculative']}  ({rec['why']['speculative']})")
    click.echo(f"fits in RAM {', '.join(result['quantizations_that_fit']) or 'none of the quantizations'}")
    extras = " ".join(f["flag"] for f in result["build_flags"] if not f["derived"])
    prefix = f'CMAKE_ARGS="{extras}" ' if extras else ""
    click.echo(f"build       {prefix}scripts/setup-venv.sh")
    for flag in result["build_flags"]:
        click.echo(f"              {flag['flag']}: {flag['why']}")


def build_lines(build: dict) -> list[str]:
    missing, lacking, amx, smoke = (build["missing_build_features"], build["unsupported_build_features"],
                                    build["amx"], build["smoke"])
    lines = [f"llama.cpp   built for {' '.join(build['built_for']) or 'no SIMD features'} "
             f"(from the {build['built_for_source']})"]
    if lacking:
        lines.append(f"            uses {' '.join(lacking)}, which this CPU LACKS: rerun scripts/setup-venv.sh here")
    lines.append("            uses every CPU feature that speeds it up" if not missing else
                 f"            does not use: {' '.join(missing)} (rerun scripts/setup-venv.sh to build for them)")
    lines.append("AMX         " + ("not in this CPU" if not amx["cpu"] else
                                   "in use (GEMMA_EDGE_AMX=1)" if amx["in_use"] else
                                   "in this CPU, not used (opt in: build with CMAKE_ARGS=\"-DGGML_AMX_TILE=ON "
                                   "-DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON\", run with GEMMA_EDGE_AMX=1)"))
    lines.append("smoke run   " + ("unknown: llama-cpp-python was not installed by scripts/setup-venv.sh"
                                   if smoke is None else
                                   ("passed" if smoke.get("passed") else "FAILED")
                                   + (" after falling back to the conservative build (no AVX-512, no AMX)"
                                      if smoke.get("fallback") else "")))
    return lines
