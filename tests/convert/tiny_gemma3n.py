"""Tiny seeded random Gemma 3n checkpoints, built with transformers and cached on disk.

llama.cpp's gemma3n runtime hard-codes most of the architecture (20 layers with their own KV cache, altup
4/0, laurel rank 64, per-layer input width 256, sparsity on layers 0-9, final softcap 30), so the tiny
model keeps all of those and shrinks only what the runtime reads from the GGUF: 22 layers of which the
last 2 share KV (layer 19 full, 18 sliding, as in E2B/E4B), hidden 64, 4 heads of 16. FFN width 1024 keeps
the sparsity step's standard-deviation difference (llama.cpp ÷(n−1), transformers ÷n) small.

The config's ``vocab_size`` (416) is larger than the SentencePiece model (400 pieces) and than
``vocab_size_per_layer_input`` (400), so the token list is padded with ``[PADi]`` and the per-layer
embedding table with zero rows, as for the real 262,400-token models.
"""
from __future__ import annotations

import copy
from pathlib import Path

from tests.convert.tiny import VOCAB_SIZE, cached_dir, write_tiny_tokenizer
from tests.convert.tiny_gemma4 import perturb_, save_checkpoint

BUILDER_VERSION = 1
CONFIG_VOCAB_SIZE = VOCAB_SIZE + 16
RECIPE = dict(
    vocab_size=CONFIG_VOCAB_SIZE, vocab_size_per_layer_input=VOCAB_SIZE, hidden_size=64, intermediate_size=1024,
    num_hidden_layers=22, num_kv_shared_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    max_position_embeddings=256, sliding_window=16,
)


def build_model(params: dict, seed: int):
    import torch
    from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

    config = Gemma3nTextConfig(pad_token_id=0, eos_token_id=1, bos_token_id=2, **params)
    torch.manual_seed(seed)
    model = Gemma3nForCausalLM(config).eval()
    perturb_(model, seed)
    return model


def add_shared_kv_zeros(directory: Path, params: dict) -> None:
    """Add zero k_proj/v_proj/k_norm for the KV-shared layers, as Google's original checkpoints carry
    them (transformers 5.x neither creates nor saves them, and ignores them on load)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = directory / "model.safetensors"
    tensors = load_file(path)
    dtype = tensors["model.embed_tokens.weight"].dtype
    kv, hidden, head_dim = params["num_key_value_heads"] * params["head_dim"], params["hidden_size"], params["head_dim"]
    for i in range(params["num_hidden_layers"] - params["num_kv_shared_layers"], params["num_hidden_layers"]):
        prefix = f"model.layers.{i}.self_attn."
        tensors[prefix + "k_proj.weight"] = torch.zeros(kv, hidden, dtype=dtype)
        tensors[prefix + "v_proj.weight"] = torch.zeros(kv, hidden, dtype=dtype)
        tensors[prefix + "k_norm.weight"] = torch.zeros(head_dim, dtype=dtype)
    save_file(tensors, path, metadata={"format": "pt"})


def gemma3n_checkpoint(dtype: str = "bfloat16", seed: int = 0, shared_kv_tensors: bool = False) -> Path:
    """A cached Gemma 3n checkpoint directory (config, safetensors, tiny SentencePiece tokenizer).

    shared_kv_tensors: also store (zero) K/V/K-norm for the KV-shared layers like Google's original files —
    then llama.cpp's reference converter produces a GGUF that loads, to compare against."""
    params = copy.deepcopy(RECIPE)
    recipe = {"builder": BUILDER_VERSION, "dtype": dtype, "seed": seed, "params": params,
              "shared_kv_tensors": shared_kv_tensors}

    def build(out: Path) -> None:
        save_checkpoint(build_model(params, seed), out, dtype)
        if shared_kv_tensors:
            add_shared_kv_zeros(out, params)
        write_tiny_tokenizer(out)

    return cached_dir(f"gemma3n-{dtype}", recipe, build)
