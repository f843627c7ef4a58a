"""`info`, `list`, `pull`, `rm`: what models there are and where they live."""
from __future__ import annotations

import json

import click

from gemma_edge.cli.common import friendly_errors, rpc_options, rpc_settings


@click.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@rpc_options
@friendly_errors
def info(model, as_json):
    """What a model is: generation, turn format, size, quantization, context, special tokens.

    MODEL is a registry name or a .gguf path (default: the embedded model). Reads the GGUF header
    only: nothing is loaded.
    """
    from gemma_edge.model import read_model_facts
    from gemma_edge.registry import resolve

    path, entry = resolve(model)
    facts = read_model_facts(path).describe()
    if entry is not None:
        facts["registry"] = {"name": entry.name, "size_class": entry.raw.get("size_class"),
                             "license": entry.raw.get("license"), "capabilities": entry.capabilities}
        facts["format"] = entry.raw.get("format") or facts["format"]
    rpc = rpc_settings()
    if rpc:  # where the layers would go across the workers (nothing is loaded)
        from gemma_edge.rpc import place_layers

        facts["placement"] = place_layers(rpc["rpc"], facts["layers"], rpc.get("split")).as_dict()
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif key == "parameters":
            value = f"{value:,}"
        elif key == "file_size":
            value = f"{value / 1e6:,.1f} MB"
        click.echo(f"{key:<{width}}  {value}")


@click.command("list")
@click.option("--downloaded", is_flag=True, help="Only models available locally.")
@friendly_errors
def list_models(downloaded):
    """Known models (models.yaml) and which of them are available locally."""
    from gemma_edge.registry import is_downloaded, load_registry

    registry = load_registry()
    rows = []
    for entry in registry.entries.values():
        here = is_downloaded(entry)
        if downloaded and not here:
            continue
        caps = ",".join(k for k, v in entry.capabilities.items() if v) or "-"
        size = entry.raw.get("file_size")
        rows.append((("*" if entry.name == registry.default else " ") + entry.name, entry.raw.get("format", ""),
                     entry.raw.get("quantization") or "", f"{size / 1e9:.2f} GB" if size else "?", caps,
                     "yes" if here else "no"))
    header = (" NAME", "FORMAT", "QUANT", "SIZE", "CAPABILITIES", "LOCAL")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    click.echo("\n* default model. `gemma-edge pull NAME` downloads one.", err=True)


@click.command()
@click.argument("name")
@friendly_errors
def pull(name):
    """Download a registry model from Hugging Face into huggingface-hub's cache.

    Checks free disk space first, resumes an interrupted download, verifies the sha256 from
    models.yaml, and works offline when the file is already cached. Gated repositories need a
    token (`hf auth login` or HF_TOKEN) and the licence accepted on the model's page.
    """
    from gemma_edge.registry import pull as do_pull

    path = do_pull(name)
    click.echo(str(path))


@click.command()
@click.argument("name")
@friendly_errors
def rm(name):
    """Delete a downloaded (or converted) model from the local cache."""
    from gemma_edge.registry import remove

    removed = remove(name)
    click.echo(f"removed {removed}" if removed else f"{name} is not downloaded; nothing to remove", err=True)
