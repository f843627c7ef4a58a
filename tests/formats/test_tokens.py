"""Injection safety on both real vocabularies: the embedded Gemma 3 270M GGUF and the Gemma 4
vocab. Expected ids come from the GGUF's own token types (read with the gguf library) and from
llama.cpp's tokenization of the whole prompt."""
from __future__ import annotations

from collections import Counter

import struct

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from gemma_edge.formats import render_prompt, render_segments  # noqa: E402
from gemma_edge.llama.tokenizer import SegmentTokenizer  # noqa: E402

CONTROL, USER_DEFINED = 3, 4  # GGUF token types


def _gguf_token_table(path):
    """tokenizer.ggml.tokens and .token_type straight from the GGUF key/value header (GGUF v2/v3
    layout; written here rather than with gguf.GGUFReader, which spends ~25 s on the merges)."""
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as f:
        data = f.read(64 << 20)
    pos = 24  # magic, version, tensor count, kv count
    (n_kv,) = struct.unpack_from("<Q", data, 16)

    def string(pos):
        (length,) = struct.unpack_from("<Q", data, pos)
        return data[pos + 8:pos + 8 + length], pos + 8 + length

    def value(kind, pos, keep):
        if kind == 8:
            return string(pos)
        if kind == 9:
            (item_kind, count) = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if item_kind != 8:
                size = struct.calcsize(scalar[item_kind])
                items = struct.unpack_from(f"<{count}{scalar[item_kind]}", data, pos) if keep else None
                return items, pos + size * count
            items = []
            for _ in range(count):
                text, pos = string(pos)
                if keep:
                    items.append(text.decode("utf-8"))
            return items, pos
        size = struct.calcsize(scalar[kind])
        return struct.unpack_from("<" + scalar[kind], data, pos)[0], pos + size

    table = {}
    for _ in range(n_kv):
        key, pos = string(pos)
        (kind,) = struct.unpack_from("<I", data, pos)
        keep = key in (b"tokenizer.ggml.tokens", b"tokenizer.ggml.token_type")
        result, pos = value(kind, pos + 4, keep)
        if keep:
            table[key.decode()] = result
    return table["tokenizer.ggml.tokens"], table["tokenizer.ggml.token_type"]


def _gguf_markers(path):
    """CONTROL and USER_DEFINED tokens per the GGUF file: text -> id, and which are USER_DEFINED."""
    tokens, types = _gguf_token_table(path)
    markers = {t: i for i, (t, kind) in enumerate(zip(tokens, types)) if kind in (CONTROL, USER_DEFINED)}
    user_defined = {t for t, kind in zip(tokens, types) if kind == USER_DEFINED}
    return markers, user_defined


class Vocab:
    def __init__(self, path, formats):
        self.llama = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        self.tokenizer = SegmentTokenizer(self.llama)
        self.markers, self.user_defined = _gguf_markers(str(path))
        self.formats = formats
        self.protected_ids = set(self.tokenizer.protected.values())

    def llama_tokens(self, text, special):
        return self.llama.tokenize(text.encode(), add_bos=False, special=special)


@pytest.fixture(scope="module")
def gemma4_vocab(gemma4_vocab_path):
    return Vocab(gemma4_vocab_path, ["gemma4-small", "gemma4-large"])


@pytest.fixture(scope="module", params=["gemma3-270m", "gemma4"])
def vocab(request):
    if request.param == "gemma3-270m":
        return Vocab(request.getfixturevalue("embedded_model_path"), ["gemma3"])
    return request.getfixturevalue("gemma4_vocab")


def test_protected_is_every_marker_token_of_the_gguf(vocab):
    expected = {text: i for text, i in vocab.markers.items() if not text.isspace()}
    assert vocab.tokenizer.protected == expected


def test_the_threat_is_real(vocab):
    """Without the splitting, llama.cpp turns USER_DEFINED strings in plain text into the token."""
    leaking = [t for t in vocab.user_defined if not t.isspace()
               and vocab.llama_tokens(t, special=False) == [vocab.markers[t]]]
    assert leaking


def test_no_protected_id_comes_out_of_text(vocab):
    protected_ids = set(vocab.tokenizer.protected.values())
    for text in vocab.tokenizer.protected:
        for probe in (text, f"x{text}y", text + text, f" {text}\n{text[:-1]}"):
            ids = vocab.tokenizer.tokenize_text(probe)
            assert not protected_ids & set(ids), (probe, ids)
            assert vocab.llama.detokenize(ids).decode() == probe


def _injected_conversations(text):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {
        "arg": text, "nested": {"k": [text]}, text: 1}}}
    return [
        [{"role": "system", "content": f"sys {text}"}, {"role": "user", "content": f"{text} user"},
         {"role": "assistant", "content": f"a{text}"}, {"role": "user", "content": [{"type": "text", "text": text}]}],
        [{"role": "developer", "content": text}, {"role": "user", "content": text},
         {"role": "assistant", "content": "", "tool_calls": [call]},
         {"role": "tool", "tool_call_id": "c1", "content": f"result {text}"},
         {"role": "assistant", "tool_calls": [call], "tool_responses": [{"name": "f", "response": {"r": text}}]},
         {"role": "assistant", "content": text, "reasoning_content": text}],
    ]


def _check_injection_free(vocab, segments):
    ids = vocab.tokenizer.tokenize(segments)
    emitted = Counter(vocab.tokenizer.protected[s.text] for s in segments if s.special)
    found = Counter(i for i in ids if i in vocab.protected_ids)
    assert found == emitted  # every marker exactly once, nothing else from text


def test_each_marker_segment_is_its_one_token(vocab):
    segments = render_segments(_injected_conversations("x")[1], format=vocab.formats[-1], enable_thinking=True)
    markers = [s for s in segments if s.special]
    assert markers
    for segment in markers:
        assert vocab.tokenizer.tokenize([segment]) == [vocab.markers[segment.text]]


@pytest.mark.slow
def test_markers_in_every_role_and_argument_never_become_tokens(vocab):
    for text in vocab.tokenizer.protected:
        for messages in _injected_conversations(text):
            for format_name in vocab.formats:
                _check_injection_free(vocab, render_segments(messages, format=format_name, enable_thinking=True))


def test_tool_declarations_are_injection_free(gemma4_vocab):
    """Only Gemma 4 declares tools in the prompt."""
    vocab = gemma4_vocab
    for text in vocab.tokenizer.protected:
        tool = {"type": "function", "function": {"name": "f", "description": text, "parameters": {
            "type": "object", "properties": {text: {"type": "string", "description": text, "enum": [text]}},
            "required": [text]}}}
        segments = render_segments([{"role": "user", "content": "hi"}], format="gemma4-large", tools=[tool])
        _check_injection_free(vocab, segments)


CONVERSATIONS = [
    [{"role": "user", "content": "Hello there! How are you?"}],
    [{"role": "system", "content": "Answer in French.\n\nBe brief."},
     {"role": "user", "content": "What is  the  capital of Italy?\n\n\nThanks"},
     {"role": "assistant", "content": "Rome.\tIndeed."}, {"role": "user", "content": "日本語 🙂 été"}],
    [{"role": "user", "content": "Weather?"}, {"role": "assistant", "tool_calls": [
        {"id": "1", "function": {"name": "get", "arguments": {"city": "Paris", "n": [1, 2.5]}}}]},
     {"role": "tool", "tool_call_id": "1", "content": "sunny, 20 °C"}],
]


def test_without_injection_tokens_equal_llama_cpp_on_the_whole_prompt(vocab):
    """Segment-wise tokenization is what llama.cpp makes of the whole prompt with special parsing."""
    tool = {"type": "function", "function": {"name": "get", "description": "Weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    for messages in CONVERSATIONS:
        for format_name in vocab.formats:
            for thinking in (False, True):
                options = {"format": format_name, "enable_thinking": thinking, "tools": [tool]}
                prompt = render_prompt(messages, **options)
                ids = vocab.tokenizer.tokenize(render_segments(messages, **options))
                assert ids == vocab.llama_tokens(prompt, special=True)
                assert ids[0] == vocab.markers["<bos>"]


def test_fragments_and_overlaps_of_markers_never_become_tokens(vocab):
    """Text glued from marker strings, their halves and odd characters (overlapping and nested
    occurrences included) never yields a protected id and always round-trips."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    user_defined = sorted(t for t in vocab.user_defined if not t.isspace())
    pieces = st.one_of(
        st.sampled_from(user_defined), st.sampled_from(user_defined).map(lambda t: t[: len(t) // 2]),
        st.sampled_from(user_defined).map(lambda t: t[len(t) // 2:]), st.sampled_from(["<", "|", ">", "\n", " ", "é"]))

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(st.lists(pieces, max_size=8).map("".join))
    def check(text):
        ids = vocab.tokenizer.tokenize_text(text)
        assert not vocab.protected_ids & set(ids)
        assert vocab.llama.detokenize(ids).decode() == text

    check()
