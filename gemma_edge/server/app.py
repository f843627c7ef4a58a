"""The ASGI application: endpoints, body limits, streaming, disconnects and timeouts around one
loaded model. Mapping between OpenAI JSON and gemma-edge lives in `mapping`; queueing in `jobs`."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gemma_edge.errors import GemmaEdgeError
from gemma_edge.media import Limits
from gemma_edge.sampling import DEFAULT_MAX_TOKENS
from gemma_edge.server import mapping, ollama, schema, webpage
from gemma_edge.server.body import read_json
from gemma_edge.server.media import decode_media, has_media
from gemma_edge.server.errors import RequestError, error_body_for
from gemma_edge.server.grammar import with_grammar
from gemma_edge.server.jobs import FAILED, DONE, Job, Scheduler, as_request_error, job_messages
from gemma_edge.server.security import ApiKey, HostAllowlist, allowed_hosts

log = logging.getLogger("gemma_edge.server")
MEDIA_DECODERS = 2  # requests whose images/audio are decoded at the same time


@dataclass(frozen=True)
class ServerConfig:
    """Limits and policies of one server. `api_key` is kept out of the repr so it never lands in a log."""
    model_id: str
    bind_host: str = "127.0.0.1"
    allow_hosts: tuple[str, ...] = ()
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    timeout_s: float = 600.0
    max_waiting: int = 64
    max_body_bytes: int = 2 << 20
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    max_tokens_limit: int | None = None
    prompt_cache: bool = True
    version: str = "0"
    allow_remote_media: bool = False       # image_url parts may be http(s) URLs the server fetches
    media_limits: Limits = field(default_factory=Limits)

    def __repr__(self) -> str:
        return f"ServerConfig(model_id={self.model_id!r}, bind_host={self.bind_host!r}, api_key={'set' if self.api_key else None})"


def create_app(model, config: ServerConfig) -> Starlette:
    """The server for `model` (a loaded `gemma_edge.api.Model`)."""
    server = Server(model, config)
    routes = [
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/embeddings", server.embeddings, methods=["POST"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
        Route(webpage.PAGE_PATH, webpage.chat_page, methods=["GET"]),
    ]
    routes += ollama.routes(server)
    middleware = [Middleware(HostAllowlist, hosts=allowed_hosts(config.bind_host, config.allow_hosts))]
    if config.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"]))
    if config.api_key is not None:
        middleware.append(Middleware(ApiKey, api_key=config.api_key))
    handlers = {RequestError: _request_error, HTTPException: _http_error, Exception: _unexpected_error}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        server.scheduler.shutdown()

    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)


class Server:
    def __init__(self, model, config: ServerConfig):
        self.model, self.config = model, config
        self.scheduler = Scheduler(config.max_waiting)
        self.created = int(time.time())
        self.decoding = asyncio.Semaphore(MEDIA_DECODERS)

    # -- endpoints ------------------------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        self._refuse_embedding_model()
        body = await read_json(request, self.config.max_body_bytes)
        schema.validate(body, schema.CHAT_REQUEST)
        wanted = with_grammar(mapping.chat_request(body, default_max_tokens=self.config.default_max_tokens,
                                                   max_tokens_limit=self.config.max_tokens_limit,
                                                   call_grammar=self._call_grammar))
        if has_media(wanted.prompt):
            wanted.prompt = await self._decode_media(wanted.prompt)
        return await self._respond(request, wanted, chat=True)

    async def completions(self, request: Request) -> Response:
        self._refuse_embedding_model()
        body = await read_json(request, self.config.max_body_bytes)
        schema.validate(body, schema.COMPLETION_REQUEST)
        wanted = mapping.completion_request(body, default_max_tokens=self.config.default_max_tokens,
                                            max_tokens_limit=self.config.max_tokens_limit)
        return await self._respond(request, wanted, chat=False)

    async def embeddings(self, request: Request) -> Response:
        self._require_embedding_model("/v1/embeddings")
        body = await read_json(request, self.config.max_body_bytes)
        schema.validate(body, schema.EMBEDDING_REQUEST)
        wanted = mapping.embedding_request(body)
        vectors, tokens = await self.embed(wanted.texts, task=wanted.task, dimensions=wanted.dimensions)
        return JSONResponse(mapping.embedding_json(vectors, tokens, base64=wanted.base64, model=self.config.model_id))

    async def embed(self, texts: list[str], *, task: str | None, dimensions: int | None):
        """The embeddings of `texts` and the tokens they took, off the event loop, within the timeout."""
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self.model.embed_with_usage, texts, task=task, dimensions=dimensions),
                self.config.timeout_s)
        except asyncio.TimeoutError:
            raise RequestError("the request timed out while embedding", 504, code="timeout") from None
        except GemmaEdgeError as e:
            raise as_request_error(e) from None

    def _require_embedding_model(self, endpoint: str) -> None:
        if not self.model.embeds:
            raise RequestError(f"{self.config.model_id} is a chat model: it does not embed text; serve an embedding "
                               f"model such as embeddinggemma-300m for {endpoint}", code="model_cannot_embed")

    def _refuse_embedding_model(self) -> None:
        if self.model.embeds:
            raise RequestError(f"{self.config.model_id} is an embedding model: it cannot chat or complete text; "
                               "use POST /v1/embeddings", code="model_cannot_chat")

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.config.model_id, "object": "model", "created": self.created, "owned_by": "gemma-edge",
             "context_length": self.model.n_ctx, "capabilities": webpage.capabilities(self.model)}]})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "busy": self.scheduler.busy, "waiting": self.scheduler.waiting})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(schema.openapi_document(self.config.version))

    def _call_grammar(self, tools: list[dict], parallel: bool) -> str:
        from gemma_edge.parsing import syntax_for
        from gemma_edge.parsing.call_grammar import tool_call_grammar

        return tool_call_grammar(syntax_for(self.model.format), tools, parallel=parallel,
                                 token_id=self.model.engine.special_id)

    async def _decode_media(self, messages: list[dict]) -> list[dict]:
        """Images and audio decoded in a worker thread (a 20 MB image must not stall the event loop),
        a few requests at a time so concurrent uploads cannot pile up decoded pixels."""
        async with self.decoding:
            return await asyncio.to_thread(decode_media, messages, supports=self.model.engine.supports,
                                           allow_remote=self.config.allow_remote_media,
                                           limits=self.config.media_limits)

    # -- generation -----------------------------------------------------------------------------
    def _start(self, wanted: mapping.GenerationRequest) -> Callable:
        """What the generation thread runs first: the prompt is rendered and tokenized there too,
        so nothing touches the model outside the queue."""
        def start():
            if not self.config.prompt_cache:
                self.model.engine.reset()
            return self.model.stream(wanted.prompt, **wanted.model_args)
        return start

    def _job(self, wanted: mapping.GenerationRequest) -> Job:
        return Job(self._start(wanted), stops=wanted.stops, deadline=time.monotonic() + self.config.timeout_s,
                   loop=asyncio.get_running_loop(), max_calls=wanted.max_calls)

    async def run(self, request: Request, wanted: mapping.GenerationRequest):
        """Queue `wanted` and start it. Streaming: `(job, first message)` (a failure before the first
        token raised as a RequestError, so it still gets a status code); otherwise the Outcome.
        A client that disconnects meanwhile cancels the job."""
        job = self._job(wanted)
        gone = asyncio.create_task(_client_gone(request))
        try:
            await _unless_gone(self.scheduler.submit(job), gone, job)
            if wanted.stream:
                first = await _unless_gone(job.next_message(), gone, job)
                if first[0] == FAILED:
                    raise as_request_error(first[1])
                return job, first
            try:
                return await _unless_gone(job.outcome(), gone, job)
            except BaseException as e:
                raise as_request_error(e) from None
        finally:
            gone.cancel()

    async def _respond(self, request: Request, wanted: mapping.GenerationRequest, *, chat: bool) -> Response:
        ids = ResponseIds(("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12), int(time.time()),
                          self.config.model_id)
        choices = mapping.choice_requests(wanted)
        if wanted.stream:
            job, first = await self.run(request, choices[0])
            messages = self._choice_messages(job, first, choices)
            body = _chat_events(messages, ids, wanted) if chat else _completion_events(messages, ids, wanted)
            return StreamingResponse(body, media_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        outcomes = [await self.run(request, choice) for choice in choices]
        if chat:
            call_ids = [[_call_id() for _ in outcome.tool_calls] for outcome in outcomes]
            return JSONResponse(mapping.chat_completion_json(outcomes, completion_id=ids.id, created=ids.created,
                                                             model=ids.model, call_ids=call_ids))
        return JSONResponse(mapping.completion_json(outcomes, prompt=wanted.prompt, completion_id=ids.id,
                                                    created=ids.created, model=ids.model))

    async def _choice_messages(self, job: Job, first, choices: list) -> AsyncIterator[tuple[int, str, object]]:
        """`(choice index, kind, item)` for each choice in turn; the first one is already running."""
        for index, choice in enumerate(choices):
            if index:
                job = self._job(choice)
                try:
                    await self.scheduler.submit(job)
                    first = await job.next_message()
                except RequestError as e:
                    yield index, FAILED, e
                    return
                except BaseException:  # the client went away (Starlette cancels the stream)
                    job.cancel()
                    raise
            async for kind, item in job_messages(job, first):
                yield index, kind, item
                if kind == FAILED:
                    return


@dataclass(frozen=True)
class ResponseIds:
    id: str
    created: int
    model: str


def _call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def _stream_error(error: BaseException) -> str:
    e = as_request_error(error)
    return _sse(e.body())


async def _chat_events(messages: AsyncIterator, ids: ResponseIds,
                       wanted: mapping.GenerationRequest) -> AsyncIterator[str]:
    chunk = lambda delta, index, **kw: mapping.chat_chunk_json(  # noqa: E731
        delta, completion_id=ids.id, created=ids.created, model=ids.model, index=index, **kw)
    outcomes, calls, current = [], 0, -1
    async for index, kind, item in messages:
        if index != current:
            current, calls = index, 0
            yield _sse(chunk({"role": "assistant", "content": ""}, index))
        if kind == "event":
            yield _sse(chunk(mapping.chat_delta(item, tool_index=calls, call_id=_call_id()), index))
            calls += item["type"] == "tool_call"
        elif kind == DONE:
            outcomes.append(item)
            yield _sse(chunk({}, index, finish_reason=item.finish_reason, logprobs=mapping.chat_logprobs_json(item)))
        else:
            yield _stream_error(item)
            return
    if wanted.include_usage:
        yield _sse(mapping.usage_chunk_json(mapping.total_usage(outcomes), completion_id=ids.id, created=ids.created,
                                            model=ids.model, chat=True))
    yield _sse("[DONE]")


async def _completion_events(messages: AsyncIterator, ids: ResponseIds,
                             wanted: mapping.GenerationRequest) -> AsyncIterator[str]:
    chunk = lambda text, index, **kw: mapping.completion_chunk_json(  # noqa: E731
        text, completion_id=ids.id, created=ids.created, model=ids.model, index=index, **kw)
    outcomes = []
    async for index, kind, item in messages:
        if kind == "event":
            yield _sse(chunk(item["text"], index))
        elif kind == DONE:
            outcomes.append(item)
            yield _sse(chunk("", index, finish_reason=item.finish_reason,
                             logprobs=mapping.completion_logprobs_json(item, wanted.prompt)))
        else:
            yield _stream_error(item)
            return
    if wanted.include_usage:
        yield _sse(mapping.usage_chunk_json(mapping.total_usage(outcomes), completion_id=ids.id, created=ids.created,
                                            model=ids.model, chat=False))
    yield _sse("[DONE]")


# -- helpers ------------------------------------------------------------------------------------
async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_gone(awaitable, gone: asyncio.Task, job: Job):
    """Await `awaitable`, unless the client disconnects first: then the job is cancelled."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        job.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    job.cancel()
    raise RequestError("client disconnected", 400, code="client_disconnected")


async def _request_error(request: Request, error: RequestError) -> Response:
    return JSONResponse(error.body(request.url.path), status_code=error.status,
                        headers={"retry-after": "5"} if error.status == 503 else None)


async def _http_error(request: Request, error: HTTPException) -> Response:
    return JSONResponse(error_body_for(request.url.path, str(error.detail), error.status_code),
                        status_code=error.status_code, headers=error.headers)


async def _unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body_for(request.url.path, "internal server error", 500), status_code=500)
