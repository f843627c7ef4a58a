"""Gemma 3n tiny checkpoint: our GGUF vs llama.cpp's reference converter (tensor bytes, metadata) and vs
transformers (logits), the KV placeholders transformers 5.x checkpoints need, the sparsity scale, and the
refusals of configs llama.cpp's gemma3n runtime would compute differently."""
from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tests.convert.oracle import (
    assert_no_worse, compare_logits, gguf_differences, gguf_fields, gguf_tensors, llama_logits, reference_gguf,
)
from tests.convert.tiny import VOCAB_SIZE, linked_copy
from tests.convert.tiny_gemma3n import CONFIG_VOCAB_SIZE, RECIPE, gemma3n_checkpoint
from tests.convert.tiny_gemma4 import convert_with_ours, token_ids

pytest.importorskip("llama_cpp")

# ids below the per-layer table's 400 rows (transformers maps larger ids to row 0, the GGUF to zero rows)
IDS = token_ids(80, VOCAB_SIZE, low=16)  # 64 positions beyond the sliding window of 16
SHARED_LAYERS = range(RECIPE["num_hidden_layers"] - RECIPE["num_kv_shared_layers"], RECIPE["num_hidden_layers"])
# Deliberate metadata difference from the reference, shared with Gemma 1-3 (convert/vocab.py, README).
ALLOWED = {"tokenizer.ggml.unknown_token_id": "always written: llama.cpp's SPM default unk id 0 is Gemma's <pad>"}
RUNTIME_STD_MULTIPLIER = 1.6448533535003662  # llama.cpp's hard-coded Φ⁻¹(0.95) (src/models/models.h)


@cache
def transformers_logits(runtime_sparsity: bool = False) -> np.ndarray:
    """transformers' logits; with ``runtime_sparsity`` its Gaussian top-k uses llama.cpp's sample standard
    deviation (÷(n−1)) and multiplier instead of the population one (÷n), isolating that difference."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gemma3n_checkpoint(), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    if runtime_sparsity:
        def gaussian_topk(inputs: torch.Tensor) -> torch.Tensor:
            cutoff = inputs.mean(-1, keepdim=True) + inputs.std(-1, keepdim=True, unbiased=True) * RUNTIME_STD_MULTIPLIER
            return torch.relu(inputs - cutoff)

        for layer in model.model.layers:
            if layer.mlp.activation_sparsity > 0:
                layer.mlp._gaussian_topk = gaussian_topk
    with torch.no_grad():
        return model(torch.tensor([IDS]), use_cache=False).logits[0].float().numpy()


@pytest.mark.slow
@pytest.mark.parametrize("type_name", ["f32", "f16", "q8_0"])
def test_same_as_reference_where_its_gguf_loads(type_name: str, tmp_path: Path) -> None:
    """On a checkpoint that stores the shared layers' K/V (like Google's files), the reference's GGUF loads
    and ours is the same, byte for byte; on the transformers 5.x checkpoint (no shared K/V) ours is still the
    same file, because the placeholders we write are exactly those zeros."""
    with_kv = gemma3n_checkpoint(shared_kv_tensors=True)
    ours = convert_with_ours(with_kv, tmp_path / "ours.gguf", type_name)
    assert gguf_differences(ours, reference_gguf(with_kv, type_name), ALLOWED) == []

    without_kv = convert_with_ours(gemma3n_checkpoint(), tmp_path / "placeholders.gguf", type_name)
    assert gguf_differences(without_kv, ours) == []
    fields, tensors = gguf_fields(ours), gguf_tensors(ours)
    assert tensors["token_embd.weight"][1] == (64, CONFIG_VOCAB_SIZE)
    assert tensors["per_layer_token_embd.weight"][1] == (22 * 256, CONFIG_VOCAB_SIZE)  # 400 rows zero-padded
    assert tensors["altup_proj.weight"][1] == (64, 64, 3)
    assert len(fields["tokenizer.ggml.tokens"][1]) == CONFIG_VOCAB_SIZE


@pytest.mark.slow
def test_reference_gguf_of_a_transformers_5_checkpoint_does_not_load_ours_does(tmp_path: Path) -> None:
    """The deliberate difference: transformers 5.x saves no K/V for KV-shared layers; llama.cpp's loader
    requires them, so the reference's GGUF fails to load and ours (with zero placeholders) loads."""
    from llama_cpp import Llama

    from safetensors import safe_open

    checkpoint = gemma3n_checkpoint()

    with safe_open(checkpoint / "model.safetensors", "np") as handle:
        assert f"model.layers.{SHARED_LAYERS[0]}.self_attn.k_proj.weight" not in set(handle.keys())
    with pytest.raises(ValueError):
        Llama(str(reference_gguf(checkpoint, "f32")), n_ctx=64, verbose=False)
    ours = convert_with_ours(checkpoint, tmp_path / "ours.gguf", "f32")
    Llama(str(ours), n_ctx=64, verbose=False).close()


@pytest.mark.slow
def test_f32_logits_match_transformers_no_worse_than_reference(tmp_path: Path) -> None:
    ours = convert_with_ours(gemma3n_checkpoint(), tmp_path / "ours.gguf", "f32")
    theirs = reference_gguf(gemma3n_checkpoint(shared_kv_tensors=True), "f32")
    hf = transformers_logits()
    our_metrics = compare_logits(hf, llama_logits(ours, IDS))
    their_metrics = compare_logits(hf, llama_logits(theirs, IDS))
    assert our_metrics.decisive >= 32, our_metrics
    assert_no_worse(our_metrics, their_metrics)


@pytest.mark.slow
def test_remaining_f32_error_is_llama_cpps_sparsity_std(tmp_path: Path) -> None:
    """With transformers' sparsity step switched to llama.cpp's (sample std, its multiplier), the same GGUF
    is clearly closer: the gap to transformers is mostly that runtime difference, not the conversion."""
    ours = llama_logits(convert_with_ours(gemma3n_checkpoint(), tmp_path / "ours.gguf", "f32"), IDS)
    as_transformers = compare_logits(transformers_logits(), ours)
    as_runtime = compare_logits(transformers_logits(runtime_sparsity=True), ours)
    assert as_runtime.argmax_agree == as_runtime.decisive
    assert as_runtime.mean_abs < 0.75 * as_transformers.mean_abs, (as_runtime, as_transformers)
    assert as_runtime.max_abs < as_transformers.max_abs, (as_runtime, as_transformers)


@pytest.mark.slow
def test_q8_0_no_worse_than_reference(tmp_path: Path) -> None:
    hf = transformers_logits()
    ours = convert_with_ours(gemma3n_checkpoint(), tmp_path / "ours.gguf", "q8_0")
    theirs = reference_gguf(gemma3n_checkpoint(shared_kv_tensors=True), "q8_0")
    our_metrics = compare_logits(hf, llama_logits(ours, IDS))
    their_metrics = compare_logits(hf, llama_logits(theirs, IDS))
    tensors = gguf_tensors(ours)
    assert tensors["blk.0.ffn_up.weight"][0] == "Q8_0"
    assert tensors["blk.0.altup_predict_coef.weight"][0] == "F32"
    assert our_metrics.argmax_rate >= their_metrics.argmax_rate
    assert our_metrics.max_abs <= their_metrics.max_abs * 1.1 + 1e-6, (our_metrics, their_metrics)
    assert our_metrics.mean_abs <= their_metrics.mean_abs * 1.1 + 1e-7, (our_metrics, their_metrics)


@pytest.mark.parametrize("p", [0.0, 0.05, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_sparsity_scale_equals_torchs_inverse_normal_cdf(p: float) -> None:
    """Φ⁻¹ without torch: as float32 it equals torch's icdf (the reference's), including −inf at p = 0."""
    import torch

    from convert.generations.gemma3n import sparsity_scale

    expected = torch.distributions.normal.Normal(0, 1).icdf(torch.tensor(p, dtype=torch.float32)).item()
    assert np.float32(sparsity_scale(p)) == np.float32(expected)
    if p == 0.0:
        assert sparsity_scale(p) == -math.inf


# ---------------------------------------------------------------- refusals


def _config() -> dict:
    return json.loads((gemma3n_checkpoint() / "config.json").read_text())


def _refusal(**changes) -> str:
    from convert.generations.base import UnsupportedConfig
    from convert.generations.gemma3n import GEMMA3N

    with pytest.raises(UnsupportedConfig) as error:
        GEMMA3N.metadata(GEMMA3N.hparams({**_config(), **changes}))
    message = str(error.value)
    assert "\n" not in message
    return message


def test_the_tiny_config_itself_is_accepted() -> None:
    from convert.generations.gemma3n import GEMMA3N

    assert GEMMA3N.metadata(GEMMA3N.hparams(_config()))


@pytest.mark.parametrize("key, value", [
    ("altup_num_inputs", 2), ("altup_active_idx", 1), ("laurel_rank", 32),
    ("hidden_size_per_layer_input", 128), ("final_logit_softcapping", 50.0), ("altup_correct_scale", False),
])
def test_refuses_sizes_llama_cpp_hard_codes(key: str, value) -> None:
    message = _refusal(**{key: value})
    assert f"hard-codes {key} = " in message and repr(value) in message


def test_refuses_a_kv_layer_count_other_than_20() -> None:
    config = _config()
    types = config["layer_types"] + ["sliding_attention"]
    message = _refusal(num_hidden_layers=23, num_kv_shared_layers=2, layer_types=types,
                       intermediate_size=[1024] * 23, activation_sparsity_pattern=[0.95] * 10 + [0.0] * 13)
    assert "20 layers with their own KV cache" in message and "23 layers with num_kv_shared_layers=2" in message


def test_refuses_kv_sharing_with_layer_19_not_full() -> None:
    types = _config()["layer_types"]
    types[18], types[19] = "full_attention", "sliding_attention"
    message = _refusal(layer_types=types)
    assert "reuse layer 18 (sliding) and layer 19 (full)" in message


def test_refuses_a_sparsity_pattern_other_than_the_runtimes() -> None:
    message = _refusal(activation_sparsity_pattern=[0.95] * 5 + [0.0] * 17)
    assert "activation sparsity 0.95 on layers 0-9" in message


def test_refusal_reaches_the_user_as_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    checkpoint = linked_copy(gemma3n_checkpoint(), tmp_path / "ckpt", lambda c: c.update(laurel_rank=32))
    out = tmp_path / "out.gguf"
    result = subprocess.run([sys.executable, "-m", "convert", "convert", str(checkpoint), "-o", str(out)],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 2 and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hard-codes laurel_rank = 64" in result.stderr
