"""A real server process for tests whose model output is forced by a GBNF grammar given to the
library (never exposed over HTTP). Random tiny models cannot choose to think or call a tool; forced
output lets the whole path — real llama.cpp sampling, the real parser, the server's mapping and the
openai client — be checked against text we wrote.

    python -m tests.server.forced_server MODEL.gguf GRAMMAR_FILE
"""
from __future__ import annotations

import sys
from pathlib import Path

from gemma_edge.api import Model
from gemma_edge.server import ServerConfig, create_app
from gemma_edge.server.run import bind_socket, serve_app


def main(model_path: str, grammar_path: str) -> None:
    grammar = Path(grammar_path).read_text()
    model = Model(Path(model_path), n_threads=1)  # the whole (small) context
    free_stream = model.stream
    # A request without a seed gets seed 0: the grammar fixes the text, not how it is cut into tokens, and
    # an unlucky sampled cut (e.g. a marker spelled a character at a time) outgrows the tiny context.
    model.stream = lambda prompt, **kw: free_stream(
        prompt, **{**kw, "grammar": grammar, "seed": 0 if kw.get("seed") is None else kw["seed"]})
    app = create_app(model, ServerConfig(model_id="forced"))
    serve_app(app, bind_socket("127.0.0.1", 0), model_id="forced")


if __name__ == "__main__":
    main(*sys.argv[1:])
