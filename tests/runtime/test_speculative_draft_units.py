"""Draft models (`--spec draft:MODEL`) before any model runs: the mode's syntax, the greedy drafting
policy, and the pair checks (vocabulary, size, embedding models, memory) on GGUF headers."""
from __future__ import annotations

from pathlib import Path

import pytest

from gemma_edge.draft_pair import check_draft_pair, check_pair_fits, vocabulary_difference
from gemma_edge.errors import DraftModelError, GemmaEdgeError, InsufficientMemoryError
from gemma_edge.gguf_file import GGUFFile
from gemma_edge.model import read_model_facts
from gemma_edge.speculative import ModelDrafter, draft_model_name, make_speculation, parse_spec

NORMAL, CONTROL, BYTE = 1, 3, 6


@pytest.mark.parametrize("value, mode", [
    ("draft:gemma-3-270m", "draft:gemma-3-270m"),
    (" Draft:/models/My Model.gguf ", "draft:/models/My Model.gguf"),  # the path keeps its case and spaces
    ("NGRAM", "ngram"),
])
def test_parse_spec_accepts_a_draft_model(value, mode):
    assert parse_spec(value) == mode


def test_draft_mode_names_its_model_and_needs_it_loaded():
    assert draft_model_name("draft:gemma-3-1b-it") == "gemma-3-1b-it"
    assert draft_model_name("ngram") is None
    with pytest.raises(GemmaEdgeError, match="names no draft model"):
        parse_spec("draft: ")
    with pytest.raises(GemmaEdgeError, match="draft:MODEL"):
        parse_spec("draft")
    with pytest.raises(GemmaEdgeError, match="needs its draft model loaded"):
        make_speculation("draft:gemma-3-1b-it")


class ScriptedModel:
    """A draft model whose next token and its probability are looked up in a table by the last token."""

    def __init__(self, table: dict[int, tuple[int, float]], n_ctx: int = 64):
        self.table, self.n_ctx, self.tokens = table, n_ctx, []

    def follow(self, context, ahead):
        if len(context) + ahead > self.n_ctx:
            return False
        self.tokens = list(context)
        return True

    def best(self):
        return self.table[self.tokens[-1]]

    def push(self, token):
        self.tokens.append(token)


def test_model_drafter_is_greedy_and_stops_when_unsure_or_at_the_limit():
    model = ScriptedModel({1: (2, 0.9), 2: (3, 0.8), 3: (4, 0.5), 4: (5, 0.99), 5: (6, 0.1)})
    drafter = ModelDrafter(model, confidence=0.75)
    assert drafter.propose([7, 1], 8) == [2, 3]  # 4 follows 3 with only 0.5
    assert model.tokens == [7, 1, 2, 3]  # 3 was evaluated to find what follows it doubtful
    assert drafter.propose([7, 1], 1) == [2]
    assert model.tokens == [7, 1]  # a draft that reaches the limit: its last token is not evaluated
    assert drafter.propose([3], 8) == []
    assert ModelDrafter(model, confidence=0.4).propose([1], 8) == [2, 3, 4, 5]


def test_model_drafter_drafts_nothing_past_the_draft_models_context():
    model = ScriptedModel({1: (1, 1.0)}, n_ctx=10)
    assert ModelDrafter(model).propose([1] * 6, 4) == [1, 1, 1, 1]
    assert ModelDrafter(model).propose([1] * 7, 4) == []


# -- vocabularies -------------------------------------------------------------------------------

def vocab_gguf(path: Path, tokens: list[str], types: list[int] | None = None, *, bos: int = 2, eos: int = 1,
               eot: int | None = None, model: str = "llama") -> GGUFFile:
    """A vocabulary-only GGUF written by gguf-py (the format's reference writer)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_tokenizer_model(model)
    writer.add_token_list(tokens)
    writer.add_token_types(types or [NORMAL] * len(tokens))
    writer.add_bos_token_id(bos)
    writer.add_eos_token_id(eos)
    if eot is not None:
        writer.add_eot_token_id(eot)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GGUFFile(path)


TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<0x0A>", "▁the", "▁river", "rose"]
TYPES = [CONTROL, CONTROL, CONTROL, 2, BYTE, NORMAL, NORMAL, NORMAL]


def test_the_same_vocabulary_and_a_target_with_tokens_after_it_agree(tmp_path):
    target = vocab_gguf(tmp_path / "t.gguf", TOKENS, TYPES, eot=7)
    assert vocabulary_difference(target, vocab_gguf(tmp_path / "d.gguf", TOKENS, TYPES, eot=7)) is None
    # Gemma 3 4B-27B pad the 270M/1B vocabulary with unused tokens: the smaller draft's ids all mean the same
    padded = vocab_gguf(tmp_path / "p.gguf", TOKENS + ["<unused0>"], TYPES + [5], eot=7)
    assert vocabulary_difference(padded, vocab_gguf(tmp_path / "d2.gguf", TOKENS, TYPES, eot=7)) is None


@pytest.mark.parametrize("change, message", [
    (dict(tokens=TOKENS[:6] + ["▁River", "rose"]), "token 6 '▁River' (normal) differs from the target's '▁river' (normal)"),
    (dict(types=TYPES[:5] + [CONTROL] + TYPES[6:]), "token 5 '▁the' (control) differs from the target's '▁the' (normal)"),
    (dict(tokens=TOKENS + ["<extra>"], types=TYPES + [NORMAL]),
     "vocabulary has 9 tokens, more than the target's 8 (it could draft token 8 '<extra>' (normal))"),
    (dict(bos=3), "BOS token id is 3, the target's is 2"),
    (dict(eot=None), "EOT token id is None, the target's is 7"),
    (dict(model="gemma4"), "tokenizer.ggml.model is 'gemma4', the target's is 'llama'"),
])
def test_the_first_difference_is_named(tmp_path, change, message):
    target = vocab_gguf(tmp_path / "t.gguf", TOKENS, TYPES, eot=7)
    settings = dict(tokens=TOKENS, types=TYPES, bos=2, eos=1, eot=7, model="llama") | change
    tokens, types = settings.pop("tokens"), settings.pop("types")
    draft = vocab_gguf(tmp_path / "d.gguf", tokens, types, **settings)
    assert vocabulary_difference(target, draft) == message


def test_gemma4_and_gemma3_vocabularies_differ(embedded_model_path, gemma4_vocab_path):
    """The real vocabularies: same size, same BOS/EOS, but Gemma 4 marks [multimodal] (token 5) normal."""
    target = read_model_facts(embedded_model_path)
    with pytest.raises(DraftModelError) as error:
        check_draft_pair(target, read_model_facts(gemma4_vocab_path))
    assert str(error.value) == (
        "draft model ggml-vocab-gemma-4.gguf's token 5 '[multimodal]' (normal) differs from target "
        "gemma-3-270m-q4_k_m.gguf's '[multimodal]' (user-defined): a draft model needs the target's vocabulary")


def test_a_draft_model_not_smaller_than_the_target_is_refused(embedded_model_path):
    facts = read_model_facts(embedded_model_path)
    with pytest.raises(DraftModelError, match=r"is not smaller than the target gemma-3-270m-q4_k_m.gguf"):
        check_draft_pair(facts, facts)


def test_an_embedding_model_cannot_draft(embedded_model_path):
    pytest.importorskip("transformers")
    from tests.convert.tiny_embeddinggemma import tiny_embeddinggemma_gguf

    with pytest.raises(DraftModelError, match="is an embedding model: it cannot draft text"):
        check_draft_pair(read_model_facts(embedded_model_path), read_model_facts(tiny_embeddinggemma_gguf("f32")))


def test_the_pair_must_fit_in_memory(embedded_model_path, gemma4_vocab_path):
    from gemma_edge.memory import RUNTIME_OVERHEAD

    target, draft = read_model_facts(embedded_model_path), read_model_facts(gemma4_vocab_path)
    n_ctx = 1024
    needed = (target.weights_bytes + draft.weights_bytes + RUNTIME_OVERHEAD * 2
              + (target.kv_bytes_per_token + draft.kv_bytes_per_token) * n_ctx)
    check_pair_fits(target, draft, n_ctx, needed)
    with pytest.raises(InsufficientMemoryError, match="with the draft model ggml-vocab-gemma-4.gguf needs about"):
        check_pair_fits(target, draft, n_ctx, needed - 1)
