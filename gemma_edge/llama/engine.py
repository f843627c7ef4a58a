"""llama.cpp through llama-cpp-python: load a Gemma GGUF with explicit `EngineSettings` (every default
resolved beforehand by gemma_edge.runtime), tokenize segments safely, generate and stream, and keep the
KV cache across calls so that a new prompt only prefills what is new."""
from __future__ import annotations

import codecs
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

from gemma_edge.errors import ContextOverflowError, GemmaEdgeError, InvalidModelError
from gemma_edge.llama import internals, llama_cpp
from gemma_edge.llama.grammar import compiled_grammar
from gemma_edge.llama.loader import load_llama
from gemma_edge.llama.logs import silence_llama_logs
from gemma_edge.llama.mtmd import MediaChunk, Projector
from gemma_edge.llama.tokenizer import SegmentTokenizer
from gemma_edge.llama.exact import MAX_DRAFT, throwaway_row_needs_logits
from gemma_edge.model import ModelFacts
from gemma_edge.sampling import Sampling
from gemma_edge.speculative import Speculation

PromptItem = Union[int, MediaChunk]  # a token id, or one media input's chunk (many positions)


@dataclass
class Timings:
    prefill_s: float = 0.0
    decode_s: float = 0.0
    first_token_s: float | None = None

    def as_dict(self, prompt_evaluated: int, completion: int) -> dict:
        return {
            "prefill_s": round(self.prefill_s, 4),
            "decode_s": round(self.decode_s, 4),
            "time_to_first_token_s": None if self.first_token_s is None else round(self.first_token_s, 4),
            "prefill_tokens_per_s": round(prompt_evaluated / self.prefill_s, 2) if self.prefill_s > 0 else None,
            "decode_tokens_per_s": round(completion / self.decode_s, 2) if self.decode_s > 0 else None,
        }


@dataclass
class DecodeRun:
    """One decode run (a reply): iterated for its text deltas (special tokens' text kept). After
    iteration: the finish reason, token counts and timings."""
    engine: "Engine"
    prompt_tokens: list[PromptItem]
    sampling: Sampling
    max_tokens: int
    grammar: str | None = None
    intervene: Callable[[list[int]], list[int] | None] | None = None
    logprobs: int | None = None  # record each generated token's log-probability and this many alternatives
    speculation: Speculation | None = None
    finish_reason: str | None = None
    prompt_evaluated: int = 0
    tokens: list[int] = field(default_factory=list)
    # with `logprobs`: per generated token (log-probability, [(alternative id, log-probability), …])
    token_logprobs: list[tuple[float, list[tuple[int, float]]]] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    def __iter__(self) -> Iterator[str]:
        return self.engine._run(self)

    def text(self) -> str:
        return "".join(self)

    def logprob_records(self) -> list[dict]:
        """The recorded log-probabilities as `{"token", "bytes", "logprob", "top_logprobs": [{"token",
        "bytes", "logprob"}, …]}` per generated token (a token's text may be part of a UTF-8 character:
        `bytes` is exact, `token` decoded with replacement)."""
        piece = self.engine.token_piece
        return [{**piece(token), "logprob": logprob,
                 "top_logprobs": [{**piece(other), "logprob": p} for other, p in top]}
                for token, (logprob, top) in zip(self.tokens, self.token_logprobs)]

    @property
    def usage(self) -> dict:
        """Counts in positions: a media chunk counts as the positions it fills."""
        prompt = prompt_positions(self.prompt_tokens)
        usage = {"prompt_tokens": prompt, "prompt_tokens_evaluated": self.prompt_evaluated,
                 "completion_tokens": len(self.tokens), "total_tokens": prompt + len(self.tokens)}
        if self.speculation is not None:
            usage.update(self.speculation.counts())
        return usage


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share (the part of a prompt the KV cache can keep)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prompt_positions(items: Sequence[PromptItem]) -> int:
    """How many context positions a prompt fills (a token is one, a media chunk its n_pos)."""
    return sum(item.n_pos if isinstance(item, MediaChunk) else 1 for item in items)


def position_identities(items: Sequence[PromptItem]) -> list:
    """What sits at each position, for KV-cache reuse: the token id, or (media digest, i)."""
    out: list = []
    for item in items:
        if isinstance(item, MediaChunk):
            out.extend(item.positions())
        else:
            out.append(item)
    return out


def suppress_first(sampler, n_vocab: int, token_ids: Sequence[int]) -> None:
    """Put a logit bias of −inf on `token_ids` at the head of a llama-cpp-python sampler chain, as llama.cpp's
    own sampling does with the model's suppress tokens: they are never picked, and the samplers after it
    (penalties, grammar, top-k/p, temperature) see only the other tokens. llama-cpp-python's chain ignores
    tokenizer.ggml.suppress_tokens, and its chain API only appends, so the chain is rebuilt around the bias."""
    lc = llama_cpp().llama_cpp
    chain = internals.sampler_chain(sampler)
    rest = [lc.llama_sampler_chain_remove(chain, 0) for _ in range(lc.llama_sampler_chain_n(chain))]
    biases = (lc.llama_logit_bias * len(token_ids))(*[lc.llama_logit_bias(int(t), float("-inf")) for t in token_ids])
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(n_vocab, len(token_ids), biases))
    for part in rest:
        lc.llama_sampler_chain_add(chain, part)


@dataclass(frozen=True)
class EngineSettings:
    """What an Engine is loaded with, every default already resolved (gemma_edge.runtime.resolve_settings)."""
    n_ctx: int
    n_threads: int
    n_batch: int
    n_ubatch: int
    mmproj: Path | None = None           # the projector (images/audio through llama.cpp's mtmd)
    rpc: tuple[str, ...] = ()            # RPC workers (host:port) the layers are split across
    split: tuple[float, ...] | None = None  # their shares (this machine first); None: by free memory
    placement: object | None = None      # gemma_edge.rpc.placement.Placement, once the workers are registered here
    extra_buffers: bool | None = None    # llama.cpp's extra weight buffers (load_llama); False: plain, as a worker's
    exact: bool = False                  # exact batches (gemma_edge.llama.exact): speculation cannot change the output
    mtp_drafter: object | None = None    # gemma_edge.mtp.DrafterFacts: the MTP drafter attached at load


class Engine:
    """A loaded model. Not thread-safe by itself: callers serialise through `lock`."""

    def __init__(self, facts: ModelFacts, settings: EngineSettings, *, stop_markers: Sequence[str] = (),
                 verbose: bool = False):
        """With `settings.rpc`, the layers go where `settings.placement` says (gemma_edge.rpc.workers.place);
        a lost worker then aborts this process: gemma_edge.rpc.supervision runs it in a child instead.
        With `settings.exact`, decoding is such that speculation cannot change the output
        (gemma_edge.llama.exact): every decode step evaluates 2..7 rows, weights are not repacked."""
        if settings.rpc and settings.placement is None:
            raise GemmaEdgeError("RPC workers given but the layers are not placed (gemma_edge.rpc.workers.place)")
        self.facts, self.settings = facts, settings
        silence_llama_logs()
        self.placement = settings.placement
        self.n_threads = settings.n_threads
        self.n_ubatch = settings.n_ubatch
        exact = settings.exact
        try:
            self.llm = load_llama(str(self.facts.path), False if exact else settings.extra_buffers,
                                  n_ctx=settings.n_ctx, n_batch=settings.n_batch, n_ubatch=self.n_ubatch,
                                  n_threads=self.n_threads, n_threads_batch=self.n_threads, use_mmap=True,
                                  verbose=verbose,
                                  **(self.placement.llama_options() if self.placement else {}))
        except (ValueError, RuntimeError) as e:
            raise InvalidModelError(f"{self.facts.path}: llama.cpp could not load it ({e})") from None
        self.exact = exact
        self._pad_logits = exact and throwaway_row_needs_logits(self.facts.path)
        self.projector = None
        if settings.mmproj is not None:
            self.projector = Projector(settings.mmproj, self.llm.model, n_threads=self.n_threads)
        self._media_spans: list[tuple[int, MediaChunk]] = []  # (first position, chunk) in the KV cache
        # the row, in the last decode's batch, of the newest cached position (whose logits chose the next
        # token): where a drafter reading the target's hidden states finds them (gemma_edge.llama.mtp)
        self.hidden_row = 0
        self.tokenizer = SegmentTokenizer(self.llm)
        self.n_ctx = settings.n_ctx
        self.lock = threading.RLock()
        self.stop_ids = self._stop_ids(stop_markers)

    def _stop_ids(self, stop_markers: Sequence[str]) -> set[int]:
        """Generation ends at EOS and the model's stop markers (its generation table's: the end of a turn,
        Gemma 4's <|tool_response> after which the runtime supplies the response), plus the caller's
        (those of a turn format chosen over the model's own)."""
        stop_ids = {self.llm.token_eos()}
        for marker in (*self.facts.stop_markers, *stop_markers):
            token = self.special_id(marker)
            if token is not None:
                stop_ids.add(token)
        return stop_ids

    def special_id(self, marker: str) -> int | None:
        ids = self.llm.tokenize(marker.encode("utf-8"), add_bos=False, special=True)
        return ids[0] if len(ids) == 1 else None

    # -- media --------------------------------------------------------------------------------
    def supports(self, kind: str) -> bool:
        """Can this engine take `kind` ("image" or "audio") input?"""
        return self.projector is not None and self.projector.supports(kind)

    def media_chunk(self, media) -> MediaChunk:
        """The prompt item of a `gemma_edge.media.Media` (the projector must support its kind)."""
        if self.projector is None:
            raise GemmaEdgeError(f"{self.facts.name} was loaded without a projector (mmproj): it takes no "
                                 f"{media.kind} input")
        return self.projector.chunk(media)

    # -- tokenization -------------------------------------------------------------------------
    def tokenize(self, segments, media=None) -> list[PromptItem]:
        """Token ids of segments; with `media(part) -> MediaChunk`, media segments become chunks."""
        return self.tokenizer.tokenize(segments, media)

    def token_piece(self, token: int) -> dict:
        """One token's `{"token": text, "bytes": [...]}` (special tokens' text kept)."""
        data = self.llm.detokenize([token], special=True)
        return {"token": data.decode("utf-8", errors="replace"), "bytes": list(data)}

    def detokenize(self, tokens: Sequence[int], special: bool = True) -> str:
        return self.llm.detokenize(list(tokens), special=special).decode("utf-8", errors="replace")

    @property
    def cached_tokens(self) -> list:
        """What the KV cache holds now, one entry per position: the token id, or (media digest, i)."""
        cached = internals.cached_ids(self.llm).tolist()
        for start, chunk in self._media_spans:
            cached[start:start + chunk.n_pos] = chunk.positions()
        return cached

    def reset(self) -> None:
        with self.lock:
            self.llm.reset()
            internals.drop_positions(self.llm, 0)
            self._media_spans = []

    def close(self) -> None:
        with self.lock:
            self._media_spans = []
            if self.projector is not None:
                self.projector.close()
            self.llm.close()

    # -- generation ---------------------------------------------------------------------------
    def generate(self, prompt_tokens: Sequence[PromptItem], sampling: Sampling, *, max_tokens: int = 512,
                 grammar: str | None = None,
                 intervene: Callable[[list[int]], list[int] | None] | None = None,
                 logprobs: int | None = None, speculation: Speculation | None = None) -> DecodeRun:
        """A lazy decode run of a prompt of token ids and media chunks. `intervene(generated_ids)` may
        return tokens to force in next (e.g. a thinking budget closing the thought channel).
        `logprobs`: record each token's log-probability under the model (the raw logits, before
        sampling settings) and the `logprobs` most likely alternatives.
        `speculation`: draft tokens and verify them in batches (gemma_edge.speculative); the engine must be
        `exact`, and then the output is token for token the same as without it. Not combined with a
        grammar or an intervention (both must see each token before the next is chosen) nor with logprobs:
        such a generation decodes one token per step."""
        prompt_tokens = list(prompt_tokens)
        n_prompt = prompt_positions(prompt_tokens)
        if n_prompt >= self.n_ctx:
            raise ContextOverflowError(
                f"prompt is {n_prompt} tokens but the context holds {self.n_ctx} "
                f"(model maximum {self.facts.context_length}); shorten it or raise --ctx-size")
        if not prompt_tokens or isinstance(prompt_tokens[-1], MediaChunk):
            raise GemmaEdgeError("a prompt must end with text (its last token gives the next-token logits)")
        if speculation is not None and not self.exact:
            raise GemmaEdgeError("speculative decoding needs the model loaded for it (--spec ngram, "
                                 "load(..., speculative='ngram')): its decode steps are then evaluated so that "
                                 "drafting cannot change the output")
        if grammar or intervene is not None or logprobs is not None:
            speculation = None
        return DecodeRun(self, prompt_tokens, sampling.validate(), max_tokens, grammar, intervene, logprobs,
                          speculation)

    def _prefill(self, items: list[PromptItem]) -> int:
        """Evaluate what the KV cache lacks of the prompt; returns how many positions were evaluated.
        Reuse stops at the first position that differs, and never inside a media chunk."""
        llm = self.llm
        wanted = position_identities(items)
        # the last prompt token is always evaluated: it gives the logits
        keep = min(common_prefix(self.cached_tokens, wanted), len(wanted) - 1)
        start = 0
        for item in items:  # move `keep` back to the start of a media chunk it falls inside
            size = item.n_pos if isinstance(item, MediaChunk) else 1
            if start + size > keep:
                if start < keep:
                    keep = start
                break
            start += size
        if keep < llm.n_tokens and not internals.drop_positions(llm, keep):
            keep = 0
            self.reset()
        llm.n_tokens = keep
        self._media_spans = [(s, c) for s, c in self._media_spans if s + c.n_pos <= keep]
        position, text = 0, []
        for item in items:
            if position >= keep:
                if isinstance(item, MediaChunk):
                    if text:
                        llm.eval(text)
                        text = []
                    self._eval_media(item)
                else:
                    text.append(item)
            position += item.n_pos if isinstance(item, MediaChunk) else 1
        llm.eval(text)
        self.hidden_row = (len(text) - 1) % llm.n_batch  # eval decodes n_batch tokens at a time
        return len(wanted) - keep

    def _eval_media(self, chunk: MediaChunk) -> None:
        llm = self.llm
        if chunk.non_causal and chunk.n_tokens > self.n_ubatch:
            raise ContextOverflowError(
                f"this {chunk.kind} takes {chunk.n_tokens} positions, attended to all at once, but the batch holds "
                f"{self.n_ubatch} (the context is {self.n_ctx} tokens); raise --ctx-size")
        start = llm.n_tokens
        internals.drop_positions(llm, start)
        end = self.projector.eval(chunk, internals.context_pointer(llm), start, llm.n_batch)
        llm.input_ids[start:end] = -1  # not a token: cached_tokens reads the span's identities instead
        llm.n_tokens = end
        self._media_spans.append((start, chunk))

    def _sampler(self, gen: DecodeRun):
        s = gen.sampling
        self.llm.set_seed(s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little"))
        grammar = compiled_grammar(gen.grammar) if gen.grammar else None
        sampler = internals.new_sampler(self.llm, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
                                        temp=max(s.temperature, 0.0), repeat_penalty=s.repeat_penalty, grammar=grammar)
        if self.facts.suppress_tokens:
            suppress_first(sampler, self.llm.n_vocab(), self.facts.suppress_tokens)
        return sampler

    def _logprobs(self, token: int, top: int, row: int) -> tuple[float, list[tuple[int, float]]]:
        """`token`'s log-probability in the logits of the evaluated batch's `row`, and the `top` most likely."""
        import numpy as np

        from gemma_edge.perplexity import log_softmax

        n_vocab = self.llm.n_vocab()
        logp = log_softmax(internals.logits(self.llm, row))
        best = np.argpartition(-logp, top)[:top] if 0 < top < n_vocab else np.arange(n_vocab if top else 0)
        best = best[np.argsort(-logp[best], kind="stable")]
        return float(logp[token]), [(int(i), float(logp[i])) for i in best]

    def _decode_rows(self, rows: list[int], logits: Sequence[bool]) -> int:
        """Evaluate `rows` at the next positions in one batch (logits where asked); returns their first position."""
        llm = self.llm
        start = llm.n_tokens
        internals.drop_positions(llm, start)
        internals.decode_scored(llm, rows, start, logits)
        return start

    def _keep(self, start: int, tokens: Sequence[int]) -> None:
        """The KV cache keeps `tokens` from `start` on; evaluated rows after them are rolled back out (tail
        removal: also right for sliding-window layers, whose cells are only reused once masked for every
        position still to come)."""
        llm = self.llm
        llm.input_ids[start:start + len(tokens)] = tokens
        llm.n_tokens = start + len(tokens)
        internals.drop_positions(llm, llm.n_tokens)

    def _verify(self, token: int, draft: list[int], sampler) -> tuple[list[int], int]:
        """Evaluate `token` and the drafted tokens after it in one batch, then let the sampler choose at
        each row in turn: the drafts it agrees with are accepted (their KV entries stay), the first token
        it chooses differently (or the one after the whole draft) is returned to be evaluated next."""
        batch = [token, *draft]
        start = self._decode_rows(batch, [True] * len(batch))
        accepted = 0
        chosen = internals.sample(sampler, self.llm, 0)
        while accepted < len(draft) and chosen == draft[accepted]:
            accepted += 1
            chosen = internals.sample(sampler, self.llm, accepted)
        self._keep(start, batch[:accepted + 1])
        self.hidden_row = accepted
        return draft[:accepted], chosen

    def _feed(self, gen: DecodeRun, token: int, context: list[int], sampler) -> tuple[list[int], int | None, int]:
        """Evaluate a chosen token; with speculation, also verify a draft after it. Returns the accepted
        drafts (already in the KV cache), the target's next token when verification chose it, and else the
        row of the evaluated batch whose logits give the next token."""
        llm = self.llm
        if not self.exact:
            llm.eval([token])
            self.hidden_row = 0
            return [], None, -1
        spec = gen.speculation
        draft: list[int] = []
        if spec is not None:
            # drafts fit the context (the last position is never evaluated), the exact rows and max_tokens
            room = min(self.n_ctx - 2 - llm.n_tokens, MAX_DRAFT, gen.max_tokens - len(gen.tokens))
            draft = spec.propose(context, room) if room > 0 else []
        if draft:
            accepted, chosen = self._verify(token, draft, sampler)
            spec.budget.record(len(draft), len(accepted))
            return accepted, chosen, 0
        # one token, and a throwaway row after it so that the batch has two rows (gemma_edge.llama.exact)
        self._keep(self._decode_rows([token, token], [True, self._pad_logits]), [token])
        self.hidden_row = 0
        return [], None, 0

    def _run(self, gen: DecodeRun) -> Iterator[str]:
        with self.lock:
            start = time.perf_counter()
            gen.prompt_evaluated = self._prefill(gen.prompt_tokens)
            gen.timings.prefill_s = time.perf_counter() - start
            sampler = self._sampler(gen)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            decode_start = time.perf_counter()
            llm = self.llm
            base = llm.n_tokens  # the position of the first generated token
            # what a drafter looks up in: the prompt's tokens and the generated ones
            context = [item for item in gen.prompt_tokens if not isinstance(item, MediaChunk)]
            gen.finish_reason = "length"
            fed = 0  # generated tokens that decoding without speculation would have evaluated by now
            try:
                pending: list[int] = []
                accepted: list[int] = []  # verified drafts, already in the KV cache
                chosen: int | None = None  # chosen by the sampler during verification, not evaluated yet
                row = -1  # the row of the last evaluated batch whose logits give the next token
                while len(gen.tokens) < gen.max_tokens:
                    if not pending and gen.intervene is not None:
                        pending = list(gen.intervene(gen.tokens) or ())
                    in_cache = bool(accepted)
                    if in_cache:
                        token = accepted.pop(0)
                    elif chosen is not None:
                        token, chosen = chosen, None
                    elif pending:
                        # A forced token: the sampler (and its grammar) must see it as chosen.
                        token = pending.pop(0)
                        sampler.accept(token)
                    else:
                        token = internals.sample(sampler, llm, row)
                    if gen.timings.first_token_s is None:
                        gen.timings.first_token_s = time.perf_counter() - start
                    if token in self.stop_ids:
                        gen.finish_reason = "stop"
                        break
                    gen.tokens.append(token)
                    if gen.logprobs is not None:
                        gen.token_logprobs.append(self._logprobs(token, gen.logprobs, row))
                    context.append(token)
                    piece = decoder.decode(llm.detokenize([token], special=True))
                    if piece:
                        yield piece
                    if base + len(gen.tokens) >= self.n_ctx:
                        break  # context full: finish_reason stays "length"
                    fed += 1
                    if not in_cache:
                        accepted, chosen, row = self._feed(gen, token, context, sampler)
                tail = decoder.decode(b"", final=True)
                if tail:
                    yield tail
            finally:
                gen.timings.decode_s = time.perf_counter() - decode_start
                if llm.n_tokens > base + fed:
                    # accepted drafts past where the reply ended: the KV cache keeps what decoding without
                    # speculation evaluated, so that the next prompt reuses (and evaluates) the same
                    self._keep(base, gen.tokens[:fed])
