"""Gemma 1/2/3 tiny checkpoints: our GGUF vs transformers (logits) and vs llama.cpp's reference converter
(logit metrics measured in the same test, tensor bytes, metadata)."""
from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tests.convert.oracle import (
    assert_no_worse, compare_logits, gguf_differences, gguf_fields, gguf_tensors, hf_logits, llama_logits,
    reference_gguf,
)
from tests.convert.tiny import token_ids
from tests.convert.tiny_gemma import RECIPES, tiny_checkpoint

pytest.importorskip("llama_cpp")

# Deliberate metadata differences from the reference (listed in the README with these reasons).
ALLOWED = {
    "tokenizer.ggml.unknown_token_id":
        "always written (from the SentencePiece model when the tokenizer files do not name it): "
        "llama.cpp's SPM default unk id 0 is Gemma's <pad>",
    "tokenizer.ggml.eot_token_id":
        "the id of <end_of_turn> (from generation_config.json's eos list, or by text for Gemma 1) instead of "
        "the reference's hard-coded 107 for Gemma 1 (wrong for any other vocabulary) and nothing for Gemma 2/3",
}
IDS = token_ids(64)  # > every tiny sliding window (4)


def convert_ours(model_dir: Path, out: Path, type_name: str) -> Path:
    from convert.api import convert_checkpoint

    convert_checkpoint(model_dir, out, type_name, force=True)
    return out


@cache
def reference_logits(case: str) -> np.ndarray:
    return hf_logits(tiny_checkpoint(case), IDS)


# gemma-hub: the gemma weights under config.json as the official Gemma 1 releases ship it (hidden_act "gelu")
CASES = [(case, type_name) for case in ("gemma", "gemma2", "gemma3", "gemma3-linear")
         for type_name in ("f32", "f16", "q8_0")] + [("gemma3", "bf16"), ("gemma3-mm", "f32"),
                                                     ("gemma-hub", "f32"), ("gemma-hub", "q8_0")]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "type_name"), CASES)
def test_same_as_reference_and_transformers(case: str, type_name: str, tmp_path: Path) -> None:
    model_dir = tiny_checkpoint(case)
    ours = convert_ours(model_dir, tmp_path / "ours.gguf", type_name)
    theirs = reference_gguf(model_dir, type_name, label=case)

    assert gguf_differences(ours, theirs, ALLOWED) == []

    fields = gguf_fields(ours)
    tensors = gguf_tensors(ours)
    n_tokens = len(fields["tokenizer.ggml.tokens"][1])
    assert tensors["token_embd.weight"][1] == (64, n_tokens)
    assert fields["general.architecture"][1] == RECIPES[case][0].split("For")[0].lower()

    hf = reference_logits(case)
    our_metrics = compare_logits(hf, llama_logits(ours, IDS))
    their_metrics = compare_logits(hf, llama_logits(theirs, IDS))
    assert our_metrics.decisive >= 16
    assert_no_worse(our_metrics, their_metrics)


@pytest.mark.slow
def test_k_quant_no_worse_than_reference_pipeline(tmp_path: Path) -> None:
    """Q4_K_M through our converter (+ llama.cpp's quantizer) vs the reference's F16 quantized the same way."""
    from convert.quantize import quantize

    model_dir = tiny_checkpoint("gemma3-k")
    ours = convert_ours(model_dir, tmp_path / "ours.gguf", "q4_k_m")
    theirs = tmp_path / "theirs.gguf"
    quantize(reference_gguf(model_dir, "f16", label="gemma3-k"), theirs, "q4_k_m")

    tensors = gguf_tensors(ours)
    assert tensors["blk.0.attn_q.weight"][0] == "Q4_K"
    assert tensors["blk.0.attn_norm.weight"][0] == "F32"
    assert set(tensors) == set(gguf_tensors(theirs))

    hf = hf_logits(model_dir, IDS)
    our_metrics = compare_logits(hf, llama_logits(ours, IDS))
    their_metrics = compare_logits(hf, llama_logits(theirs, IDS))
    assert_no_worse(our_metrics, their_metrics)


@pytest.mark.slow
def test_non_periodic_layer_types_match_transformers(tmp_path: Path) -> None:
    """layer_types unlike llama.cpp's default period: we write the bool pattern, so llama.cpp attends like
    transformers. The bar is the reference converter's accuracy on the same-sized standard Gemma 3 case
    (the reference itself ignores layer_types and computes different logits here)."""
    model_dir = tiny_checkpoint("gemma3-pattern")
    ours = convert_ours(model_dir, tmp_path / "ours.gguf", "f32")
    pattern = gguf_fields(ours)["gemma3.attention.sliding_window_pattern"][1]
    types = RECIPES["gemma3-pattern"][2]["layer_types"]
    assert pattern == [t == "sliding_attention" for t in types]

    our_metrics = compare_logits(hf_logits(model_dir, IDS), llama_logits(ours, IDS))
    standard = compare_logits(reference_logits("gemma3"),
                              llama_logits(reference_gguf(tiny_checkpoint("gemma3"), "f32", label="gemma3"), IDS))
    assert our_metrics.decisive >= 16
    assert_no_worse(our_metrics, standard, slack=1.0)
