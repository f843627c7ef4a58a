"""Multi-turn chat: history, fitting it into the context, and the tool-call loop."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

from gemma_edge.llama.engine import prompt_positions
from gemma_edge.errors import ContextOverflowError, GemmaEdgeError
from gemma_edge.response import Response
from gemma_edge.tools import normalize_tools, prompt_declarations, run_tool_call


def fit_history(model, messages: list[dict], reserve: int, **render) -> tuple[list[dict], int]:
    """Drop the oldest exchanges (never the system message, never the newest turn) until the prompt
    plus `reserve` tokens for the reply fits the context (an image or audio clip counts the positions
    its embeddings fill). Returns the kept messages and how many were dropped."""
    system = [m for m in messages[:1] if m.get("role") in ("system", "developer")]
    rest = messages[len(system):]
    dropped = 0
    while True:
        tokens, _ = model.tokenize_messages(system + rest, **render)
        length = prompt_positions(tokens)
        if length + reserve <= model.n_ctx:
            return system + rest, dropped
        # The oldest exchange: the first message and everything up to the next user message.
        cut = next((i for i in range(1, len(rest)) if rest[i].get("role") == "user"), None)
        if cut is None:
            raise ContextOverflowError(
                f"the latest message alone is {length} tokens; with {reserve} reserved for the reply it does "
                f"not fit the {model.n_ctx}-token context (raise --ctx-size or shorten it)")
        rest = rest[cut:]
        dropped += cut


def tool_rounds(model, history: list[dict], *, tools=None, execute_tools: bool = False,
                max_tool_rounds: int = 5, **options) -> Iterator[dict]:
    """Generate, yielding parser events; while the model calls tools we may run, run them, append
    the results as tool messages (yielded as `tool_result` events) and generate again. `history` is
    extended in place with every message produced; the generator returns the last Response."""
    callables = _callables(tools)
    grammar = options.pop("grammar", None)
    rounds = 0
    while True:
        # A list of grammars constrains each round in turn (scripted sessions, tests).
        round_grammar = grammar[min(rounds, len(grammar) - 1)] if isinstance(grammar, (list, tuple)) else grammar
        stream = model.stream(history, tools=tools, grammar=round_grammar, **options)
        yield from stream
        response = stream.response
        history.append(response.message())
        if not (execute_tools and response.tool_calls and callables) or rounds >= max_tool_rounds:
            return response
        rounds += 1
        for call in response.tool_calls:
            result = run_tool_call(call, callables)
            history.append(result)
            yield {"type": "tool_result", "message": result}


def run_tool_loop(model, history: list[dict], **kw) -> Response:
    """`tool_rounds` run to the end: the final Response."""
    rounds = tool_rounds(model, history, **kw)
    while True:
        try:
            next(rounds)
        except StopIteration as done:
            return done.value


class Chat:
    """A conversation with a loaded model; the KV cache is reused from turn to turn, so each turn
    only prefills its new tokens.

        chat = gemma_edge.Chat(gemma_edge.load(), system="Answer briefly.")
        print(chat.send("Hi!"))
    """

    def __init__(self, model, *, system: str | None = None, tools=None, execute_tools: bool = False,
                 max_tool_rounds: int = 5, enable_thinking: bool | None = None, max_tokens: int = 512,
                 on_notice: Callable[[str], None] | None = None, **sampling):
        self.model = model
        self.messages: list[dict] = []
        self.tools, self.execute_tools, self.max_tool_rounds = tools, execute_tools, max_tool_rounds
        self.enable_thinking = model.default_thinking if enable_thinking is None else enable_thinking
        self.max_tokens = max_tokens
        self.sampling = sampling
        self.on_notice = on_notice or (lambda text: None)
        self.last_response: Response | None = None
        if system:
            self.system = system

    @property
    def system(self) -> str | None:
        first = self.messages[0] if self.messages else None
        return first["content"] if first and first.get("role") == "system" else None

    @system.setter
    def system(self, text: str | None) -> None:
        if self.system is not None:
            self.messages.pop(0)
        if text:
            self.messages.insert(0, {"role": "system", "content": text})

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        system = self.system
        self.messages = []
        self.system = system

    def stream(self, content, **overrides) -> Iterator[dict]:
        """Send a user message; yield parser events as they come. `last_response` holds the reply."""
        self.messages.append({"role": "user", "content": content})
        options = {"enable_thinking": self.enable_thinking, "max_tokens": self.max_tokens, **self.sampling,
                   **overrides}
        reserve = min(options["max_tokens"], self.model.n_ctx // 4)
        try:
            kept, dropped = fit_history(self.model, self.messages, reserve, tools=prompt_declarations(self.tools),
                                        enable_thinking=options["enable_thinking"])
        except GemmaEdgeError:
            self.messages.pop()
            raise
        if dropped:
            self.messages = kept
            self.on_notice(f"the conversation outgrew the {self.model.n_ctx}-token context: dropped the "
                           f"{dropped} oldest message(s){', kept the system prompt' if self.system else ''}")
        self.last_response = yield from tool_rounds(
            self.model, self.messages, tools=self.tools, execute_tools=self.execute_tools,
            max_tool_rounds=self.max_tool_rounds, **options)

    def send(self, content, **overrides) -> Response:
        for _ in self.stream(content, **overrides):
            pass
        return self.last_response

    def save(self, path: str | Path) -> None:
        """The messages as JSON; media parts keep where they came from (path, URL), raw bytes become a
        data: URL, a decoded image or audio held in memory is not written."""
        messages = [_saveable(m) for m in self.messages]
        Path(path).write_text(json.dumps({"messages": messages}, ensure_ascii=False, indent=2) + "\n",
                              encoding="utf-8")

    def load(self, path: str | Path) -> None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise GemmaEdgeError(f"cannot read {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise GemmaEdgeError(f"{path} is not a saved chat (invalid JSON: {e.msg} at line {e.lineno})") from None
        messages = data.get("messages") if isinstance(data, dict) else data
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise GemmaEdgeError(f"{path} is not a saved chat (expected a list of messages with roles)")
        self.messages = messages


def _saveable(message: dict) -> dict:
    content = message.get("content")
    if not isinstance(content, list):
        return message
    return {**message, "content": [_saveable_part(p) if isinstance(p, dict) else p for p in content]}


def _saveable_part(part: dict) -> dict:
    part = {k: v for k, v in part.items() if k != "media"}
    if isinstance(part.get("bytes"), (bytes, bytearray)):
        import base64

        part["url"] = "data:application/octet-stream;base64," + base64.b64encode(part.pop("bytes")).decode()
    return part


def _callables(tools) -> dict:
    if not tools:
        return {}
    return normalize_tools(tools)[1]
