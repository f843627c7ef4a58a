"""The forced-call grammar (`parsing.call_grammar`): for any tool schema the server accepts, it is
either refused with a SchemaError or parsed by llama.cpp's own grammar parser (an unparsable grammar
would reach the sampler as NULL); and what it forces is what the parser reads back."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gemma_edge.parsing import parse_response, syntax_for
from gemma_edge.parsing.call_grammar import SchemaError, gbnf_literal, tool_call_grammar
from tests.server.strategies import ANY_JSON, texts

TYPES = ["string", "integer", "number", "boolean", "null", "object", "array"]
counts = st.none() | st.integers(0, 300)


def _node(children: st.SearchStrategy) -> st.SearchStrategy:
    keyed = st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1, max_size=3),
        "enum": st.lists(ANY_JSON, max_size=3), "const": ANY_JSON, "maxLength": counts, "minItems": counts,
        "maxItems": counts, "items": children, "nullable": st.booleans(),
        "properties": st.dictionaries(texts(max_size=8), children, max_size=3),
        "required": st.lists(texts(max_size=8), max_size=3), "anyOf": st.lists(children, max_size=2)})
    return keyed | ANY_JSON


SCHEMAS = st.recursive(st.just({}) | st.builds(lambda t: {"type": t}, st.sampled_from(TYPES)), _node, max_leaves=8)


@pytest.fixture(scope="module")
def vocab(embedded_model_path):
    from gemma_edge.llama import llama_cpp

    return llama_cpp().Llama(str(embedded_model_path), vocab_only=True, verbose=False)


def parses(llm, grammar: str) -> bool:
    lc = __import__("llama_cpp")
    sampler = lc.llama_sampler_init_grammar(llm._model.vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        return False
    lc.llama_sampler_free(sampler)
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(parameters=SCHEMAS, parallel=st.booleans(), family=st.sampled_from(["gemma4", "functiongemma"]),
       token_ids=st.booleans())
def test_every_grammar_parses_in_llama_cpp_or_is_refused(vocab, parameters, parallel, family, token_ids):
    from gemma_edge.server.errors import RequestError
    from gemma_edge.server.mapping import tools_from_openai

    try:  # the server refuses unpaired surrogates when it reads the body
        json.dumps(parameters, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return
    try:
        tools = tools_from_openai([{"type": "function", "function": {"name": "f", "parameters": parameters}}])
    except RequestError:
        return  # the server refuses the tool before any grammar
    try:
        grammar = tool_call_grammar(syntax_for(family), tools, parallel=parallel,
                                    token_id=(lambda m: 7) if token_ids else (lambda m: None))
    except SchemaError:
        return
    assert parses(vocab, grammar), grammar


def test_refusals():
    for parameters in ({"type": "object", "properties": {"a": {"$ref": "#/x"}}},
                       {"type": "object", "properties": {"a": {"enum": []}}},
                       {"type": "object", "properties": {"a": {"type": "array", "minItems": 3, "maxItems": 1}}}):
        tools = [{"type": "function", "function": {"name": "f", "parameters": parameters}}]
        with pytest.raises(SchemaError):
            tool_call_grammar(syntax_for("gemma4"), tools, parallel=False, token_id=lambda m: None)
    with pytest.raises(SchemaError):
        tool_call_grammar(syntax_for("gemma3"), [{"type": "function", "function": {"name": "f"}}], parallel=False,
                          token_id=lambda m: None)


def test_gbnf_literal_escapes():
    assert gbnf_literal('a"b\\c\nd\te\x01é') == '"a\\"b\\\\c\\nd\\te\\x01é"'


def accepts(llm, grammar: str, text: str) -> bool:
    """Does llama.cpp's grammar sampler let `text` (as the vocabulary tokenizes it) through, and then
    allow the end of generation?"""
    import ctypes

    import numpy as np

    from llama_cpp._internals import LlamaTokenDataArray

    lc = __import__("llama_cpp")
    sampler = lc.llama_sampler_init_grammar(llm._model.vocab, grammar.encode("utf-8"), b"root")
    candidate = LlamaTokenDataArray(n_vocab=1)  # one candidate at a time: the grammar masks it or not
    try:
        for token in [*llm.tokenize(text.encode("utf-8"), add_bos=False, special=False), llm.token_eos()]:
            candidate.copy_logits(np.zeros(1, dtype=np.single))
            candidate.candidates_data.id[0] = token
            lc.llama_sampler_apply(sampler, ctypes.byref(candidate.candidates))
            if not np.isfinite(candidate.candidates_data.logit[0]):
                return False
            lc.llama_sampler_accept(sampler, token)
        return True
    finally:
        lc.llama_sampler_free(sampler)


WEATHER = {"type": "object", "required": ["city"], "properties": {
    "city": {"type": "string"}, "days": {"type": "array", "items": {"type": "integer"}},
    "unit": {"enum": ["c", "f"]}, "exact": {"type": "boolean"}}}


@pytest.mark.parametrize("format", ["gemma4-small", "functiongemma"])
@pytest.mark.parametrize("arguments, accepted", [
    ({"city": "Paris", "days": [1, 2]}, True),
    ({"city": "Paris", "unit": "f", "exact": False}, True),
    ({"city": "Paris", "days": []}, True),
    ({"days": [1]}, False),            # a required property is missing
    ({"city": "Paris", "unit": "k"}, False),  # not in the enum
    ({"city": "Paris", "days": [1.5]}, False),  # not an integer
    ({"city": 3}, False),              # not a string
])
def test_the_grammar_accepts_exactly_the_calls_the_template_writes_for_valid_arguments(vocab, format, arguments,
                                                                                       accepted):
    """The template's own rendering of a call (markers as text: the embedded vocabulary has no Gemma 4
    tokens) is in the grammar's language when its arguments match the schema, and the parser reads
    it back."""
    from gemma_edge.formats import render_prompt

    call = {"type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    syntax = syntax_for(format)
    rendered = render_prompt([{"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "", "tool_calls": [call]}], format=format)
    block = rendered[rendered.index(syntax.call_open):rendered.index(syntax.call_close) + len(syntax.call_close)]
    assert parse_response(block, format=format)["tool_calls"] == [call]
    grammar = tool_call_grammar(syntax, [{"type": "function", "function": {"name": "get_weather",
                                                                          "parameters": WEATHER}}],
                                parallel=False, token_id=lambda m: None)
    assert accepts(vocab, grammar, block) is accepted
    assert not accepts(vocab, grammar, block + block)  # one call only
    parallel = tool_call_grammar(syntax, [{"type": "function", "function": {"name": "get_weather",
                                                                           "parameters": WEATHER}}],
                                 parallel=True, token_id=lambda m: None)
    assert accepts(vocab, parallel, block + block) is accepted
