"""The engine on the real embedded Gemma 3 270M through the real llama.cpp."""
from __future__ import annotations

import pytest

from gemma_edge.errors import ContextOverflowError, InsufficientMemoryError
from gemma_edge.formats import Segment

from gemma_edge.llama.engine import common_prefix

GREEDY = {"temperature": 0, "max_tokens": 24}


def test_greedy_matches_llama_cpp_python_own_loop(model, embedded_model_path):
    """Oracle: llama-cpp-python's own greedy `generate` on a separate context, same prompt tokens."""
    import llama_cpp

    tokens = model.tokenize_raw("The three primary colours are")
    ours = model.engine.generate(tokens, model.sampling(temperature=0), max_tokens=16)
    ours.text()
    reference = llama_cpp.Llama(str(embedded_model_path), n_ctx=256, verbose=False)
    expected = []
    for token in reference.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0):
        if token == reference.token_eos() or len(expected) == 16:
            break
        expected.append(token)
    assert ours.tokens == expected


def test_greedy_is_deterministic_across_cache_states(model, embedded_model_path):
    from gemma_edge.api import Model

    first = model.generate("Tell me about the sea.", **GREEDY)
    again = model.generate("Tell me about the sea.", **GREEDY)  # prompt fully in the KV cache now
    model.engine.reset()
    cold = model.generate("Tell me about the sea.", **GREEDY)
    other = Model(embedded_model_path, n_ctx=512).generate("Tell me about the sea.", **GREEDY)
    assert first.content == again.content == cold.content == other.content
    assert again.usage["prompt_tokens_evaluated"] == 1  # only the last prompt token, for its logits
    assert cold.usage["prompt_tokens_evaluated"] == cold.usage["prompt_tokens"]


def test_second_chat_turn_evaluates_only_new_tokens(model):
    from gemma_edge.chat import Chat

    model.engine.reset()
    chat = Chat(model, system="You are terse.", temperature=0, max_tokens=16)
    first = chat.send("Name a colour.")
    prompt1, _ = model.tokenize_messages(chat.messages[:-1])
    cached = model.engine.cached_tokens
    assert cached[:len(prompt1)] == prompt1
    second = chat.send("Name another one.")
    prompt2, _ = model.tokenize_messages(chat.messages[:-1])
    reused = common_prefix(cached, prompt2)
    assert reused >= len(prompt1)  # all of turn 1's prompt came from the cache
    assert second.usage["prompt_tokens"] == len(prompt2)
    assert second.usage["prompt_tokens_evaluated"] == len(prompt2) - reused
    assert first.usage["prompt_tokens_evaluated"] == len(prompt1)


def test_chat_longer_than_context_keeps_working_and_keeps_system(small_context_model):
    from gemma_edge.chat import Chat

    notices = []
    chat = Chat(small_context_model, system="SYSTEM-RULES: be brief.", temperature=0, max_tokens=24,
                on_notice=notices.append)
    for i in range(12):
        reply = chat.send(f"Question number {i}: tell me something about the number {i}.")
        assert reply.usage["prompt_tokens"] + reply.usage["completion_tokens"] <= small_context_model.n_ctx
        prompt = "".join(s.text for s in small_context_model.render(chat.messages[:-1]))
        assert "SYSTEM-RULES: be brief." in prompt
    assert chat.messages[0] == {"role": "system", "content": "SYSTEM-RULES: be brief."}
    assert notices and "kept the system prompt" in notices[0]
    assert chat.messages[1]["role"] == "user" and "number 0" not in chat.messages[1]["content"]


def test_prompt_longer_than_context_is_refused_with_both_lengths(small_context_model):
    with pytest.raises(ContextOverflowError) as err:
        small_context_model.generate("word " * 400, max_tokens=4)
    assert "256" in str(err.value) and "tokens" in str(err.value)


def test_end_of_turn_token_stops_generation(model):
    """Force a token then <end_of_turn>: generation stops there and the marker is not in the text."""
    end = model.engine.special_id("<end_of_turn>")
    word = model.engine.tokenize([Segment(" hello", False)])
    forced = iter([word, [end]])
    gen = model.engine.generate(model.tokenize_raw("Say hello:"), model.sampling(temperature=0), max_tokens=10,
                                intervene=lambda generated: next(forced, None))
    text = gen.text()
    assert gen.finish_reason == "stop"
    assert gen.tokens == word and text == " hello"


def test_model_that_does_not_fit_is_refused_before_loading(embedded_model_path, monkeypatch):
    from gemma_edge.api import Model

    monkeypatch.setenv("GEMMA_EDGE_MAX_MEMORY", "64M")
    with pytest.raises(InsufficientMemoryError) as err:
        Model(embedded_model_path, n_ctx=512)
    assert "smaller quantization" in str(err.value)


def test_stream_events_reassemble_to_response(model):
    stream = model.stream("Count to five.", temperature=0, max_tokens=20)
    text = "".join(e["text"] for e in stream if e["type"] == "content")
    assert text.strip() == stream.response.content
    assert stream.response.usage["completion_tokens"] == 20
    assert stream.response.finish_reason == "length"


def test_seeded_sampling_is_reproducible(model):
    # From the same KV-cache state: llama.cpp's logits depend (slightly) on how the prompt was split
    # into batches, so a sampled continuation is reproducible only for the same split.
    def sample(seed):
        model.engine.reset()
        return model.generate("Once upon a time", raw=True, temperature=1.0, seed=seed, max_tokens=16).content

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_defaults_follow_doctor_and_shrink_the_context_when_ram_is_short(embedded_model_path, monkeypatch):
    from gemma_edge.api import Model
    from gemma_edge.doctor import recommended_runtime
    from gemma_edge.memory import RUNTIME_OVERHEAD

    from gemma_edge.model import read_model_facts

    facts = read_model_facts(embedded_model_path)
    between = facts.weights_bytes + RUNTIME_OVERHEAD + facts.kv_bytes_per_token * 3000  # fits 2048, not 4096
    monkeypatch.setenv("GEMMA_EDGE_MAX_MEMORY", str(between))
    recommended = recommended_runtime(facts)
    model = Model(embedded_model_path)
    assert (model.n_ctx, model.engine.n_threads) == (recommended["n_ctx"], recommended["n_threads"])
    assert model.n_ctx == 2048
