"""sentence-transformers' embeddings of a tiny EmbeddingGemma folder (the numerical truth for embeddings).

The pipeline is sentence-transformers' own modules, loaded from the folder as ``modules.json`` lists them
(Pooling, Dense, Normalize), over transformers' ``Gemma3TextModel``. Token ids come from the folder's
SentencePiece model (<bos> text <eos>, as the tokenizer config says): transformers cannot build a
tokenizer from ``tokenizer.model`` without protobuf, which the test environment does not have; the tests
check separately that llama.cpp tokenizes to the same ids.
"""
from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np


def sentencepiece_ids(model_dir: Path, text: str) -> list[int]:
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
    config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    ids = processor.encode(text)
    return ([processor.bos_id()] if config.get("add_bos_token", True) else []) + ids + (
        [processor.eos_id()] if config.get("add_eos_token") else [])


@cache
def _pipeline(model_dir: Path):
    import torch
    import transformers
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    kinds = {"Pooling": Pooling, "Dense": Dense, "Normalize": Normalize}
    modules = []
    for entry in json.loads((model_dir / "modules.json").read_text(encoding="utf-8")):
        kind = entry["type"].rsplit(".", 1)[-1]
        if kind != "Transformer":
            modules.append(kinds[kind].load(str(model_dir / entry["path"])))
    model = transformers.AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, [m.eval() for m in modules]


def st_embeddings(model_dir: Path, texts: list[str]) -> np.ndarray:
    """One row per text: sentence-transformers' encode output (normalised when the folder says so)."""
    import torch

    model, modules = _pipeline(model_dir)
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([sentencepiece_ids(model_dir, text)])
            mask = torch.ones_like(ids)
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            features = {"input_ids": ids, "attention_mask": mask, "token_embeddings": hidden}
            for module in modules:
                features = module(features)
            rows.append(features["sentence_embedding"][0].float().numpy())
    return np.stack(rows)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
