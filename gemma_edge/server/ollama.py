"""Ollama-compatible endpoints (`/api/chat`, `/api/generate`, `/api/tags`, `/api/show`, `/api/ps`,
`/api/version`, `/api/embed`) on the same server, queue and security as the OpenAI ones. Mapping lives in
`ollama_mapping`; errors answer in Ollama's shape, `{"error": "..."}` (`errors.RequestError.body` picks
it for paths under /api/), also as the last line of a broken stream.
"""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gemma_edge.server import ollama_mapping as om, schema, webpage
from gemma_edge.server.body import read_json
from gemma_edge.server.errors import RequestError
from gemma_edge.server.grammar import with_grammar
from gemma_edge.server.jobs import DONE, as_request_error, job_messages
from gemma_edge.server.media import has_media

if TYPE_CHECKING:
    from gemma_edge.server.app import Server

# Ollama endpoints this server does not offer: managing a model store (the server runs one model,
# loaded at start)
NOT_SUPPORTED = {"/api/pull": "POST", "/api/push": "POST", "/api/create": "POST", "/api/copy": "POST",
                 "/api/delete": "DELETE", "/api/blobs/{digest}": "POST"}
NEVER_EXPIRES = "9999-12-31T23:59:59Z"  # the model stays loaded as long as the server runs


def routes(server: Server) -> list[Route]:
    api = OllamaApi(server)
    return [
        Route("/api/chat", api.chat, methods=["POST"]),
        Route("/api/generate", api.generate, methods=["POST"]),
        Route("/api/tags", api.tags, methods=["GET"]),
        Route("/api/show", api.show, methods=["POST"]),
        Route("/api/ps", api.ps, methods=["GET"]),
        Route("/api/version", api.version, methods=["GET"]),
        Route("/api/embed", api.embed, methods=["POST"]),
        Route("/api/embeddings", api.embeddings, methods=["POST"]),
        *[Route(path, _not_supported, methods=[method]) for path, method in NOT_SUPPORTED.items()],
    ]


async def _not_supported(request: Request) -> Response:
    raise RequestError(f"{request.url.path} is not supported yet: gemma-edge serve runs the one model it was "
                       "started with (manage models with the gemma-edge CLI)", 400)


def _ndjson(payload: dict) -> str:
    """One line; ASCII-only, so no character in the text (U+0085, U+2028) can look like a line break to a
    client that splits lines the way Python's str.splitlines does."""
    return json.dumps(payload) + "\n"


class OllamaApi:
    def __init__(self, server: Server):
        self.server = server

    @property
    def _name(self) -> str:
        return self.server.config.model_id

    # -- generation -----------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        return await self._generation(request, chat=True)

    async def generate(self, request: Request) -> Response:
        return await self._generation(request, chat=False)

    async def _generation(self, request: Request, *, chat: bool) -> Response:
        started = time.perf_counter()
        self.server._refuse_embedding_model()
        config = self.server.config
        body = await read_json(request, config.max_body_bytes)
        schema.validate(body, schema.OLLAMA_CHAT_REQUEST if chat else schema.OLLAMA_GENERATE_REQUEST)
        name = body.get("model") or self._name
        om.check_capabilities(body, self.server.model.turn_format, self._name)
        if om.is_load_request(body, chat):
            return JSONResponse(om.load_json(name, chat))
        to_request = om.chat_request if chat else om.generate_request
        wanted = with_grammar(to_request(body, n_ctx=self.server.model.n_ctx,
                                         default_max_tokens=config.default_max_tokens,
                                         max_tokens_limit=config.max_tokens_limit))
        if has_media(wanted.prompt):
            wanted.prompt = await self.server._decode_media(wanted.prompt)
        done = om.chat_done_json if chat else om.generate_done_json
        if not wanted.stream:
            outcome = await self.server.run(request, wanted)
            return JSONResponse(done(name, outcome, time.perf_counter() - started, whole=True))
        job, first = await self.server.run(request, wanted)
        return StreamingResponse(self._lines(job, first, name, started, chat=chat),
                                 media_type="application/x-ndjson", headers={"cache-control": "no-cache"})

    async def _lines(self, job, first, name: str, started: float, *, chat: bool) -> AsyncIterator[str]:
        calls = 0
        async for kind, item in job_messages(job, first):
            if kind == "event":
                line = om.chat_chunk_json(name, item, tool_index=calls) if chat else om.generate_chunk_json(name, item)
                calls += item["type"] == "tool_call"
                if line is not None:
                    yield _ndjson(line)
            elif kind == DONE:
                done = om.chat_done_json if chat else om.generate_done_json
                yield _ndjson(done(name, item, time.perf_counter() - started, whole=False))
            else:
                yield _ndjson({"error": as_request_error(item).message})

    # -- embeddings -----------------------------------------------------------------------------
    async def embed(self, request: Request) -> Response:
        """Ollama's /api/embed: a string or a list in, unit-length vectors out (EmbeddingGemma's default
        task prompt, as /v1/embeddings)."""
        started = time.perf_counter()
        self.server._require_embedding_model("/api/embed")
        body = await read_json(request, self.server.config.max_body_bytes)
        schema.validate(body, schema.OLLAMA_EMBED_REQUEST)
        texts = [body["input"]] if isinstance(body["input"], str) else list(body["input"])
        vectors, tokens = await self.server.embed(texts, task=None, dimensions=body.get("dimensions"))
        return JSONResponse(om.embed_json(body.get("model") or self._name, vectors, tokens,
                                          time.perf_counter() - started))

    async def embeddings(self, request: Request) -> Response:
        """Ollama's older /api/embeddings: one `prompt`, one `embedding`."""
        self.server._require_embedding_model("/api/embeddings")
        body = await read_json(request, self.server.config.max_body_bytes)
        schema.validate(body, schema.OLLAMA_EMBEDDINGS_REQUEST)
        vectors, _ = await self.server.embed([body["prompt"]], task=None, dimensions=None)
        return JSONResponse({"embedding": [float(v) for v in vectors[0]]})

    # -- the model ------------------------------------------------------------------------------
    def _model_json(self) -> dict:
        entry = self.server.model.entry
        digest = (entry.sha256 or "") if entry else ""
        return om.model_json(self._name, self.server.model.facts, digest)

    async def tags(self, request: Request) -> Response:
        return JSONResponse({"models": [self._model_json()]})

    async def ps(self, request: Request) -> Response:
        return JSONResponse({"models": [{**self._model_json(), "expires_at": NEVER_EXPIRES, "size_vram": 0,
                                         "context_length": self.server.model.n_ctx}]})

    async def show(self, request: Request) -> Response:
        body = await read_json(request, self.server.config.max_body_bytes)
        schema.validate(body, schema.OLLAMA_SHOW_REQUEST)
        model = self.server.model
        facts = model.facts
        sampling = model.default_sampling
        parameters = "\n".join(f"{key:<15}{getattr(sampling, key)}" for key in
                               ("temperature", "top_k", "top_p", "min_p", "repeat_penalty"))
        return JSONResponse({
            "modelfile": f"# gemma-edge serves {facts.path.name}; its turn format is {model.format}\n",
            "parameters": parameters, "template": "", "details": om.details_json(facts),
            "model_info": {"general.architecture": facts.architecture, "general.parameter_count": facts.parameters,
                           f"{facts.architecture}.context_length": facts.context_length},
            "capabilities": om.capabilities(webpage.capabilities(model)),
            "modified_at": om.model_json(self._name, facts, "")["modified_at"]})

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": self.server.config.version})
