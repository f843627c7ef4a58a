"""`info`, `list`, `pull`, `rm`: what models there are and where they live (with their projectors)."""
from __future__ import annotations

import json

import click

from gemma_edge.cli.common import friendly_errors, rpc_options, rpc_settings, warn_about_the_build


@click.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@rpc_options
@friendly_errors
def info(model, as_json):
    """What a model is: generation, turn format, size, quantization, context, special tokens, and
    which inputs it takes (text, and image/audio when its projector is here).

    MODEL is a registry name or a .gguf path (default: the embedded model). Reads the GGUF headers
    only: nothing is loaded. A Hugging Face checkpoint directory (or its config.json) gets its Gemma
    family member instead: converts / runs / sees / hears / embeds / drafts, or why not.
    """
    from gemma_edge.model import read_model_facts
    from gemma_edge.registry import resolve

    config = _checkpoint_config(model)
    if config is not None:
        _show(_family_facts(config), as_json)
        return
    warn_about_the_build()
    path, entry = resolve(model)
    facts = read_model_facts(path).describe()
    if entry is not None:
        facts["registry"] = {"name": entry.name, "size_class": entry.size_class, "license": entry.license,
                             "capabilities": entry.capabilities.as_dict()}
        facts["format"] = entry.format
    projector, note = (None, "none (an embedding model takes text only)") if facts["embeds"] else \
        _projector_of(path, entry)
    inputs, problem = _projector_inputs(projector)
    facts["input"] = ", ".join(["text", *inputs])
    facts["output"] = "embeddings (gemma-edge embed, Model.embed)" if facts["embeds"] else "text"
    facts["mmproj"] = f"{projector}{problem}" if projector else note
    rpc = rpc_settings()
    if rpc:  # where the layers would go across the workers (nothing is loaded)
        from gemma_edge.rpc.workers import place_layers

        facts["placement"] = place_layers(rpc["rpc"], facts["layers"], rpc.get("split")).as_dict()
    _show(facts, as_json)


def _show(facts: dict, as_json: bool) -> None:
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


def _checkpoint_config(model) -> dict | None:
    """The config.json of a Hugging Face checkpoint directory (or the file itself), else None."""
    from pathlib import Path

    from convert.checkpoint import CheckpointError, read_config
    from gemma_edge.errors import InvalidModelError

    if model is None:
        return None
    path = Path(model)
    path = path / "config.json" if path.is_dir() else path
    if path.name != "config.json" or not path.is_file():
        return None
    try:
        return read_config(path.parent)[2]
    except CheckpointError as e:
        raise InvalidModelError(f"{path}: {e}") from None


def _family_facts(config: dict) -> dict:
    from convert.family import capabilities, member_for

    member = member_for(config)
    architecture = (config.get("architectures") or [None])[0]
    facts = {"architecture": architecture, "model_type": config.get("model_type")}
    if member is None:
        return {**facts, "family": "not a Gemma model gemma-edge knows", "converts": False}
    row = capabilities(member)
    return {**facts, "family": member.name, **{k: v for k, v in row.items() if k != "why_not"},
            **({"why_not": row["why_not"]} if row["why_not"] else {})}


def _family_table() -> None:
    from convert.family import CAPABILITIES, support_table

    rows = [(row["model"], *("yes" if row[k] else "no" for k in CAPABILITIES), row["why_not"] or "")
            for row in support_table()]
    header = ("MODEL", *(k.upper() for k in CAPABILITIES), "WHY NOT")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


@click.command("list")
@click.option("--downloaded", is_flag=True, help="Only models available locally.")
@click.option("--family", is_flag=True, help="The Gemma family instead: what each member converts / runs / "
              "sees / hears / embeds / drafts, or why not.")
@friendly_errors
def list_models(downloaded, family):
    """Known models (models.yaml) and which of them are available locally."""
    from gemma_edge.registry import is_downloaded, load_registry

    if family:
        _family_table()
        return
    registry = load_registry()
    rows = []
    for entry in registry.entries.values():
        here = is_downloaded(entry)
        if downloaded and not here:
            continue
        caps = ",".join(k for k, v in entry.capabilities.as_dict().items() if v) or "-"
        size = entry.file_size
        rows.append((("*" if entry.name == registry.default else " ") + entry.name, entry.format,
                     entry.quantization, f"{size / 1e9:.2f} GB" if size else "?", caps,
                     "yes" if here else "no", _projector_column(entry)))
    header = (" NAME", "FORMAT", "QUANT", "SIZE", "CAPABILITIES", "LOCAL", "MMPROJ")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    click.echo("\n* default model. MMPROJ: is the projector a model needs to see/hear downloaded (- text-only, "
               "none: no projector file known).\n`gemma-edge pull NAME` downloads a model and its projector.",
               err=True)


@click.command()
@click.argument("name")
@click.option("--no-mmproj", "skip_mmproj", is_flag=True,
              help="Do not download the projector (image/audio input then does not work).")
@friendly_errors
def pull(name, skip_mmproj):
    """Download a registry model and its projector from Hugging Face into huggingface-hub's cache.

    Checks free disk space first, resumes an interrupted download, verifies the sha256s from
    models.yaml, and works offline when the files are already cached. A model that sees images or
    hears audio also gets its multimodal projector (mmproj) unless --no-mmproj. Gated repositories
    need a token (`hf auth login` or HF_TOKEN) and the licence accepted on the model's page.
    Prints the model's path; the projector's goes to stderr.
    """
    from gemma_edge.registry import load_registry, pull as do_pull

    registry = load_registry()
    entry = registry.get(name)
    path = do_pull(name, registry=registry, mmproj=not skip_mmproj)
    click.echo(str(path))
    if entry.media:
        projector, note = _projector_of(path, entry)
        if skip_mmproj and projector is None:
            note = "skipped (--no-mmproj)"
        click.echo(f"mmproj: {projector or note}", err=True)


@click.command()
@click.argument("name")
@friendly_errors
def rm(name):
    """Delete a downloaded (or converted) model and its projector from the local cache."""
    from gemma_edge.registry import kept_projector, load_registry, mmproj_path, remove

    registry = load_registry()
    entry = registry.get(name)
    sharing = kept_projector(entry, registry)
    shared = mmproj_path(entry) if sharing else None
    removed = remove(name, registry=registry)
    for path in removed:
        click.echo(f"removed {path}", err=True)
    if shared:
        click.echo(f"kept {shared}: the projector of {', '.join(sharing)} too", err=True)
    if not removed:
        click.echo(f"{name} is not downloaded; nothing to remove", err=True)


def _projector_of(model_path, entry):
    """(the projector file for this model or None, why there is none): the registry's, else the one
    `gemma-edge convert` writes beside a model given by path."""
    from gemma_edge.registry import mmproj_path, projector_beside

    beside = projector_beside(model_path)
    found = (mmproj_path(entry) if entry is not None else None) or (beside if beside.is_file() else None)
    if found is not None:
        return found, ""
    if entry is None:
        return None, f"none ({beside.name} not found beside the model)"
    if not entry.media:
        return None, "none (text-only model)"
    if entry.projector_unavailable:
        return None, f"none: {entry.projector_unavailable}"
    if entry.projector_file is not None:
        return None, f"not downloaded: `gemma-edge pull {entry.name}`"
    return None, f"not found beside the model ({beside.name}; `gemma-edge convert` writes it)"


def _projector_column(entry) -> str:
    from gemma_edge.registry import mmproj_path

    if not entry.media:
        return "-"
    if entry.projector_unavailable:
        return "none"
    return "yes" if mmproj_path(entry) else "no"


def _projector_inputs(projector) -> tuple[list[str], str]:
    """(the media a projector GGUF encodes, from its header; why none, for a file that is no projector)."""
    if projector is None:
        return [], ""
    from gemma_edge.projector import ProjectorError, read_projector_file

    try:
        header = read_projector_file(projector)
    except ProjectorError as e:
        return [], f" (unusable: {e})"
    return [kind for kind, encoder in (("image", header.vision_type), ("audio", header.audio_type)) if encoder], ""
