"""Injection-safe tokenization of rendered segments on a real llama.cpp vocabulary.

Turning special-token parsing off is not enough: llama.cpp still matches USER_DEFINED tokens
in plain text (Gemma 3's `<start_of_image>`, Gemma 4's `<|channel>`, `<|tool_call>`, `<|"|>` …).
So text is cut inside every occurrence of such a token's string before it reaches llama.cpp,
and each piece is tokenized with special parsing off (which already keeps CONTROL tokens out).
Markers the renderer emitted (`Segment.special`) are looked up directly: one id each. A media
segment (`Segment.part`) becomes whatever the caller's `media(part)` returns (the engine's chunk of
embedding positions); without `media` it is its placeholder marker, as the template printed it.

Whitespace-only USER_DEFINED tokens (Gemma 3's "\\n", "\\n\\n", runs of spaces or tabs) are
ordinary text pieces that every Gemma tokenizer produces from plain text; they carry no control
meaning and cannot always be cut ("\\n" is one character), so they are not protected (nor would
a one-character token be: neither Gemma vocabulary has one).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Mapping

from gemma_edge.formats import Segment
from gemma_edge.llama import llama_cpp


class SegmentTokenizer:
    """Tokenizes `Segment`s for one model so that no text can become a control token."""

    def __init__(self, llama) -> None:
        """`llama`: a loaded llama_cpp.Llama (its vocabulary is read once)."""
        self._lc = lc = llama_cpp()
        self._llama = llama  # keeps the model (and so the vocab pointer) alive
        self._vocab = lc.llama_model_get_vocab(llama.model)
        self.protected: dict[str, int] = {}
        matched_in_text = []  # strings llama.cpp matches even with special parsing off
        markers = lc.LLAMA_TOKEN_ATTR_CONTROL | lc.LLAMA_TOKEN_ATTR_USER_DEFINED
        for token in range(lc.llama_vocab_n_tokens(self._vocab)):
            attrs = lc.llama_vocab_get_attr(self._vocab, token)
            if not attrs & markers:
                continue
            text = lc.llama_vocab_get_text(self._vocab, token).decode("utf-8", "replace")
            if len(text) < 2 or text.isspace():
                continue  # ordinary text (see the module docstring); a 1-char string cannot be cut
            self.protected.setdefault(text, token)
            if attrs & lc.LLAMA_TOKEN_ATTR_USER_DEFINED:
                matched_in_text.append(text)
        # Longest first, so the leftmost match is also the longest one starting there.
        matched_in_text.sort(key=len, reverse=True)
        self._matched_in_text = (
            re.compile("|".join(map(re.escape, matched_in_text))) if matched_in_text else None)

    def tokenize_text(self, text: str) -> list[int]:
        """Plain text: never yields a protected id. Text without protected strings tokenizes
        exactly as llama.cpp would tokenize it."""
        pattern = self._matched_in_text
        if pattern is None:
            return self._tokenize(text, special=False)
        ids: list[int] = []
        start = 0
        while True:
            match = pattern.search(text, start)
            if match is None:
                break
            # cut just after the first character of the occurrence: neither side contains it
            cut = match.start() + 1
            ids += self._tokenize(text[start:cut], special=False)
            start = cut
        ids += self._tokenize(text[start:], special=False)
        return ids

    def tokenize(self, segments: Iterable[Segment], media: Callable[[Mapping], Any] | None = None) -> list:
        """Whole prompt: markers as their control token, text through `tokenize_text`, media
        segments through `media` (when given)."""
        ids: list = []
        protected = self.protected
        for segment in segments:
            if media is not None and segment.is_media:
                ids.append(media(segment.part))
            elif segment.special:
                token = protected.get(segment.text)
                ids += [token] if token is not None else self._tokenize(segment.text, special=True)
            else:
                ids += self.tokenize_text(segment.text)
        return ids

    def _tokenize(self, text: str, special: bool) -> list[int]:
        if not text:
            return []
        data = text.encode("utf-8")
        capacity = len(data) + 8  # a token covers at least one byte
        buffer = (self._lc.llama_token * capacity)()
        count = self._lc.llama_tokenize(self._vocab, data, len(data), buffer, capacity, False, special)
        if count < 0:
            raise RuntimeError(f"llama.cpp could not tokenize {len(data)} bytes (needs {-count} tokens)")
        return buffer[:count]


__all__ = ["SegmentTokenizer"]
