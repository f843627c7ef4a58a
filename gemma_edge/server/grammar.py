"""The server's edge between a mapped request and llama.cpp's grammars: the JSON output a request asks
for (`mapping.JsonOutput`, pure) compiled into a GBNF grammar through gemma_edge.llama before the
request is queued, so a schema llama.cpp cannot use is refused with a status code."""
from __future__ import annotations

from dataclasses import replace

from gemma_edge.llama.grammar import GrammarError, json_grammar
from gemma_edge.server import mapping
from gemma_edge.server.errors import RequestError


def with_grammar(wanted: mapping.GenerationRequest) -> mapping.GenerationRequest:
    """`wanted` with its JSON output request (`mapping.JsonOutput`) turned into a llama.cpp grammar; a schema
    that cannot become one is a RequestError on the field it came from."""
    output = wanted.model_args.get("grammar")
    if not isinstance(output, mapping.JsonOutput):
        return wanted
    try:
        grammar = json_grammar(output.schema)
    except GrammarError as e:
        raise RequestError(f"{output.param}: cannot be turned into a grammar ({e})", param=output.param) from None
    return replace(wanted, model_args={**wanted.model_args, "grammar": grammar})
