"""Gemma 4 tiny checkpoints (dense 31B-like, MoE 26B-A4B-like, E2B/E4B-like): our GGUF vs llama.cpp's
reference converter (tensor bytes, metadata) and vs transformers (logits, measured against the reference's
own GGUF in the same test); the gemma4 vocabulary vs the real one llama.cpp ships; refusals."""
from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from tests.convert.oracle import (
    assert_no_worse, compare_logits, gguf_differences, gguf_fields, gguf_tensors,
    llama_logits, reference_gguf,
)
from tests.convert.tiny import linked_copy
from tests.convert.tiny_gemma4 import (
    RECIPES, TINY_VOCAB_SIZE, VISIBLE_MARKERS, conversion_refusal, convert_with_ours, gemma4_checkpoint,
    read_real_vocab, tiny_gemma4_gguf, token_ids, write_tokenizer_files,
)

pytest.importorskip("llama_cpp")

KINDS = ["dense", "moe", "e2b"]
IDS = token_ids(80, TINY_VOCAB_SIZE)  # 80 positions: 64 of them beyond the sliding window of 16
ROUTER_MARGIN = 1e-3  # MoE positions whose top-k choice is this close to a tie are not decisive


@cache
def transformers_run(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits, per-position smallest router top-k margin over all MoE layers; +inf for dense models)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gemma4_checkpoint(kind), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    margins = np.full(len(IDS), np.inf)
    k = model.config.top_k_experts or 0

    def record(module, inputs, output):
        probs = np.sort(output[0].detach().float().numpy().reshape(len(IDS), -1), axis=1)[:, ::-1]
        np.minimum(margins, probs[:, k - 1] - probs[:, k], out=margins)

    hooks = [m.register_forward_hook(record) for name, m in model.named_modules() if name.endswith(".router")]
    with torch.no_grad():
        logits = model(torch.tensor([IDS]), use_cache=False).logits[0].float().numpy()
    for hook in hooks:
        hook.remove()
    return logits, margins


def decisive_rows(kind: str) -> np.ndarray:
    """Positions that count for the argmax rule: MoE positions near a routing tie are excluded."""
    _, margins = transformers_run(kind)
    return margins >= ROUTER_MARGIN


@pytest.mark.slow
@pytest.mark.parametrize("type_name", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("kind", KINDS)
def test_same_tensors_and_metadata_as_reference(kind: str, type_name: str, tmp_path: Path) -> None:
    ours = convert_with_ours(gemma4_checkpoint(kind), tmp_path / "ours.gguf", type_name)
    assert gguf_differences(ours, reference_gguf(gemma4_checkpoint(kind), type_name)) == []

    fields, tensors = gguf_fields(ours), gguf_tensors(ours)
    assert fields["general.architecture"][1] == "gemma4"
    assert tensors["token_embd.weight"][1] == (64, len(fields["tokenizer.ggml.tokens"][1]))
    assert len(fields["gemma4.attention.sliding_window_pattern"][1]) == RECIPES[kind]["num_hidden_layers"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_f32_logits_match_transformers_no_worse_than_reference(kind: str, tmp_path: Path) -> None:
    hf, _ = transformers_run(kind)
    rows = decisive_rows(kind)
    ours = convert_with_ours(gemma4_checkpoint(kind), tmp_path / "ours.gguf", "f32")
    our_metrics = compare_logits(hf[rows], llama_logits(ours, IDS)[rows])
    their_metrics = compare_logits(hf[rows], llama_logits(reference_gguf(gemma4_checkpoint(kind), "f32"), IDS)[rows])
    assert our_metrics.decisive >= 32, our_metrics
    assert_no_worse(our_metrics, their_metrics)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_q8_0_no_worse_than_reference(kind: str, tmp_path: Path) -> None:
    """Q8_0 on these tiny models flips many close calls, so only the no-worse-than-reference rule applies."""
    hf, _ = transformers_run(kind)
    ours = convert_with_ours(gemma4_checkpoint(kind), tmp_path / "ours.gguf", "q8_0")
    our_metrics = compare_logits(hf, llama_logits(ours, IDS))
    their_metrics = compare_logits(hf, llama_logits(reference_gguf(gemma4_checkpoint(kind), "q8_0"), IDS))
    assert gguf_tensors(ours)["blk.0.attn_q.weight"][0] == "Q8_0"
    assert our_metrics.argmax_rate >= their_metrics.argmax_rate
    assert our_metrics.max_abs <= their_metrics.max_abs * 1.1 + 1e-6, (our_metrics, their_metrics)
    assert our_metrics.mean_abs <= their_metrics.mean_abs * 1.1 + 1e-7, (our_metrics, their_metrics)


def test_moe_router_has_no_near_ties() -> None:
    """The MoE recipe spreads router weights so the parity tests judge (almost) every position."""
    assert decisive_rows("moe").mean() >= 0.9


@pytest.mark.slow
def test_both_config_formats_give_the_same_gguf(tmp_path: Path) -> None:
    """Older config.json files carry global_head_dim / num_global_key_value_heads at the top level;
    transformers 5.23 writes per_layer_config. Same weights → the same GGUF either way."""
    new = convert_with_ours(gemma4_checkpoint("dense"), tmp_path / "new.gguf", "f32")
    legacy_dir = gemma4_checkpoint("dense", config_format="global_head_dim")
    assert "per_layer_config" not in json.loads((legacy_dir / "config.json").read_text())
    legacy = convert_with_ours(legacy_dir, tmp_path / "legacy.gguf", "f32")
    assert gguf_differences(legacy, new) == []
    assert gguf_fields(new)["gemma4.attention.head_count_kv"][1] == [2, 2, 1, 2, 2, 1]
    assert gguf_fields(new)["gemma4.attention.key_length"][1] == 32


@pytest.mark.slow
def test_conditional_generation_layout_converts_to_the_same_text_gguf(tmp_path: Path) -> None:
    """The text part of ``Gemma4ForConditionalGeneration`` (config in ``text_config``, tensors under
    ``model.language_model.``, vision tower alongside) converts to the same GGUF as the CausalLM export."""
    import torch
    from safetensors.torch import load_file, save_file

    source = gemma4_checkpoint("dense")
    multimodal = tmp_path / "multimodal"
    shutil.copytree(source, multimodal, ignore=shutil.ignore_patterns("model.safetensors", "config.json"))
    tensors = {name.replace("model.", "model.language_model.", 1): t
               for name, t in load_file(source / "model.safetensors").items()}
    tensors["model.vision_tower.encoder.layers.0.self_attn.q_proj.linear.weight"] = torch.ones(8, 8)
    save_file(tensors, multimodal / "model.safetensors", metadata={"format": "pt"})
    text_config = json.loads((source / "config.json").read_text())
    config = {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
              "text_config": {k: v for k, v in text_config.items() if k != "architectures"}, "vision_config": {"hidden_size": 8}}
    (multimodal / "config.json").write_text(json.dumps(config))

    ours = convert_with_ours(multimodal, tmp_path / "mm.gguf", "f32")
    assert gguf_differences(ours, convert_with_ours(source, tmp_path / "text.gguf", "f32")) == []


# ---------------------------------------------------------------- vocabulary


@pytest.mark.slow
def test_vocab_of_the_real_tokenizer_equals_llama_cpps(gemma4_vocab_path: Path, tmp_path: Path) -> None:
    """tokenizer.json/tokenizer_config.json of the real Gemma 4 tokenizer (rebuilt from llama.cpp's vocab
    GGUF) → our gemma4 vocabulary equals what llama.cpp's converter wrote for it, key for key: all 262,144
    tokens and types (the seven markers USER_DEFINED), all merges, special ids, chat template."""
    from convert.vocab_bpe import gemma4_vocab
    from tests.convert.tiny_gemma4 import read_gguf_metadata

    write_tokenizer_files(read_real_vocab(gemma4_vocab_path), tmp_path)
    expected = {k: v for k, v in read_gguf_metadata(gemma4_vocab_path).items() if k.startswith("tokenizer.")}

    class Directory:
        directory = tmp_path

    ours = {field.key: field.value for field in gemma4_vocab(Directory, {}).fields}
    assert sorted(ours) == sorted(expected)
    for key in expected:
        assert ours[key] == expected[key], key
    types = ours["tokenizer.ggml.token_type"]
    assert {ours["tokenizer.ggml.tokens"][i] for i, t in enumerate(types) if t == 4} == set(VISIBLE_MARKERS)


def test_tiny_vocab_is_a_prefix_of_the_real_one(gemma4_vocab_path: Path) -> None:
    real = read_real_vocab(gemma4_vocab_path)
    fields = gguf_fields(reference_gguf(gemma4_checkpoint("dense"), "f32"))
    assert fields["tokenizer.ggml.tokens"][1] == real["tokens"][:TINY_VOCAB_SIZE]
    assert fields["tokenizer.ggml.token_type"][1] == real["types"][:TINY_VOCAB_SIZE]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["e2b", "dense"])
def test_tiny_gemma4_gguf_has_the_real_vocabulary(kind: str, gemma4_vocab_path: Path) -> None:
    """The helper the end-to-end tests use: loads in llama.cpp and tokenizes exactly like the real vocab."""
    from llama_cpp import Llama

    path = tiny_gemma4_gguf(kind)
    assert gguf_fields(path)["gemma4.embedding_length_per_layer_input"][1] == (8 if kind == "e2b" else 0)
    text = '<|turn>user\n<|channel>thought<channel|><|tool_call>call:f{a:<|"|>x<|"|>}<tool_call|><turn|>'.encode()
    model = Llama(str(path), n_ctx=64, verbose=False)
    vocab = Llama(str(gemma4_vocab_path), vocab_only=True, verbose=False)
    try:
        assert model.n_vocab() == vocab.n_vocab() == 262144
        for special in (False, True):
            assert model.tokenize(text, add_bos=False, special=special) == \
                vocab.tokenize(text, add_bos=False, special=special)
        model.eval([2, 105, 2364, 107])  # the model runs
    finally:
        model.close()
        vocab.close()


# ---------------------------------------------------------------- refusals


def test_refuses_kv_sharing_that_llama_cpp_would_map_to_other_layers(tmp_path: Path) -> None:
    """E-style model with 5 shared layers: llama.cpp makes shared sliding layers reuse layer 3 and full ones
    layer 4; with layer 3 full and layer 4 sliding transformers reuses other layers than llama.cpp would."""
    types = ["sliding_attention"] * 3 + ["full_attention", "sliding_attention"] + \
        ["sliding_attention"] * 4 + ["full_attention"]
    checkpoint = linked_copy(gemma4_checkpoint("e2b"), tmp_path / "ckpt", lambda c: c.update(layer_types=types))
    message = conversion_refusal(checkpoint, tmp_path / "out.gguf")
    assert "reuse layer 3 (sliding) and layer 4 (full)" in message
    assert "layer 4 must be full_attention" in message


def test_refuses_full_layer_rope_other_than_proportional(tmp_path: Path) -> None:
    config = json.loads((gemma4_checkpoint("dense") / "config.json").read_text())
    rope = config["rope_parameters"]
    rope["full_attention"] = {"rope_type": "default", "rope_theta": 1e6}
    checkpoint = linked_copy(gemma4_checkpoint("dense"), tmp_path / "ckpt", lambda c: c.update(rope_parameters=rope))
    assert "proportional rope" in conversion_refusal(checkpoint, tmp_path / "out.gguf")


@pytest.mark.slow
def test_vision_bidirectional_attention_converts_as_causal_text_and_all_is_refused(tmp_path: Path) -> None:
    """26B-A4B and 31B configs say use_bidirectional_attention "vision": only image tokens attend both ways
    (transformers masks text causally), so the text GGUF is the same; "all" makes text bidirectional."""
    source = gemma4_checkpoint("dense")
    vision = linked_copy(source, tmp_path / "vision", lambda c: c.update(use_bidirectional_attention="vision"))
    ours = convert_with_ours(vision, tmp_path / "vision.gguf", "f32")
    assert gguf_differences(ours, reference_gguf(gemma4_checkpoint("dense"), "f32")) == []
    every = linked_copy(source, tmp_path / "all", lambda c: c.update(use_bidirectional_attention="all"))
    assert "use_bidirectional_attention is 'all'" in conversion_refusal(every, tmp_path / "all.gguf")


def test_rope_freqs_freeze_the_pairs_proportional_rope_leaves_alone(tmp_path: Path) -> None:
    """transformers' proportional rope rotates the first pairs with exponents over the whole global head dim
    and gives the rest zero frequency; llama.cpp rotates rope.dimension_count dims with freq_base and
    divides pair k's frequency by rope_freqs[k]. Both must give transformers' frequencies."""
    import torch
    from transformers import AutoConfig
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextRotaryEmbedding

    checkpoint = gemma4_checkpoint("dense")
    rotary = Gemma4TextRotaryEmbedding(AutoConfig.from_pretrained(checkpoint))
    expected = dict(rotary.named_buffers())["full_attention_inv_freq"].to(torch.float64).numpy()

    path = convert_with_ours(checkpoint, tmp_path / "ours.gguf", "f32")
    fields = gguf_fields(path)
    n_rot, base = fields["gemma4.rope.dimension_count"][1], fields["gemma4.rope.freq_base"][1]
    from gguf import GGUFReader

    factors = next(t.data for t in GGUFReader(path).tensors if t.name == "rope_freqs.weight").astype(np.float64)
    llama_cpp_freqs = base ** (-2.0 * np.arange(n_rot // 2) / n_rot) / factors
    np.testing.assert_allclose(llama_cpp_freqs, expected, rtol=1e-6, atol=1e-30)


# ---------------------------------------------------------------- memory


@pytest.mark.slow
def test_largest_tiny_checkpoint_keeps_the_memory_bound(tmp_path: Path) -> None:
    """Part 1's bound: peak RSS ≤ largest output tensor + 300 MB. The real-vocabulary E-style checkpoint is
    the largest tiny one (262,144-row embedding and per-layer tables, 777k vocabulary strings)."""
    import subprocess
    import sys

    from gguf import GGUFReader

    out = tmp_path / "ours.gguf"
    measure = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    command = [sys.executable, "-m", "convert", "convert", str(gemma4_checkpoint("e2b", vocab="real")), "-o",
               str(out), "--type", "f16", "--quiet"]
    result = subprocess.run([sys.executable, "-c", measure, *command], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    peak_bytes = int(result.stdout.split()[-1]) * 1024
    largest = max(int(t.n_bytes) for t in GGUFReader(out).tensors)
    assert largest >= 262144 * 64 * 2
    assert peak_bytes <= largest + 300 * 2**20, (peak_bytes / 2**20, largest / 2**20)
