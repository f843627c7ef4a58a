"""EmbeddingGemma (Gemma3TextModel in a sentence-transformers folder) → gemma-embedding GGUF.

Oracles: sentence-transformers' modules over transformers (embeddings, per input cosine), llama.cpp's
own converter run with ``--sentence-transformers-dense-modules`` (identical tensors and keys), and the
same converter without that flag (what a user gets by default: the projections silently left out).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from convert.generations.base import HParams, UnsupportedConfig
from convert.generations.embeddinggemma import EMBEDDINGGEMMA
from tests.convert.embed_oracle import cosines, sentencepiece_ids, st_embeddings
from tests.convert.oracle import gguf_differences, gguf_fields, gguf_tensors, reference_gguf
from tests.convert.tiny_embeddinggemma import CONFIG, tiny_embeddinggemma, tiny_embeddinggemma_gguf

pytest.importorskip("llama_cpp")
pytest.importorskip("sentence_transformers")

ALLOWED = {"tokenizer.ggml.unknown_token_id": "always written (README: deliberate differences, 1)"}
WORDS = "ga me ma to ken ize ro la pi nu ver sa li on dre".split()
# short, medium, and longer than both the sliding window (16) and llama.cpp's default micro-batch (512)
TEXTS = ["hello", "gamera tokenize la pi nu. verona!", " ".join(WORDS[i % 15] for i in range(40)),
         " ".join(WORDS[(7 * i) % 15] + WORDS[i % 15] for i in range(330))]
THRESHOLDS = {"f32": 0.9999, "f16": 0.999, "q8_0": 0.999}


def reference_embedding_gguf(type_name: str, dense: bool) -> Path:
    options = ("--sentence-transformers-dense-modules",) if dense else ()
    return reference_gguf(tiny_embeddinggemma(), type_name, label="embeddinggemma", options=options)


def llama_embeddings(gguf: Path, texts: list[str]) -> np.ndarray:
    from gemma_edge.api import Model

    model = Model(gguf, n_threads=2)
    try:
        return model.embed(texts, task="none", normalize=False)
    finally:
        model.close()


@pytest.mark.slow
@pytest.mark.parametrize("type_name", ["f32", "f16", "q8_0"])
def test_same_as_reference_with_dense_modules(type_name: str) -> None:
    ours = tiny_embeddinggemma_gguf(type_name)
    assert gguf_differences(ours, reference_embedding_gguf(type_name, dense=True), ALLOWED) == []
    fields = gguf_fields(ours)
    assert fields["general.architecture"][1] == "gemma-embedding"
    assert fields["gemma-embedding.pooling_type"][1] == 1  # mean, from 1_Pooling
    assert gguf_tensors(ours)["dense_2.weight"][1] == (64, 256)


@pytest.mark.slow
@pytest.mark.parametrize("type_name", ["f32", "f16", "q8_0"])
def test_embeddings_match_sentence_transformers(type_name: str) -> None:
    """One batch through llama.cpp (every input in one call, the longest 600+ tokens) vs sentence-transformers."""
    model_dir = tiny_embeddinggemma()
    reference = st_embeddings(model_dir, TEXTS)
    ours = llama_embeddings(tiny_embeddinggemma_gguf(type_name), TEXTS)
    assert len(sentencepiece_ids(model_dir, TEXTS[-1])) > 512
    found = cosines(ours, reference)
    assert found.min() >= THRESHOLDS[type_name], found


@pytest.mark.slow
def test_reference_default_leaves_the_projections_out() -> None:
    """llama.cpp's converter without --sentence-transformers-dense-modules: no dense_2/dense_3, and
    embeddings unrelated to sentence-transformers'; ours includes what modules.json lists by default."""
    theirs = reference_embedding_gguf("f32", dense=False)
    assert "dense_2.weight" not in gguf_tensors(theirs)
    reference = st_embeddings(tiny_embeddinggemma(), TEXTS)
    their_cosines = cosines(llama_embeddings(theirs, TEXTS), reference)
    our_cosines = cosines(llama_embeddings(tiny_embeddinggemma_gguf("f32"), TEXTS), reference)
    assert their_cosines.max() < 0.9 < 0.9999 <= our_cosines.min(), (their_cosines, our_cosines)


def test_sliding_window_is_the_files_value() -> None:
    """transformers halves EmbeddingGemma's window on load (16 → 9 here, 512 → 257 for the real model);
    llama.cpp's symmetric window wants the file's value (the long-text parity test above depends on it)."""
    import transformers

    model_dir = tiny_embeddinggemma()
    assert transformers.AutoConfig.from_pretrained(model_dir).sliding_window == CONFIG["sliding_window"] // 2 + 1
    fields = gguf_fields(tiny_embeddinggemma_gguf("f32"))
    assert fields["gemma-embedding.attention.sliding_window"][1] == CONFIG["sliding_window"]


def test_llama_cpp_tokenizes_like_the_checkpoint() -> None:
    from gemma_edge.api import Model

    model_dir = tiny_embeddinggemma()
    model = Model(tiny_embeddinggemma_gguf("f32"), n_threads=1)
    try:
        for text in TEXTS + ["<start_of_turn>user text", "<eos> in text"]:
            assert model._embedder.tokenize(text) == sentencepiece_ids(model_dir, text)
    finally:
        model.close()


# ---------------------------------------------------------------- refusals (from config alone)


def _config(**changes) -> HParams:
    model_dir = tiny_embeddinggemma()
    config = json.loads((model_dir / "config.json").read_text())
    modules = [{"type": m["type"], "path": m["path"], "config": {}} for m in
               json.loads((model_dir / "modules.json").read_text())]
    for module in modules:
        if module["path"]:
            path = model_dir / module["path"] / "config.json"
            module["config"] = json.loads(path.read_text()) if path.is_file() else {}
    config["sentence_transformers"] = {"modules": modules}
    for key, value in changes.items():
        if callable(value):
            value(config)
        else:
            config[key] = value
    return EMBEDDINGGEMMA.hparams(config)


def _module(path: str, **config):
    def change(c):
        module = next(m for m in c["sentence_transformers"]["modules"] if m["path"] == path)
        module["config"] = {**module["config"], **config}
    return change


@pytest.mark.parametrize(("changes", "message"), [
    ({"use_bidirectional_attention": False}, "attends bidirectionally"),
    ({"query_pre_attn_scalar": 32}, "query scale"),
    ({"dense_bias": _module("2_Dense", bias=True)}, "no bias"),
    ({"dense_act": _module("3_Dense", activation_function="torch.nn.modules.activation.Tanh")}, "linear"),
    ({"dense_size": _module("2_Dense", in_features=32)}, "hidden_size 64"),
    ({"pool": _module("1_Pooling", pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)}, "mean, cls"),
    ({"prompt": _module("1_Pooling", include_prompt=False)}, "include_prompt"),
    ({"extra": lambda c: c["sentence_transformers"]["modules"].append(
        {"type": "sentence_transformers.models.LayerNorm", "path": "5_LayerNorm", "config": {}})}, "LayerNorm"),
])
def test_refuses_what_llama_cpp_would_compute_wrong(changes: dict, message: str) -> None:
    with pytest.raises(UnsupportedConfig, match=message):
        EMBEDDINGGEMMA.metadata(_config(**changes))


def test_conversion_notes_name_the_projections() -> None:
    assert "2_Dense, 3_Dense" in EMBEDDINGGEMMA.notes(_config(), [])[0]
    without = _config(dense=lambda c: c["sentence_transformers"].update(
        modules=[m for m in c["sentence_transformers"]["modules"] if not m["path"].endswith("Dense")]))
    assert "no Dense module" in EMBEDDINGGEMMA.notes(without, [])[0]


def test_module_paths_and_weights_are_checked(tmp_path: Path) -> None:
    from convert.checkpoint import CheckpointError, open_checkpoint

    folder = tmp_path / "model"
    shutil.copytree(tiny_embeddinggemma(), folder)
    modules = json.loads((folder / "modules.json").read_text())
    escaping = [*modules[:2], {**modules[2], "path": "../2_Dense"}]
    (folder / "modules.json").write_text(json.dumps(escaping))
    with pytest.raises(CheckpointError, match="plain sub-directory"):
        open_checkpoint(folder)
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "3_Dense" / "model.safetensors").rename(folder / "3_Dense" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refusing pickle"):
        open_checkpoint(folder)


@pytest.mark.slow
def test_transformers_halved_window_would_change_long_texts(tmp_path: Path) -> None:
    """A GGUF carrying the window transformers computes on load (9, as 257 for the real 512) attends
    less far than the checkpoint does: long inputs then disagree with sentence-transformers."""
    from convert.api import convert_checkpoint

    folder = tmp_path / "halved"
    shutil.copytree(tiny_embeddinggemma(), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "sliding_window": CONFIG["sliding_window"] // 2 + 1}))
    halved = tmp_path / "halved.gguf"
    convert_checkpoint(folder, halved, "f32")
    reference = st_embeddings(tiny_embeddinggemma(), TEXTS[-1:])
    wrong = cosines(llama_embeddings(halved, TEXTS[-1:]), reference)[0]
    right = cosines(llama_embeddings(tiny_embeddinggemma_gguf("f32"), TEXTS[-1:]), reference)[0]
    assert wrong < 0.999 < 0.9999 <= right, (wrong, right)
