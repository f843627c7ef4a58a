"""The Python API: `load()` a model, then `generate`, `stream` or `chat`.

    import gemma_edge
    model = gemma_edge.load()                       # the embedded Gemma 3 270M
    print(model.generate("Write a haiku about snow", temperature=0))
    for event in model.stream("Tell me a story"):
        print(event.get("text", ""), end="")

    vision = gemma_edge.load("gemma-3-4b")          # its projector (mmproj) is found too
    vision.chat([{"role": "user", "content": [{"type": "image", "path": "cat.png"},
                                              {"type": "text", "text": "What is this?"}]}])
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from gemma_edge.llama.engine import DecodeRun, Engine
from gemma_edge.formats import Segment, expand_media, get_format, render_segments
from gemma_edge.formats.base import part_type
from gemma_edge.errors import GemmaEdgeError, ModelNotFoundError, NotAChatModelError, NotAnEmbeddingModelError
from gemma_edge.model import ModelFacts, read_model_facts
from gemma_edge.model_entry import ModelEntry
from gemma_edge.parsing import StreamParser, syntax_for
from gemma_edge.registry import mmproj_path, projector_beside, resolve
from gemma_edge.response import Response
from gemma_edge.runtime import DEFAULT_BATCH, default_threads, open_engine, resolve_settings
from gemma_edge.sampling import DEFAULT_MAX_TOKENS, Sampling
from gemma_edge.chat import run_tool_loop
from gemma_edge.doctor import resolve_spec
from gemma_edge.speculative import Speculation, draft_model_name, make_speculation, mtp_drafter_name
from gemma_edge.tools import prompt_declarations

if TYPE_CHECKING:
    import numpy as np

class ResponseStream:
    """Iterate for parser events (`{"type": "thinking"|"content", "text"}`, `{"type": "tool_call", ...}`);
    `.response` holds the whole parsed Response once iteration ends."""

    def __init__(self, decode_run: DecodeRun, parser, raw: bool):
        self.decode_run, self.parser, self.raw = decode_run, parser, raw
        self.response: Response | None = None

    def __iter__(self) -> Iterator[dict]:
        gen = self.decode_run
        if self.raw:
            text = []
            for delta in gen:
                text.append(delta)
                yield {"type": "content", "text": delta}
            parsed = {"content": "".join(text), "thinking": None, "tool_calls": [], "errors": []}
        else:
            for delta in gen:
                yield from self.parser.feed(delta)
            yield from self.parser.finish()  # what only the end decides: held-back text, an unclosed call
            parsed = self.parser.close()
        finish = gen.finish_reason or "stop"
        if parsed.get("tool_calls") and finish == "stop":
            finish = "tool_calls"
        self.response = Response(
            content=parsed["content"], thinking=parsed.get("thinking"), tool_calls=parsed.get("tool_calls") or [],
            errors=parsed.get("errors") or [], finish_reason=finish, usage=gen.usage,
            timings=gen.timings.as_dict(gen.prompt_evaluated, len(gen.tokens)))

    def consume(self) -> Response:
        for _ in self:
            pass
        return self.response


class ThinkingBudget:
    """After `budget` thinking tokens inside the thought channel, force the channel's closing
    marker (as llama.cpp's reasoning budget does) so the model moves on to its answer.

    The channel's label (`thought\n`) is not thinking: counting starts after it, and a budget of 0
    closes the channel as soon as the label's name is written (`<|channel>thought<channel|>`,
    which parses to no thinking). A block that turns out not to start with the label counts from
    its opener. `prefill` is what the prompt already wrote inside a channel it left open (None: the
    output starts outside one); `piece(token)` is a token's text."""

    def __init__(self, open_id: int, close_id: int, budget: int, label: str,
                 piece: Callable[[int], str], prefill: str | None = None):
        self.open_id, self.close_id, self.budget, self.piece = open_id, close_id, budget, piece
        self.label, self.name = label, label.rstrip("\n")
        self.seen = 0
        self.inside = prefill is not None
        self._start(prefill or "")

    def _start(self, head: str) -> None:
        """A block starts with `head` written; the label is undecided while `head` is a proper
        prefix of it (`self.head` is None once decided)."""
        self.count, self.head_tokens = 0, 0
        self.head = head if len(head) < len(self.label) and self.label.startswith(head) else None

    def __call__(self, generated: list[int]) -> list[int] | None:
        for token in generated[self.seen:]:
            if token == self.open_id:
                self.inside = True
                self._start("")
            elif token == self.close_id:
                self.inside = False
            elif self.inside and self.head is not None:
                self._label_token(token)
            elif self.inside:
                self.count += 1
        self.seen = len(generated)
        spent = self.count >= self.budget if self.head is None else self.budget == 0 and self.head == self.name
        if self.inside and spent:
            self.inside = False
            return [self.close_id]
        return None

    def _label_token(self, token: int) -> None:
        head = self.head + self.piece(token)
        self.head_tokens += 1
        if len(head) < len(self.label) and self.label.startswith(head):
            self.head = head
            return
        self.head = None
        if head.startswith(self.label):  # the label is complete; a token running past it counts
            self.count = 1 if len(head) > len(self.label) else 0
        else:  # no label: every token of the block so far was thinking
            self.count = self.head_tokens


class Model:
    """A loaded Gemma GGUF. Thread-safe: generations are serialised on the engine's lock."""

    def __init__(self, path: Path, entry: ModelEntry | None = None, *, n_ctx: int | None = None,
                 n_threads: int | None = None, n_batch: int = DEFAULT_BATCH, format: str | None = None,
                 rpc: Sequence[str] | None = None, split: Sequence[float] | None = None,
                 mmproj: str | Path | None = None, speculative: str | None = "auto", supervised: bool = True):
        """Unset settings get `doctor`'s recommendation for this machine (gemma_edge.runtime).
        `rpc`/`split`: spread the layers over RPC workers; the model then runs in a supervised child
        process, so a lost worker fails one request with RpcError instead of aborting this process
        (gemma_edge.rpc.supervision; `supervised=False` loads it here, for llama.cpp-level access).
        `mmproj`: the projector file for image/audio input (`load` finds it; here it is taken as given).
        `speculative`: "auto", "off", "ngram", "draft:MODEL" (a smaller model of the same vocabulary
        drafts: a registry name or a GGUF path, loaded beside this one) or "mtp:DRAFTER" (a Gemma 4 MTP
        drafter GGUF, gemma_edge.mtp) (gemma_edge.speculative). A model loaded with speculation decodes in
        exact batches (gemma_edge.llama.exact): with or without drafting (per generation) its output is the same."""
        facts = read_model_facts(path)
        self.entry = entry
        self.facts: ModelFacts = facts
        self._engine: Engine | None = None
        self._embedder = None
        self._draft = None
        self._mtp = None
        if facts.embeds:
            self._load_embedder(n_ctx=n_ctx, n_threads=n_threads, rpc=rpc, mmproj=mmproj)
            return
        self.format = format or (entry.format if entry else None) or facts.format
        turn_format = get_format(self.format)
        self.speculative = resolve_spec(speculative, facts)
        draft = self._check_draft()  # a bad pair is refused before anything loads
        if draft is not None and rpc:
            raise GemmaEdgeError("a draft model cannot be combined with --rpc yet (it would run on this machine "
                                 "only); use --spec ngram or off")
        settings = resolve_settings(facts, n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch, mmproj=mmproj,
                                    rpc=rpc, split=split, speculative=self.speculative)
        self._engine = open_engine(facts, settings, stop_markers=turn_format.stops, supervised=supervised)
        if draft is not None:
            self._load_draft(*draft)
        if settings.mtp_drafter is not None:
            self._load_mtp_drafter(settings.mtp_drafter)
        self.turn_format = turn_format
        self.default_sampling = (entry.sampling if entry else None) or Sampling()
        self.instruct = entry.instruct if entry else facts.instruct
        self.default_thinking = entry.capabilities.thinking if entry else False

    def _check_draft(self) -> tuple[ModelFacts, int] | None:
        """For a "draft:MODEL" mode: the checked draft model's facts and the memory available before the
        target loads (the pair must fit in it)."""
        name = draft_model_name(self.speculative)
        if name is None:
            return None
        from gemma_edge.draft_pair import read_draft_model
        from gemma_edge.hardware import available_memory

        return read_draft_model(name, self.facts), available_memory()

    def _load_draft(self, facts: ModelFacts, available: int) -> None:
        from gemma_edge.llama.draft_model import DraftModel

        try:
            self._draft = DraftModel(facts, self.facts, n_ctx=self._engine.n_ctx, n_threads=self._engine.n_threads,
                                     available=available)
        except GemmaEdgeError:
            self._engine.close()
            raise

    def _load_mtp_drafter(self, facts) -> None:
        from gemma_edge.llama.mtp import MtpDrafter

        try:
            self._mtp = MtpDrafter(facts, self._engine)  # before the engine decodes anything
        except GemmaEdgeError:
            self._engine.close()
            raise

    def _load_embedder(self, *, n_ctx, n_threads, rpc, mmproj) -> None:
        from gemma_edge.embedding import Embedder

        if rpc or mmproj is not None:
            raise GemmaEdgeError(f"{self.facts.name} is an embedding model: it runs on this machine only and "
                                 "takes no projector (mmproj)")
        self.format = self.facts.format
        self.turn_format = None
        self.default_sampling = Sampling()
        self.instruct = False
        self.default_thinking = False
        self._embedder = Embedder(self.facts, n_threads=default_threads(self.facts, n_threads), n_ctx=n_ctx)

    @property
    def embeds(self) -> bool:
        """True for an embedding model (EmbeddingGemma): `embed` works, `generate`/`stream`/`chat` do not."""
        return self.facts.embeds

    def _require_chat(self) -> Engine:
        """The generation engine; an embedding model has none (a clear NotAChatModelError)."""
        if self._engine is None:
            raise NotAChatModelError(
                f"{self.facts.name} is an embedding model (EmbeddingGemma): it cannot chat or complete text; "
                "use model.embed(...), `gemma-edge embed` or POST /v1/embeddings")
        return self._engine

    @property
    def draft_model(self):
        """The draft model loaded for "draft:MODEL" speculation (gemma_edge.llama.draft_model), or None."""
        return self._draft

    @property
    def engine(self) -> Engine:
        return self._require_chat()

    @property
    def n_ctx(self) -> int:
        return self._embedder.max_tokens if self._embedder is not None else self.engine.n_ctx

    # -- embeddings -----------------------------------------------------------------------------
    def embed(self, texts: str | Sequence[str], *, task: str | None = None, dimensions: int | None = None,
              normalize: bool = True) -> "np.ndarray":
        """Embeddings of `texts` (one string: a 1-D array; a list: one row per text), float32.

        `task` picks EmbeddingGemma's task prompt (`gemma_edge.embedding.TASK_PROMPTS`: "query" for
        search queries, the default; "document" for the texts searched, "classification", "clustering",
        "similarity", ...; "none" embeds the text as given). `dimensions` keeps the first N values
        (Matryoshka: 768, 512, 256 or 128 for EmbeddingGemma); `normalize` makes each row unit length
        (after truncation)."""
        return self.embed_with_usage(texts, task=task, dimensions=dimensions, normalize=normalize)[0]

    def embed_with_usage(self, texts: str | Sequence[str], *, task: str | None = None, dimensions: int | None = None,
                         normalize: bool = True) -> tuple["np.ndarray", int]:
        """`embed`, and the number of tokens the inputs took (task prompts included)."""
        from gemma_edge.embedding import DEFAULT_TASK, EmbeddingError, matryoshka, prompted

        if self._embedder is None:
            raise NotAnEmbeddingModelError(
                f"{self.facts.name} is a {self.facts.generation} chat model: it does not embed text; "
                "load an embedding model such as embeddinggemma-300m")
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        if not all(isinstance(t, str) for t in items):
            raise EmbeddingError("embed takes a string or a list of strings")
        result = self._embedder.embed(prompted(items, task or DEFAULT_TASK))
        vectors = matryoshka(result.vectors, dimensions, normalize)
        return (vectors[0] if single else vectors), result.prompt_tokens

    def sampling(self, **overrides) -> Sampling:
        return self.default_sampling.updated(**overrides)

    # -- prompts --------------------------------------------------------------------------------
    def render(self, messages: list[dict], *, tools=None, enable_thinking: bool = False,
               add_generation_prompt: bool = True, **template_vars):
        self._require_chat()  # an embedding model has no turn format
        return render_segments(messages, format=self.format, tools=tools, enable_thinking=enable_thinking,
                               add_generation_prompt=add_generation_prompt, **template_vars)

    def tokenize_messages(self, messages, **kw) -> tuple[list, str]:
        """The rendered prompt's items (token ids, and a media chunk per image/audio part), and the
        prompt's tail (for the output parser)."""
        kinds = self._media_kinds(messages)
        segments = self.render(messages, **kw)
        tail = "".join(s.text for s in segments[-4:])[-256:]
        if not kinds:
            return self.engine.tokenize(segments), tail
        expanded = expand_media(segments, self.turn_format.media_expansion)
        return self.engine.tokenize(expanded, media=self._media_item), tail

    def _media_kinds(self, messages) -> set[str]:
        """The media kinds the messages carry; a clear MediaError for one this model cannot take."""
        kinds = {part_type(part) for message in messages if isinstance(message, dict)
                 and isinstance(message.get("content"), (list, tuple)) for part in message["content"]}
        kinds &= MEDIA_KINDS
        for kind in sorted(kinds):
            problem = self._media_problem(kind)
            if problem:
                from gemma_edge.media import MediaError

                raise MediaError(problem)
        return kinds

    def _media_problem(self, kind: str) -> str | None:
        if kind not in self.turn_format.media_expansion:
            return (f"{self.facts.name} ({self.format} format) cannot take {kind} input"
                    + (": not supported yet (llama.cpp cannot encode it)" if kind in self.turn_format.media else ""))
        if self.engine.projector is None:
            return (f"{self.facts.name} has no {ENCODERS[kind]} projector: load it with mmproj=PATH (or put "
                    f"mmproj-{self.facts.path.stem}.gguf beside the model)")
        if not self.engine.supports(kind):
            return f"this model's projector has no {kind} encoder ({self.engine.projector.path.name})"
        return None

    def _media_item(self, part):
        from gemma_edge.media import load_media

        return self.engine.media_chunk(load_media(part))

    def tokenize_raw(self, text: str) -> list[int]:
        return self.engine.tokenize([Segment(self.facts.bos_token or "<bos>", True), Segment(text, False)])

    # -- generation -----------------------------------------------------------------------------
    def stream(self, prompt: str | list[dict], *, raw: bool = False, tools=None, enable_thinking: bool | None = None,
               max_tokens: int = DEFAULT_MAX_TOKENS, thinking_budget: int | None = None, grammar: str | None = None,
               template_vars: dict | None = None, logprobs: int | None = None, speculative: str | None = None,
               **sampling) -> ResponseStream:
        """Start a generation for a prompt string (one user turn) or a message list. `logprobs`: record
        each generated token's log-probability and that many alternatives (`stream.decode_run.token_logprobs`).
        `speculative` overrides the model's speculative mode for this generation."""
        self._require_chat()  # an embedding model has no engine, sampling or speculative mode
        samp = self.sampling(**sampling)
        spec = self.speculation(speculative)
        think = self.default_thinking if enable_thinking is None else bool(enable_thinking)
        if raw:
            if not isinstance(prompt, str):
                raise GemmaEdgeError("raw completion takes a text prompt, not messages")
            gen = self.engine.generate(self.tokenize_raw(prompt), samp, max_tokens=max_tokens, grammar=grammar,
                                       logprobs=logprobs, speculation=spec)
            return ResponseStream(gen, None, raw=True)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        schemas = prompt_declarations(tools)
        tokens, tail = self.tokenize_messages(messages, tools=schemas, enable_thinking=think, **(template_vars or {}))
        budget = self._thinking_budget(thinking_budget, tail) if think and thinking_budget is not None else None
        gen = self.engine.generate(tokens, samp, max_tokens=max_tokens, grammar=grammar, intervene=budget,
                                   logprobs=logprobs, speculation=spec)
        parser = StreamParser(self.format, enable_thinking=think, prompt_tail=tail, tools=schemas)
        return ResponseStream(gen, parser, raw=False)

    def speculation(self, speculative: str | None = None) -> Speculation | None:
        """One generation's speculation: the model's mode, or `speculative` for this generation. A draft
        model or MTP drafter is chosen when the model is loaded: "draft:MODEL" / "mtp:DRAFTER" must name the
        loaded one, as loaded, "mtp" means the loaded drafter (a request never makes the model open another file)."""
        mode = self.speculative if speculative is None else resolve_spec(speculative, self.facts)
        mtp_name = mtp_drafter_name(mode)
        if mtp_name is not None and (self._mtp is None or (mtp_name and mode != self.speculative)):
            from gemma_edge.mtp import MtpDrafterError

            loaded = f"it was loaded with {self.speculative!r}" if self._mtp else "it was loaded without one"
            raise MtpDrafterError(f"speculative mode {mode!r} needs an MTP drafter this model did not load ({loaded}): "
                                  "choose it when loading (load(..., speculative='mtp:DRAFTER'), --spec mtp:DRAFTER)")
        if draft_model_name(mode) is not None and mode != self.speculative:
            from gemma_edge.errors import DraftModelError

            loaded = f"it was loaded with {self.speculative!r}" if self._draft else "it was loaded without one"
            raise DraftModelError(f"speculative mode {mode!r} names a draft model this model did not load ({loaded}): "
                                  "choose the draft model when loading (load(..., speculative='draft:MODEL'), "
                                  "--spec draft:MODEL)")
        return make_speculation(mode, self._draft, self._mtp)

    def generate(self, prompt: str | list[dict], **kw) -> Response:
        return self.stream(prompt, **kw).consume()

    def chat(self, messages: list[dict], *, tools=None, execute_tools: bool = False, max_tool_rounds: int = 5,
             **kw) -> Response:
        """One assistant reply to `messages`. With `execute_tools`, Python callables among `tools` are
        run for the calls the model makes and their results fed back, up to `max_tool_rounds` times."""
        history = list(messages)
        return run_tool_loop(self, history, tools=tools, execute_tools=execute_tools,
                             max_tool_rounds=max_tool_rounds, **kw)

    def _thinking_budget(self, budget: int, prompt_tail: str) -> ThinkingBudget:
        syntax = syntax_for(self.format)
        open_id = self.engine.special_id(syntax.channel_open) if syntax.supports_thinking else None
        close_id = self.engine.special_id(syntax.channel_close) if syntax.supports_thinking else None
        if open_id is None or close_id is None:
            raise GemmaEdgeError(f"{self.facts.name} has no thought channel: a thinking budget needs a Gemma 4 model")
        return ThinkingBudget(open_id, close_id, budget, syntax.channel_label,
                              lambda token: self.engine.detokenize([token]),
                              syntax.open_channel_prefill(prompt_tail))

    def close(self) -> None:
        if self._draft is not None:
            self._draft.close()
        if self._mtp is not None:  # its context views the engine's
            self._mtp.close()
            self._mtp = None
        (self._embedder or self.engine).close()


MEDIA_KINDS = {"image", "audio", "video"}
ENCODERS = {"image": "vision", "audio": "audio", "video": "video"}


def load(name_or_path: str | Path | None = None, *, mmproj: str | Path | bool | None = None, **options) -> Model:
    """Load a registry name (None: the default model) or a GGUF path. Options: n_ctx, n_threads,
    n_batch, format (override the detected turn format), rpc, split and supervised (RPC workers, see Model),
    speculative ("auto", "off", "ngram", "draft:MODEL", "mtp:DRAFTER": speculative decoding, see Model).
    `mmproj`: the projector for image/audio input; by default the registry entry's, else
    mmproj-<model stem>.gguf beside the model (none: text only); False loads none."""
    path, entry = resolve(name_or_path)
    return Model(path, entry, mmproj=find_projector(path, entry, mmproj, auto=not options.get("rpc")), **options)


def find_projector(model_path: Path, entry: ModelEntry | None, explicit: str | Path | bool | None,
                   auto: bool = True) -> Path | None:
    """The projector file to load: `explicit` (must exist), else — when `auto` — the registry's,
    else the one beside the model; None when there is none (or `explicit` is False)."""
    if explicit is False:
        return None
    if explicit is not None and explicit is not True:
        path = Path(explicit)
        if not path.is_file():
            raise ModelNotFoundError(f"{path}: no such projector (mmproj) file")
        return path
    if not auto:
        return None
    found = mmproj_path(entry) if entry is not None else None
    if found is None:
        beside = projector_beside(model_path)
        found = beside if beside.is_file() else None
    return found


def warn_base_model(model: Model, stream=sys.stderr) -> None:
    if not model.instruct:
        print(f"note: {model.facts.name} is a base model, not instruction-tuned: it continues text rather "
              "than following instructions, so chat replies may wander", file=stream)
