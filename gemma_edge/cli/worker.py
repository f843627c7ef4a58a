"""`gemma-edge worker`: lend this machine's memory and CPU to a model split across machines, and
`rpc_doctor`: measure the links to such workers."""
from __future__ import annotations

import json
import threading

import click

from gemma_edge.cli.common import UserError, is_loopback, friendly_errors
from gemma_edge.rpc.endpoints import DEFAULT_PORT, INSECURE

WARNING = "WARNING: NO AUTHENTICATION, NO ENCRYPTION."


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback exposes the worker to the network.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: physical cores).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Keep received weights here (by hash) so the next load of the same model sends less.")
@friendly_errors
def worker(host, port, threads, cache_dir):
    """Serve this machine's CPU and memory to `gemma-edge run/chat/serve --rpc HOST:PORT`.

    WARNING: the RPC protocol has NO AUTHENTICATION and NO ENCRYPTION. Anyone who can reach the
    port can read this worker's memory and make it compute. It listens on loopback unless --host
    says otherwise; bind another address only on a network you trust (or tunnel it over SSH).

    \b
      gemma-edge worker                                   # 127.0.0.1:50052
      gemma-edge worker --host 192.168.1.20 --cache ~/.cache/gemma-edge/rpc
    """
    from gemma_edge.hardware import physical_cores
    from gemma_edge.llama.rpc_backend import check_support
    from gemma_edge.rpc.workers import serve

    check_support()
    if not is_loopback(host):
        click.echo(click.style(f"{WARNING} Listening on {host}:{port}: {INSECURE}. Use it only on a "
                               "network you trust.", fg="red", bold=True), err=True)
    click.echo(f"gemma-edge worker on {host}:{port} (Ctrl-C stops it)", err=True)
    failed = threading.Event()

    def run():
        serve(host, port, threads=threads or physical_cores(), cache_dir=cache_dir)
        failed.set()  # ggml's server loop only returns when it could not listen or accept

    # The server blocks in C; a daemon thread keeps the main thread free for Ctrl-C.
    threading.Thread(target=run, daemon=True, name="rpc-server").start()
    while not failed.wait(0.5):
        pass
    raise UserError(f"could not serve on {host}:{port} (address in use or not available here?)")


@click.command("rpc_doctor")
@click.argument("endpoints", metavar="HOST:PORT[,HOST:PORT…]")
@click.option("--model", "-m", "model_name", default=None, metavar="MODEL",
              help="Estimate decode speed for this model's placement (default: the embedded 270M).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def rpc_doctor(endpoints, model_name, as_json):
    """Measure each RPC worker link: round-trip time, bandwidth, and the decode speed it allows."""
    from gemma_edge.rpc.links import probe_links

    report = probe_links(endpoints, model=model_name)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for link in report:
        click.echo(f"{link['endpoint']}: rtt {link['rtt_ms']:.2f} ms, upload {link['upload_mb_s']:.0f} MB/s, "
                   f"download {link['download_mb_s']:.0f} MB/s, {link['free_bytes'] / 2**30:.1f} GB free; "
                   f"layers {link['layers']}, network cost ≈ {link['network_ms_per_token']:.2f} ms/token "
                   f"(decode ≤ {link['max_tokens_per_s']:.0f} tokens/s from this link alone)")
    if report:
        click.echo(f"{report[0]['model']}: about {report[0]['placement_decode_tokens_per_s']:.1f} tokens/s decode for "
                   "this placement (estimate: weights / this machine's memory bandwidth, plus the links)")
