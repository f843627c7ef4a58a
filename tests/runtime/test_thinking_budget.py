"""The thinking budget's counting on real Gemma 4 token ids (the real vocabulary): where it forces
`<channel|>` for a given output, and that what it lets through parses as the budget promises."""
from __future__ import annotations

import pytest

from gemma_edge.api import ThinkingBudget
from gemma_edge.parsing import parse_response, syntax_for

SYNTAX = syntax_for("gemma4")


@pytest.fixture(scope="module")
def vocab(gemma4_vocab_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(str(gemma4_vocab_path), vocab_only=True, verbose=False)


def tokens_of(vocab, text: str) -> list[int]:
    return vocab.tokenize(text.encode(), add_bos=False, special=True)


def text_of(vocab, tokens: list[int]) -> str:
    return vocab.detokenize(tokens, special=True).decode("utf-8", "replace")


def run_budget(vocab, ids: list[int], budget: int, prompt_tail: str = "<|turn>model\n") -> list[int]:
    """Replay the model's tokens through the budget as the engine does (ask before each token; a
    forced token replaces the model's, then the model would answer); return what was generated."""
    open_id, close_id = (vocab.tokenize(m.encode(), add_bos=False, special=True)[0]
                         for m in (SYNTAX.channel_open, SYNTAX.channel_close))
    intervene = ThinkingBudget(open_id, close_id, budget, SYNTAX.channel_label, lambda t: text_of(vocab, [t]),
                               SYNTAX.open_channel_prefill(prompt_tail))
    generated: list[int] = []
    for token in ids:
        forced = intervene(generated)
        if forced:
            return generated + forced
        generated.append(token)
    return generated


def label_end(vocab, ids: list[int]) -> int:
    """Index of the first token after `<|channel>` that is not part of the label `thought\n`
    (a token running past the label counts as thinking)."""
    for end in range(2, len(ids) + 1):
        text = text_of(vocab, ids[1:end])
        if text.startswith(SYNTAX.channel_label):
            return end if text == SYNTAX.channel_label else end - 1
    raise AssertionError("no label")


def test_budget_zero_closes_right_after_the_label_name(vocab):
    text = text_of(vocab, run_budget(vocab, tokens_of(vocab, "<|channel>thought\nLet me think.<channel|>A."), 0))
    assert text == "<|channel>thought<channel|>"
    assert parse_response(text + "Answer.", format="gemma4", enable_thinking=True)["thinking"] is None


@pytest.mark.parametrize("budget", [1, 2, 5])
def test_budget_counts_tokens_after_the_label(vocab, budget):
    ids = tokens_of(vocab, "<|channel>thought\nLet me think about it carefully.<channel|>Answer.")
    got = run_budget(vocab, ids, budget)
    first = label_end(vocab, ids)
    assert got == ids[:first + budget] + got[-1:] and text_of(vocab, got[-1:]) == "<channel|>"
    thinking = parse_response(text_of(vocab, got), format="gemma4", enable_thinking=True)["thinking"]
    assert thinking == text_of(vocab, ids[first:first + budget]).strip()


def test_a_block_without_the_label_counts_from_the_opener(vocab):
    ids = tokens_of(vocab, "<|channel>thoughtful words here<channel|>")
    got = run_budget(vocab, ids, 2)
    assert got == ids[:3] + got[-1:] and text_of(vocab, got[-1:]) == "<channel|>"


def test_prompt_that_wrote_the_label_counts_from_the_start(vocab):
    ids = tokens_of(vocab, "Plenty to think about.<channel|>Answer.")
    assert text_of(vocab, run_budget(vocab, ids, 0, prompt_tail="<|turn>model\n<|channel>thought\n")) == "<channel|>"
    got = run_budget(vocab, ids, 2, prompt_tail="<|turn>model\n<|channel>thought")
    assert got == ids[:2] + got[-1:] and text_of(vocab, got[-1:]) == "<channel|>"
