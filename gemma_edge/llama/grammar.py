"""GBNF grammars through llama-cpp-python: the grammar forcing JSON output (any object, or JSON that
matches a JSON Schema), and a grammar text compiled for the sampler."""
from __future__ import annotations

import json

from gemma_edge.errors import GemmaEdgeError
from gemma_edge.llama import llama_cpp


class GrammarError(GemmaEdgeError):
    """A JSON Schema llama-cpp-python's converter cannot turn into a grammar."""


def json_grammar(schema: dict | None) -> str:
    """GBNF forcing a JSON object (`schema` None) or JSON matching `schema`."""
    grammars = llama_cpp().llama_grammar
    if schema is None:
        return grammars.JSON_GBNF
    try:
        return grammars.json_schema_to_gbnf(json.dumps(schema))
    except (ValueError, KeyError, TypeError, AttributeError, NotImplementedError, RecursionError, AssertionError) as e:
        raise GrammarError(str(e)) from None


def compiled_grammar(text: str):
    """A GBNF text parsed for llama-cpp-python's sampler (`internals.new_sampler(grammar=…)`)."""
    return llama_cpp().LlamaGrammar.from_string(text, verbose=False)
