"""`gemma-edge template`: show the prompt our renderer builds for a conversation, its tokens,
or check our renderer against the chat template embedded in a GGUF."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from gemma_edge.cli.common import UserError, friendly_errors
from gemma_edge.formats import FORMAT_NAMES, TemplateError, get_format, render_prompt, render_segments

CONTEXT_CHARS = 40  # characters shown on each side of a difference


def _read_json(path: str, what: str):
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as e:
        raise click.UsageError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise click.UsageError(f"{what} file {path} is not valid JSON: {e}") from None


def _conversation(messages_file: str | None, tools_file: str | None) -> tuple[list, list | None]:
    """Messages (a JSON list, or an object with "messages" and optionally "tools") and tools."""
    if messages_file is None:
        raise click.UsageError("--messages FILE.json is required (a JSON list of {role, content} messages)")
    data = _read_json(messages_file, "messages")
    tools = None
    if isinstance(data, dict):
        tools = data.get("tools")
        data = data.get("messages")
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise click.UsageError(f"{messages_file}: expected a list of message objects (or {{\"messages\": [...]}})")
    if tools_file is not None:
        tools = _read_json(tools_file, "tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise click.UsageError("tools must be a JSON list of tool objects")
    return data, tools


def _model_path(model: str) -> Path:
    from gemma_edge.registry import resolve_model_path

    return resolve_model_path(model)


def _format_name(explicit: str | None, model_path: Path | None) -> str:
    if explicit is not None:
        return explicit
    if model_path is None:
        raise click.UsageError("give --format or a MODEL to take the turn format from")
    from gemma_edge.model import read_model_facts

    return read_model_facts(model_path).format


def _print_tokens(model_path: Path, segments) -> None:
    from gemma_edge.llama.loader import open_vocabulary
    from gemma_edge.llama.tokenizer import SegmentTokenizer

    llama = open_vocabulary(model_path)
    tokenizer = SegmentTokenizer(llama)
    special_ids = set(tokenizer.protected.values())
    for token in tokenizer.tokenize(segments):
        piece = llama.detokenize([token], special=True).decode("utf-8", errors="replace")
        click.echo(f"{token:>7} {'*' if token in special_ids else ' '} {piece!r}")


def _outcome(render):
    try:
        return render()
    except TemplateError as error:
        return TemplateError(str(error))


def _describe(outcome) -> str:
    return f"raises TemplateError({str(outcome)!r})" if isinstance(outcome, TemplateError) else "renders"


def first_difference(ours, theirs) -> str | None:
    """None when both render the same string or raise the same message; else one readable report."""
    if isinstance(ours, TemplateError) or isinstance(theirs, TemplateError):
        if type(ours) is type(theirs) and str(ours) == str(theirs):
            return None
        return f"ours {_describe(ours)}, the embedded template {_describe(theirs)}"
    if ours == theirs:
        return None
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    start = max(0, at - CONTEXT_CHARS)
    return (f"first difference at character {at}:\n"
            f"  ours:     …{ours[start:at + CONTEXT_CHARS]!r}\n"
            f"  embedded: …{theirs[start:at + CONTEXT_CHARS]!r}")


def _check(model: str, format_name: str | None) -> None:
    from gemma_edge.formats.embedded_template import render_embedded_template
    from gemma_edge.formats.samples import sample_conversations
    from gemma_edge.gguf_file import GGUFFile

    path = _model_path(model)
    fmt = _format_name(format_name, path)
    gguf = GGUFFile(path)
    try:
        template = gguf.get("tokenizer.chat_template")
    finally:
        gguf.close()
    if not template:
        click.echo(f"{path.name} has no embedded chat template: nothing to compare {fmt} with")
        return
    samples = list(sample_conversations(get_format(fmt)))
    for name, messages, options in samples:
        ours = _outcome(lambda: render_prompt(messages, format=fmt, strict=True, **options))
        theirs = _outcome(lambda: render_embedded_template(template, messages, **options))
        report = first_difference(ours, theirs)
        if report is not None:
            click.echo(f"{fmt} differs from the template embedded in {path.name} on '{name}': {report}")
            sys.exit(1)
    click.echo(f"{fmt}: all {len(samples)} built-in conversations render exactly like the template "
               f"embedded in {path.name}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", required=False)
@click.option("--format", "-f", "format_name", type=click.Choice(FORMAT_NAMES), default=None,
              help="Turn format (default: the one MODEL uses).")
@click.option("--messages", "messages_file", metavar="FILE.json",
              help='Conversation: a JSON list of messages or {"messages": [...], "tools": [...]}; - for stdin.')
@click.option("--tools", "tools_file", metavar="FILE.json", help="Tool schemas (a JSON list).")
@click.option("--think", is_flag=True, help="Render with thinking on (Gemma 4).")
@click.option("--no-generation-prompt", is_flag=True, help="Do not open the model's turn at the end.")
@click.option("--strict", is_flag=True, help="Fail where the official template fails instead of repairing.")
@click.option("--tokens", is_flag=True, help="Show token ids (* marks control tokens); needs MODEL.")
@click.option("--check", "check_model", metavar="MODEL",
              help="Compare our renderer with MODEL's embedded chat template on built-in conversations.")
@friendly_errors
def template(model, format_name, messages_file, tools_file, think, no_generation_prompt, strict, tokens,
             check_model):
    """Print the prompt the turn format renders for a conversation.

    \b
    Examples:
      gemma-edge template --format gemma3 --messages chat.json
      gemma-edge template gemma-3-270m --messages chat.json --tokens
      gemma-edge template --check path/to/model.gguf
    """
    if check_model is not None:
        _check(check_model, format_name)
        return
    if tokens and model is None:
        raise click.UsageError("--tokens needs MODEL (its vocabulary turns the prompt into token ids)")
    model_path = _model_path(model) if model is not None else None
    fmt = _format_name(format_name, model_path)
    messages, tools = _conversation(messages_file, tools_file)
    options = {"format": fmt, "tools": tools, "enable_thinking": think,
               "add_generation_prompt": not no_generation_prompt, "strict": strict}
    try:
        if tokens:
            _print_tokens(model_path, render_segments(messages, **options))
        else:
            click.echo(render_prompt(messages, **options), nl=False)
    except (TemplateError, TypeError) as error:
        raise UserError(f"cannot render this conversation as {fmt}: {error}") from None
