"""`run`, `chat` and `demo`: generation from the command line."""
from __future__ import annotations

import json
import sys

import click
from click.core import ParameterSource

from gemma_edge.cli.common import (Printer, UserError, friendly_errors, generation_options, load_model,
                                   model_options, sampling_overrides)
from gemma_edge.cli.media import Attachments, media_options, media_parts, require_support, user_content
from gemma_edge.errors import GemmaEdgeError


def _read_prompt(prompt: str | None) -> str:
    if prompt == "-" or (prompt is None and not sys.stdin.isatty()):
        text = sys.stdin.read()
        if not text.strip():
            raise UserError("no prompt on standard input")
        return text
    if prompt is None:
        raise UserError("give a PROMPT, or `-` to read it from standard input")
    return prompt


def _generation_kwargs(kw: dict) -> dict:
    return {"max_tokens": kw["max_tokens"], "enable_thinking": kw["think"],
            "thinking_budget": kw["thinking_budget"], **sampling_overrides(kw)}


@click.command()
@click.argument("prompt", required=False)
@model_options
@generation_options
@click.option("--raw", is_flag=True, help="Plain completion: the prompt is continued as text, no chat template.")
@click.option("--chat", "as_chat", is_flag=True,
              help="Use the turn format even on a base model (which otherwise continues the text).")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"content", "thinking", "tool_calls", "finish_reason", "usage", '
                   '"timings", "errors"} (schema: docs/run-json.schema.json).')
@click.option("--system", "-s", default=None, help="A system prompt.")
@media_options
@friendly_errors
def run(prompt, model_name, ctx_size, threads, raw, as_chat, as_json, system, images, audios, mmproj, allow_remote,
        **kw):
    """Answer one PROMPT and exit (`-` or a pipe: read it from standard input).

    An instruct model answers PROMPT as a user turn. A base model (like the embedded 270M) continues
    PROMPT as text, which is what it is good at; --chat puts it in the turn format anyway, and so do
    --system, --image and --audio.

    \b
      gemma-edge run "Name three primes" --temperature 0
      echo "Summarise: ..." | gemma-edge run --json
      gemma-edge run --raw "Once upon a time" -n 64
      gemma-edge run "Q: What is the capital of Japan? A: Tokyo. Q: What is the capital of Peru? A:" -n 4
      gemma-edge run -m gemma-3-4b-it --image photo.jpg "What is in this picture?"
      gemma-edge run -m gemma-4-e2b-it --audio note.wav "Transcribe this."
    """
    needs_turn = [flag for flag, given in (("--system", system), ("--image", images), ("--audio", audios)) if given]
    if raw and as_chat:
        raise UserError("--raw and --chat exclude each other")
    if raw and needs_turn:
        raise UserError(f"{'/'.join(needs_turn)} need{'s' if len(needs_turn) == 1 else ''} a chat turn; "
                        "they cannot be combined with --raw")
    text = _read_prompt(prompt)
    parts = media_parts(images, audios, allow_remote=allow_remote)  # bad files fail before the model loads
    model = load_model(model_name, ctx_size, threads, mmproj)
    require_support(model, parts)
    continue_text = raw or (not model.instruct and not as_chat and not needs_turn)
    if continue_text:
        if not raw:
            click.echo(f"note: {model.facts.name} is a base model: continuing your text (raw completion); "
                       "--chat uses the turn format", err=True)
        stream = model.stream(text, raw=True, **_generation_kwargs(kw))
    else:
        messages = (([{"role": "system", "content": system}] if system else [])
                    + [{"role": "user", "content": user_content(parts, text)}])
        stream = model.stream(messages, **_generation_kwargs(kw))
    if as_json:
        response = stream.consume()
        click.echo(json.dumps(response.to_dict(), ensure_ascii=False))
        return
    if not model.instruct and not continue_text:
        from gemma_edge.api import warn_base_model

        warn_base_model(model)
    printer = Printer()
    for event in stream:
        printer.event(event)
    click.echo("")


CHAT_HELP = ("commands: /reset  /system TEXT  /image FILE  /audio FILE  /save FILE  /load FILE  /help  /exit   "
             "(Ctrl-C stops a reply, Ctrl-D quits)")


@click.command()
@model_options
@generation_options
@click.option("--system", "-s", default=None, help="System prompt for the conversation.")
@media_options
@click.option("--web", is_flag=True,
              help="Chat in the browser instead: start the server on 127.0.0.1 and open its chat page.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="With --web: the port (the page keeps conversations per address, so keep it stable).")
@friendly_errors
def chat(model_name, ctx_size, threads, system, images, audios, mmproj, allow_remote, web, port, **kw):
    """Talk with a model; replies stream as they are generated.

    Each turn reuses the KV cache, so only the new message is processed. When the conversation
    outgrows the context, the oldest turns are dropped (never the system prompt) and you are told.
    With piped standard input, each line is one user message (for scripting).
    --image/--audio attach to the first message.

    \b
    Inside the chat:
      /reset          forget the conversation (keeps the system prompt)
      /system TEXT    set the system prompt
      /image FILE     attach an image to your next message (/audio FILE: a sound clip)
      /save FILE      save the conversation as JSON;  /load FILE  loads one
      /exit           quit (or Ctrl-D); Ctrl-C stops the current reply
    \b
    Example:
      gemma-edge chat -m gemma-3-4b-it --image receipt.png
      > What is the total on this receipt?
      > /image second.png
      > And on this one?
      gemma-edge chat --web                 # the same in the browser (Ctrl-C stops the server)
    """
    if web:
        return _chat_in_browser(model_name, ctx_size, threads, mmproj, port)
    if click.get_current_context().get_parameter_source("port") is ParameterSource.COMMANDLINE:
        raise UserError("--port is for chat --web")
    from gemma_edge.api import warn_base_model
    from gemma_edge.chat import Chat

    first = media_parts(images, audios, allow_remote=allow_remote)  # bad files fail before the model loads
    model = load_model(model_name, ctx_size, threads, mmproj)
    require_support(model, first)
    attachments = Attachments(model, first, allow_remote=allow_remote)
    notice = lambda text: click.echo(f"note: {text}", err=True)  # noqa: E731
    session = Chat(model, system=system, on_notice=notice, enable_thinking=kw["think"],
                   max_tokens=kw["max_tokens"], **sampling_overrides(kw))
    interactive = sys.stdin.isatty()
    warn_base_model(model)
    if interactive:
        click.echo(f"{model.facts.name} ({model.format}, {model.facts.quantization}). {CHAT_HELP}", err=True)
    budget = kw["thinking_budget"]
    for line in _input_lines(interactive):
        if line.startswith("/"):
            if _command(session, attachments, line):
                return
            continue
        if not line.strip():
            continue
        printer = Printer()
        parts = attachments.take()
        try:
            for event in session.stream(user_content(parts, line), thinking_budget=budget):
                printer.event(event)
        except KeyboardInterrupt:
            # Stop this reply, keep the program: the unanswered message leaves the history, its
            # attachments wait for the next one.
            if session.messages and session.messages[-1].get("role") == "user":
                session.messages.pop()
            attachments.put_back(parts)
            click.echo("\n(stopped)", err=True)
            continue
        click.echo("")


# What `chat --web` uses; every other option is set in the page
WEB_OPTIONS = ("model_name", "ctx_size", "threads", "rpc", "split", "mmproj", "web", "port")


def _chat_in_browser(model_name, ctx_size, threads, mmproj, port) -> None:
    """`chat --web`: the server on loopback, its chat page opened in the default browser ($BROWSER)."""
    import webbrowser

    from gemma_edge.cli.serve import serve_model

    context = click.get_current_context()
    given = [p for p in context.command.params if p.name not in WEB_OPTIONS
             and context.get_parameter_source(p.name) is ParameterSource.COMMANDLINE]
    if given:
        option = max(given[0].opts, key=len)
        raise UserError(f"chat --web takes {option} in the page (system prompt, temperature, thinking, attachments), "
                        "not on the command line")

    def open_page(url: str) -> None:
        click.echo(f"chat page: {url}  (Ctrl-C stops the server)", err=True)
        if not webbrowser.open(url):
            click.echo("note: no browser found; open the address above", err=True)

    serve_model(model_name, ctx_size, threads, mmproj, host="127.0.0.1", port=port, on_listening=open_page)


def _input_lines(interactive: bool):
    if not interactive:
        for line in sys.stdin:
            yield line.rstrip("\n")
        return
    while True:
        try:
            yield input("> ")
        except EOFError:
            click.echo("", err=True)
            return
        except KeyboardInterrupt:
            click.echo("\n(/exit or Ctrl-D to quit)", err=True)


def _command(session, attachments: Attachments, line: str) -> bool:
    """Run a /command; True means quit."""
    name, _, arg = line.partition(" ")
    arg = arg.strip()
    if name in ("/exit", "/quit"):
        return True
    if name == "/reset":
        session.reset()
        session.model.engine.reset()
        attachments.clear()
        click.echo("(conversation reset)", err=True)
    elif name in ("/image", "/audio"):
        if not arg:
            click.echo(f"usage: {name} FILE", err=True)
            return False
        try:
            click.echo(attachments.attach(name[1:], arg), err=True)
        except GemmaEdgeError as e:
            click.echo(f"error: {e}", err=True)
    elif name == "/system":
        session.system = arg or None
        click.echo("(system prompt set)" if arg else "(system prompt cleared)", err=True)
    elif name in ("/save", "/load"):
        if not arg:
            click.echo(f"usage: {name} FILE", err=True)
            return False
        try:
            session.save(arg) if name == "/save" else session.load(arg)
            click.echo(f"({'saved to' if name == '/save' else 'loaded'} {arg})", err=True)
        except (GemmaEdgeError, OSError) as e:
            click.echo(f"error: {e}", err=True)
    elif name == "/help":
        click.echo(CHAT_HELP, err=True)
    else:
        click.echo(f"unknown command {name}; {CHAT_HELP}", err=True)
    return False


FEW_SHOT = ("Q: What is the capital of Japan?\nA: Tokyo\n"
            "Q: What is the capital of Canada?\nA: Ottawa\n"
            "Q: What is the capital of France?\nA:")
FOLLOW_UP = "\nQ: What is the capital of Italy?\nA:"
STORY = "Once upon a time, in a small village by the sea,"
STORY_PENALTY = 1.15  # a 270M base model repeats itself when greedy without one


@click.command()
@friendly_errors
def demo():
    """A tour on the embedded Gemma 3 270M, every line produced live: streamed few-shot answers, speed,
    KV reuse, the byte-exact prompt an instruct model gets, and a Gemma 4 reply parsed."""
    from gemma_edge.api import load

    model = load()
    facts = model.facts
    click.echo(f"model: {facts.name} ({facts.quantization}, {facts.parameters / 1e6:.0f}M parameters, "
               f"{model.format} format) at {facts.path}")
    if not model.instruct:
        click.echo("A base model: it continues text rather than following instructions, so show it a pattern.")

    click.echo("\n== 1. few-shot question answering, streamed (greedy) ==")
    click.echo(FEW_SHOT, nl=False)
    answer, gen = _stream_line(model, FEW_SHOT)
    click.echo(f"[{gen.usage['prompt_tokens']} prompt tokens; first token after "
               f"{gen.timings.first_token_s * 1000:.0f} ms]")

    click.echo("\n== 2. KV reuse: the next question extends the same text ==")
    click.echo(FOLLOW_UP.lstrip("\n"), nl=False)
    _, gen = _stream_line(model, FEW_SHOT + answer + FOLLOW_UP)
    click.echo(f"[{gen.usage['prompt_tokens']} prompt tokens, of which only {gen.prompt_evaluated} evaluated: "
               "the rest was still in the KV cache]")

    click.echo(f"\n== 3. speed: a longer continuation, streamed (greedy, repeat penalty {STORY_PENALTY}) ==")
    click.echo(STORY, nl=False)
    stream = model.stream(STORY, raw=True, temperature=0, repeat_penalty=STORY_PENALTY, max_tokens=48)
    for event in stream:
        click.echo(event["text"], nl=False)
    timings = stream.response.timings
    click.echo(f"\n[prompt at {timings['prefill_tokens_per_s']} tokens/s, {stream.response.usage['completion_tokens']} "
               f"tokens generated at {timings['decode_tokens_per_s']} tokens/s on {model.engine.n_threads} threads; "
               "`gemma-edge bench` compares with raw llama.cpp]")

    click.echo(f"\n== 4. the prompt an instruct model gets ({model.format} format, byte for byte) ==")
    conversation = [{"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": "What is the capital of France?"}]
    click.echo(json.dumps(conversation, ensure_ascii=False))
    from gemma_edge.formats import render_prompt

    click.echo(render_prompt(conversation, format=model.format), nl=False)
    click.echo("[equal to transformers' apply_chat_template with the official template; "
               f"`gemma-edge template --format {model.format}` shows any conversation]")

    click.echo("\n== 5. a Gemma 4 reply with thinking and a tool call, parsed ==")
    output = _gemma4_reply()
    click.echo(output)
    from gemma_edge.parsing import parse_response

    click.echo(json.dumps(parse_response(output, format="gemma4-large", enable_thinking=True), ensure_ascii=False))
    click.echo("\nFor a model that follows instructions: `gemma-edge pull gemma-3-270m-it`, then "
               "`gemma-edge chat -m gemma-3-270m-it` (`gemma-edge list` shows the others).")


def _stream_line(model, prompt: str):
    """Stream a greedy raw completion to stdout until its first line ends; returns the line and the
    engine's generation (token counts and timings)."""
    from contextlib import closing

    stream = model.stream(prompt, raw=True, temperature=0, max_tokens=24)
    line = ""
    with closing(iter(stream)) as events:
        for event in events:
            piece, newline, _ = event["text"].partition("\n")
            line += piece
            click.echo(piece, nl=bool(newline))
            if newline:
                break
        else:
            click.echo("")
    return line, stream.decode_run


def _gemma4_reply() -> str:
    """What a Gemma 4 model writes when it thinks and then calls a tool: the thought channel from the
    output syntax's markers, the call as the Gemma 4 format renders it."""
    from gemma_edge.formats import render_prompt
    from gemma_edge.formats.samples import WEATHER_CALL, WEATHER_TOOL
    from gemma_edge.parsing import syntax_for

    syntax = syntax_for("gemma4-large")
    history = render_prompt([{"role": "user", "content": "Weather in Paris?"},
                             {"role": "assistant", "tool_calls": [WEATHER_CALL]}],
                            format="gemma4-large", tools=[WEATHER_TOOL], add_generation_prompt=False)
    call = history[history.index(syntax.call_open):history.index(syntax.call_close) + len(syntax.call_close)]
    thought = "The user wants the weather in Paris; the get_weather tool gives it."
    return f"{syntax.channel_open}{syntax.channel_label}{thought}{syntax.channel_close}{call}"
