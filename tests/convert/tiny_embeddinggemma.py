"""Tiny seeded EmbeddingGemma checkpoints in sentence-transformers' layout, cached by recipe.

The folder is what ``google/embeddinggemma-300m`` looks like, scaled down: a ``Gemma3TextModel``
(bidirectional attention) saved by transformers at the root with the tiny tokenizer (``add_eos_token``
true, as EmbeddingGemma's tokenizer has it), ``modules.json`` listing Transformer → ``1_Pooling`` (mean)
→ ``2_Dense`` (H → 4H, no bias) → ``3_Dense`` (4H → H) → ``4_Normalize``, and
``config_sentence_transformers.json`` with the task prompts. ``sliding_window`` in config.json is the
file's value (transformers halves it on load, as it does EmbeddingGemma's 512).
"""
from __future__ import annotations

import json
from pathlib import Path

from tests.convert.tiny import VOCAB_SIZE, build_checkpoint, cached_dir, cached_file

HIDDEN = 64
CONFIG = {
    "vocab_size": VOCAB_SIZE, "hidden_size": HIDDEN, "intermediate_size": 128, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 1024, "num_hidden_layers": 7,
    "query_pre_attn_scalar": 16, "sliding_window": 16, "use_bidirectional_attention": True,
    "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2,
}
DENSE_FEATURES = 4 * HIDDEN
# google/embeddinggemma-300m's decoder shapes (its config.json), random weights and the tiny vocabulary:
# for the benchmark, where a 64-wide model would time only overheads
SHAPED_300M = {**CONFIG, "hidden_size": 768, "intermediate_size": 1152, "num_hidden_layers": 24,
               "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256,
               "sliding_window": 512, "max_position_embeddings": 2048}
IDENTITY = "torch.nn.modules.linear.Identity"
MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"},
    {"idx": 4, "name": "4", "path": "4_Normalize", "type": "sentence_transformers.models.Normalize"},
]
# config_sentence_transformers.json "prompts" of google/embeddinggemma-300m, as published
PUBLISHED_PROMPTS = {
    "query": "task: search result | query: ",
    "document": "title: none | text: ",
    "BitextMining": "task: search result | query: ",
    "Clustering": "task: clustering | query: ",
    "Classification": "task: classification | query: ",
    "InstructionRetrieval": "task: code retrieval | query: ",
    "MultilabelClassification": "task: classification | query: ",
    "PairClassification": "task: sentence similarity | query: ",
    "Reranking": "task: search result | query: ",
    "Retrieval": "task: search result | query: ",
    "Retrieval-query": "task: search result | query: ",
    "Retrieval-document": "title: none | text: ",
    "STS": "task: sentence similarity | query: ",
    "Summarization": "task: summarization | query: ",
}
POOLING = {
    "word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
    "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
    "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True,
}


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


def _write_dense(folder: Path, n_in: int, n_out: int, seed: int, dtype: str) -> None:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(n_out, n_in, generator=generator) / n_in ** 0.5).to(getattr(torch, dtype))
    save_file({"linear.weight": weight.contiguous()}, str(folder / "model.safetensors"))
    _write_json(folder / "config.json", {"in_features": n_in, "out_features": n_out, "bias": False,
                                         "activation_function": IDENTITY})


def build_embeddinggemma(directory: Path, seed: int, dtype: str, modules: list[dict], prompts: dict[str, str],
                         settings: dict = CONFIG) -> None:
    import transformers

    config = transformers.Gemma3TextConfig(**settings)
    hidden = settings["hidden_size"]
    build_checkpoint(directory, transformers.Gemma3TextModel, config, seed, dtype)
    saved = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    saved["sliding_window"] = settings["sliding_window"]  # the file's value, whatever the config object holds
    _write_json(directory / "config.json", saved)
    tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    _write_json(directory / "tokenizer_config.json", {**tokenizer_config, "add_eos_token": True})
    _write_json(directory / "modules.json", modules)
    _write_json(directory / "sentence_bert_config.json", {"max_seq_length": settings["max_position_embeddings"],
                                                          "do_lower_case": False})
    _write_json(directory / "config_sentence_transformers.json",
                {"model_type": "SentenceTransformer", "prompts": prompts, "default_prompt_name": None,
                 "similarity_fn_name": "cosine"})
    paths = {m["path"] for m in modules}
    if "1_Pooling" in paths:
        _write_json(directory / "1_Pooling" / "config.json", {**POOLING, "word_embedding_dimension": hidden})
    if "2_Dense" in paths:
        (directory / "2_Dense").mkdir()
        _write_dense(directory / "2_Dense", hidden, 4 * hidden, seed + 2, dtype)
    if "3_Dense" in paths:
        (directory / "3_Dense").mkdir()
        _write_dense(directory / "3_Dense", 4 * hidden, hidden, seed + 3, dtype)
    if "4_Normalize" in paths:
        (directory / "4_Normalize").mkdir()


def tiny_embeddinggemma(seed: int = 0, dtype: str = "float32", dense: bool = True, settings: dict = CONFIG) -> Path:
    """The cached tiny EmbeddingGemma folder (``dense=False``: without the Dense modules; ``settings``:
    another Gemma3TextConfig, e.g. ``SHAPED_300M`` for the benchmark)."""
    modules = [m for m in MODULES if dense or not m["path"].endswith("Dense")]
    prompts = PUBLISHED_PROMPTS
    recipe = {"config": settings, "modules": modules, "pooling": POOLING, "prompts": prompts, "seed": seed,
              "dtype": dtype, "dense": DENSE_FEATURES, "v": 1}
    return cached_dir("hf-embeddinggemma", recipe,
                      lambda d: build_embeddinggemma(d, seed, dtype, modules, prompts, settings))


def tiny_embeddinggemma_gguf(type_name: str = "f32", dense: bool = True) -> Path:
    """The tiny folder converted by our converter (cached by the folder and type)."""
    from convert.api import convert_checkpoint

    model_dir = tiny_embeddinggemma(dense=dense)
    recipe = {"model": model_dir.name, "type": type_name, "converter": "gemma-edge", "v": 1}
    return cached_file(f"ours-embeddinggemma-{type_name}", recipe, ".gguf",
                       lambda path: convert_checkpoint(model_dir, path, type_name, force=True))
