"""`serve`: the OpenAI-compatible HTTP server on loopback."""
from __future__ import annotations


import click

from gemma_edge.cli.common import UserError, is_loopback, friendly_errors, load_model, model_options


@click.command()
@click.argument("model_arg", required=False, metavar="[MODEL]")
@model_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback exposes the model to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0 picks a free port.")
@click.option("--api-key", envvar="GEMMA_EDGE_API_KEY", default=None, metavar="KEY",
              help="Require `Authorization: Bearer KEY` (also read from $GEMMA_EDGE_API_KEY, which keeps it out "
                   "of the process list).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Also answer to this Host header name (repeatable; '*' turns the check off). "
                   "Loopback names are always allowed.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages from ORIGIN call the API (repeatable). Default: no CORS.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=600, show_default=True,
              help="Seconds a request may take, queueing included.")
@click.option("--max-queue", type=click.IntRange(min=0), default=64, show_default=True,
              help="Requests that may wait for the model; more get 503.")
@click.option("--max-body-size", type=click.IntRange(min=1024), default=None, metavar="BYTES",
              help="Largest request body in bytes; larger gets 413. Default: 2 MiB, plus room for one 20 MB "
                   "image as base64 when the model has a projector.")
@click.option("--mmproj", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="The model's projector GGUF, for image_url/input_audio parts. Default: the registry's, or "
                   "mmproj-<model>.gguf beside the model file.")
@click.option("--allow-remote-images", "allow_remote", is_flag=True,
              help="Let image_url parts be http(s) URLs the server fetches (size- and time-limited). Off by "
                   "default: only data: URLs.")
@click.option("--max-tokens-limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Cap every request's max_tokens at N (finish_reason tells when it was hit).")
@click.option("--no-prompt-cache", is_flag=True,
              help="Evaluate every prompt from scratch instead of reusing the KV cache of the previous request.")
@friendly_errors
def serve(model_arg, model_name, ctx_size, threads, host, port, api_key, allow_hosts, cors_origins, timeout_s,
          max_queue, max_body_size, mmproj, allow_remote, max_tokens_limit, no_prompt_cache):
    """Serve MODEL over an OpenAI-compatible HTTP API (default: 127.0.0.1:8080).

    Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health,
    GET /openapi.json. With a projector (mmproj), chat messages may carry images as image_url
    parts with data: URLs, and audio as input_audio parts.

    A chat page for the browser is at / (`gemma-edge chat --web` starts the server and opens it).

    \b
      gemma-edge serve gemma-3-1b-it
      curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "gemma", "messages": [{"role": "user", "content": "Hi"}]}'
    \b
      gemma-edge serve gemma-3-4b-it      # then, in Python with the openai package:
      client.chat.completions.create(model="gemma", messages=[{"role": "user", "content": [
          {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0..."}},
          {"type": "text", "text": "What is in this picture?"}]}])
    """
    if model_arg and model_name and model_arg != model_name:
        raise UserError("give the model either as MODEL or with --model, not both")
    if not is_loopback(host):
        warning = "" if api_key else " without --api-key: anyone who can reach it can use the model"
        click.echo(f"warning: listening on {host}, not loopback{warning}", err=True)
    serve_model(model_arg or model_name, ctx_size, threads, mmproj, host=host, port=port, api_key=api_key,
                allow_hosts=tuple(allow_hosts), cors_origins=tuple(cors_origins), timeout_s=timeout_s,
                max_waiting=max_queue, max_body_size=max_body_size, allow_remote_media=allow_remote,
                max_tokens_limit=max_tokens_limit, prompt_cache=not no_prompt_cache)


def serve_model(model_name, ctx_size, threads, mmproj, *, host: str, port: int, max_body_size: int | None = None,
                max_waiting: int = 64, on_listening=None, **config) -> None:
    """Load the model and serve it on host:port until interrupted (`serve`, and `chat --web`, which passes
    `on_listening(url)` to open the page). `config`: further ServerConfig fields."""
    try:
        from gemma_edge.server import ServerConfig, create_app
        from gemma_edge.server.run import bind_socket, serve_app
    except ImportError:
        raise UserError("the server needs the `serve` extra: pip install 'gemma-edge[serve]'") from None
    from importlib.metadata import PackageNotFoundError, version

    try:
        sock = bind_socket(host, port)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    from gemma_edge.media import Limits
    from gemma_edge.server.media import default_body_limit

    media_limits = Limits.from_env()
    model = load_model(model_name, ctx_size, threads, mmproj, embeds_ok=True)
    takes_media = not model.embeds and (model.engine.supports("image") or model.engine.supports("audio"))
    body_limit = max_body_size or default_body_limit(takes_media, media_limits)
    try:
        package_version = version("gemma-edge")
    except PackageNotFoundError:
        package_version = "0"
    server_config = ServerConfig(
        model_id=model.entry.name if model.entry else model.facts.path.stem, bind_host=host.strip("[]"),
        max_waiting=max_waiting, max_body_bytes=body_limit, version=package_version, media_limits=media_limits,
        **config)
    app = create_app(model, server_config)
    serve_app(app, sock, model_id=server_config.model_id, max_connections=max_waiting + 64, on_listening=on_listening)
