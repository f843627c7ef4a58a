"""What the CLI commands share: model/sampling options and turning errors into one-line messages."""
from __future__ import annotations

import functools
import sys

import click

from gemma_edge.errors import GemmaEdgeError
from gemma_edge.sampling import DEFAULT_MAX_TOKENS, Sampling
from gemma_edge.speculative import DRAFT_PREFIX, MTP_MODE, SPEC_MODES, parse_spec


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a server on this machine only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class UserError(click.ClickException):
    """A one-line error and exit code 2, like click's own usage errors."""
    exit_code = 2

    def show(self, file=None):
        click.echo(f"gemma-edge: error: {self.format_message()}", err=True)


def friendly_errors(fn):
    """Run a command; a GemmaEdgeError becomes `gemma-edge: error: …` with exit code 2, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GemmaEdgeError as e:
            raise UserError(str(e)) from None
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(0)
    return wrapper


def _rpc_option(ctx, param, value):
    """--rpc: check the addresses and the build (the model then loads split across the workers, in a
    supervised child process: gemma_edge.rpc.supervision)."""
    if not value:
        return
    from gemma_edge.llama.rpc_backend import check_support
    from gemma_edge.rpc.endpoints import parse_endpoints

    try:
        endpoints = parse_endpoints(value)
        check_support()
        ctx.meta["gemma_edge.rpc"] = endpoints
    except GemmaEdgeError as e:
        raise UserError(str(e)) from None


def _split_option(ctx, param, value):
    if value:
        try:
            ctx.meta["gemma_edge.split"] = [float(v) for v in value.split(",")]
        except ValueError:
            raise click.BadParameter("expected numbers separated by commas, e.g. 1,2,2") from None


def rpc_options(fn):
    """--rpc, --split (read back with rpc_settings())."""
    fn = click.option("--split", callback=_split_option, expose_value=False, metavar="W0,W1,…",
                      help="Share of layers per device with --rpc: this machine first, then each worker "
                           "(default: in proportion to free memory).")(fn)
    fn = click.option("--rpc", callback=_rpc_option, expose_value=False, metavar="HOST:PORT[,HOST:PORT…]",
                      help="Split the model across `gemma-edge worker`s (llama.cpp RPC). The protocol has NO "
                           "authentication or encryption: use it only on a network you trust.")(fn)
    return fn


def rpc_settings() -> dict:
    """`rpc` and `split` for load()/Model from the current command's --rpc/--split (empty without --rpc)."""
    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    rpc, split = meta.get("gemma_edge.rpc"), meta.get("gemma_edge.split")
    if split and not rpc:
        raise UserError("--split needs --rpc")
    return {"rpc": rpc, "split": split} if rpc else {}


class SpecMode(click.ParamType):
    """A --spec value: one of SPEC_MODES, draft:MODEL, mtp or mtp:MODEL (parse_spec)."""
    name = "mode"
    metavar = f"[{'|'.join(SPEC_MODES)}|{DRAFT_PREFIX}MODEL|{MTP_MODE}[:MODEL]]"

    def convert(self, value, param, ctx):
        try:
            return parse_spec(value)
        except GemmaEdgeError as e:
            self.fail(str(e), param, ctx)


def _spec_option(ctx, param, value):
    if value is not None:
        ctx.meta["gemma_edge.spec"] = value


def model_options(fn):
    """-m/--model, --ctx-size, --threads, --rpc, --split, --spec (read back by load_model)."""
    fn = rpc_options(fn)
    fn = click.option("--spec", type=SpecMode(), callback=_spec_option, expose_value=False, metavar=SpecMode.metavar,
                      help="Speculative decoding: draft tokens by prompt lookup (ngram), with a smaller model of "
                           "the same vocabulary (draft:MODEL, a registry name or GGUF path) or with a Gemma 4 MTP "
                           "drafter (mtp:DRAFTER.gguf) and verify them in one "
                           "batch; the output is the same, only faster where drafts are accepted "
                           "(default: auto, the recommendation for this machine and model).")(fn)
    fn = click.option("--threads", type=click.IntRange(min=1), default=None,
                      help="CPU threads (default: `gemma-edge doctor`'s recommendation, the physical cores).")(fn)
    fn = click.option("--ctx-size", "-c", type=click.IntRange(min=16), default=None,
                      help="Context window in tokens (default: `gemma-edge doctor`'s recommendation: up to 4096, less when RAM is short).")(fn)
    fn = click.option("--model", "-m", "model_name", default=None, metavar="MODEL",
                      help="Registry name (see `gemma-edge list`) or path to a .gguf file "
                           "(default: the embedded Gemma 3 270M).")(fn)
    return fn


def generation_options(fn):
    """Sampling, length and thinking controls."""
    gemma = Sampling()
    options = [
        click.option("--max-tokens", "-n", type=click.IntRange(min=1), default=DEFAULT_MAX_TOKENS, show_default=True,
                     help="Stop after this many generated tokens."),
        click.option("--temperature", "-t", type=click.FloatRange(min=0), default=None,
                     help=f"0 means greedy (deterministic); default from models.yaml (Gemma: {gemma.temperature})."),
        click.option("--top-k", type=click.IntRange(min=0), default=None, help=f"Default {gemma.top_k}."),
        click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                     help=f"Default {gemma.top_p}."),
        click.option("--min-p", type=click.FloatRange(min=0, max=1), default=None, help=f"Default {gemma.min_p:g}."),
        click.option("--repeat-penalty", type=click.FloatRange(min=0, min_open=True), default=None,
                     help=f"Default {gemma.repeat_penalty} (off)."),
        click.option("--seed", type=int, default=None, help="Random seed for reproducible sampling."),
        click.option("--think/--no-think", "think", default=None,
                     help="Let the model think before answering (Gemma 4; default from models.yaml)."),
        click.option("--thinking-budget", type=click.IntRange(min=0), default=None, metavar="N",
                     help="Close the thought channel after N thinking tokens (its `thought` label not counted; "
                          "0 closes it right after the label), then let the model answer."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def sampling_overrides(kw: dict) -> dict:
    """The sampling options the user set (each named as its `Sampling` field)."""
    return {key: kw[key] for key in Sampling.option_names() if kw.get(key) is not None}


def warn_about_the_build() -> None:
    """One stderr line when the installed llama.cpp was built for instructions this CPU lacks (from
    its build record, before llama.cpp is loaded: loading it may already die by SIGILL)."""
    from gemma_edge.doctor import build_mismatch_warning
    from gemma_edge.hardware import detect_machine
    from gemma_edge.llama.loader import recorded_build

    record = recorded_build()
    line = build_mismatch_warning(detect_machine(), record) if record else None
    if line:
        click.echo(line, err=True)


def load_model(model_name, ctx_size, threads, mmproj=None, *, embeds_ok=False):
    """The model to run; an embedding model only where `embeds_ok` (else its NotAChatModelError, before
    any prompt is read)."""
    from gemma_edge.api import load

    warn_about_the_build()
    ctx = click.get_current_context(silent=True)
    spec = ctx.meta.get("gemma_edge.spec", "auto") if ctx is not None else "auto"
    model = load(model_name, n_ctx=ctx_size, n_threads=threads, mmproj=mmproj, speculative=spec, **rpc_settings())
    if model.embeds and embeds_ok:
        return model
    if model.engine.placement is not None:
        click.echo("placement: " + "; ".join(
            f"{d['device']} layers {d['first_layer']}-{d['last_layer']}" + (" + output" if d["output_layer"] else "")
            for d in model.engine.placement.ranges() if d["layers"]), err=True)
    return model


class Printer:
    """Streams content to stdout and thinking to stderr (dimmed on a terminal)."""

    def __init__(self):
        self.dim = sys.stderr.isatty()
        self.thinking_open = False

    def event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "thinking":
            text = event["text"]
            click.echo(click.style(text, dim=True) if self.dim else text, err=True, nl=False)
            self.thinking_open = True
        elif kind == "content":
            if self.thinking_open:
                click.echo("", err=True)
                self.thinking_open = False
            click.echo(event["text"], nl=False)
        elif kind == "tool_call":
            fn = event["tool_call"]["function"]
            import json

            click.echo(click.style(f"[tool call] {fn['name']}({json.dumps(fn['arguments'], ensure_ascii=False)})",
                                   fg="cyan") if self.dim else f"[tool call] {fn['name']}", err=True)
        sys.stdout.flush()
