"""An OpenAI-compatible HTTP server for one local Gemma model (`gemma-edge serve`).

    from gemma_edge.server import ServerConfig, create_app
    app = create_app(gemma_edge.load(), ServerConfig(model_id="gemma-3-270m"))   # any ASGI server runs it

Needs the `serve` extra (Starlette, uvicorn).
"""
from gemma_edge.server.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
