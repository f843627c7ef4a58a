"""Converter parts on their own: safetensors reading, chunked streaming, shards, refusals, vocab, storage."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from convert.checkpoint import open_checkpoint, read_safetensors_header
from convert.generations import generation_for
from convert.generations.base import UnsupportedConfig, rope_parameters
from convert.storage import NATIVE_TYPES, storage_type
from tests.convert.oracle import gguf_differences
from tests.convert.tiny_gemma import RECIPES, tiny_checkpoint

ALLOWED = {"tokenizer.ggml.unknown_token_id": "see test_convert_parity.ALLOWED"}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_safetensors_rows_equal_torch_values(dtype: str, tmp_path: Path) -> None:
    """BF16 is widened without torch (uint16 << 16): exact, as torch's .float() is."""
    import torch
    from safetensors.torch import save_file

    values = torch.randn(37, 19, generator=torch.Generator().manual_seed(0)).to(getattr(torch, dtype))
    save_file({"x": values}, str(tmp_path / "t.safetensors"))
    (tensor,) = read_safetensors_header(tmp_path / "t.safetensors")
    expected = values.float().numpy()
    assert np.array_equal(tensor.read(0, 37), expected)
    assert np.array_equal(np.concatenate([tensor.read(0, 5), tensor.read(5, 37)]), expected)


def test_chunked_streaming_equals_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One row per chunk (every tensor spans many chunks) still gives the reference's bytes."""
    import convert.pipeline
    from convert.api import convert_checkpoint
    from tests.convert.oracle import reference_gguf

    monkeypatch.setattr(convert.pipeline, "CHUNK_BYTES", 1)
    model = tiny_checkpoint("gemma3")
    for type_name in ("f16", "q8_0"):
        out = tmp_path / f"{type_name}.gguf"
        convert_checkpoint(model, out, type_name)
        assert gguf_differences(out, reference_gguf(model, type_name, label="gemma3"), ALLOWED) == []


def test_sharded_checkpoint_equals_single_file(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    from convert.api import convert_checkpoint
    from tests.convert.oracle import reference_gguf

    source = tiny_checkpoint("gemma3")
    model = Path(shutil.copytree(source, tmp_path / "model"))
    tensors = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, members in shards.items():
        save_file({n: tensors[n] for n in members}, str(model / shard))
    weight_map = {n: shard for shard, members in shards.items() for n in members}
    (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    out = tmp_path / "sharded.gguf"
    convert_checkpoint(model, out, "f32")
    assert gguf_differences(out, reference_gguf(source, "f32", label="gemma3"), ALLOWED) == []


def _hparams(case: str, **changes):
    architecture, _, config = RECIPES[case]
    generation = generation_for(architecture)
    return generation, generation.hparams({**config, **changes})


@pytest.mark.parametrize(("case", "changes", "named"), [
    ("gemma2", {"attn_logit_softcapping": None}, "attn_logit_softcapping"),
    ("gemma2", {"final_logit_softcapping": None}, "final_logit_softcapping"),
    ("gemma2", {"query_pre_attn_scalar": 32}, "query_pre_attn_scalar"),
    ("gemma2", {"tie_word_embeddings": False}, "tie_word_embeddings"),
    ("gemma", {"hidden_act": "relu"}, "hidden_act"),
    ("gemma3", {"attn_logit_softcapping": 50.0}, "softcapping"),
    ("gemma3", {"num_hidden_layers": 62, "hidden_size": 128, "query_pre_attn_scalar": 16}, "62 layers"),
    ("gemma3", {"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 4.0}}}, "yarn"),
    ("gemma3", {"use_bidirectional_attention": True}, "bidirectional"),
])
def test_configs_llama_cpp_cannot_run_are_refused(case: str, changes: dict, named: str) -> None:
    generation, hp = _hparams(case, **changes)
    with pytest.raises(UnsupportedConfig, match=named):
        generation.metadata(hp)


def test_27b_layer_count_uses_hidden_over_heads() -> None:
    """llama.cpp's 27B rule (62 layers: scale by H/Hq) accepts the official 27B value, 168 = 5376/32."""
    generation, hp = _hparams("gemma3", num_hidden_layers=62, hidden_size=5376, num_attention_heads=32,
                              head_dim=128, query_pre_attn_scalar=168)
    generation.metadata(hp)


def test_rope_formats_agree() -> None:
    v4 = {"rope_theta": 1e6, "rope_local_base_freq": 1e4, "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
    v5 = {"rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                              "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}
    (full4, swa4), (full5, swa5) = rope_parameters(v4), rope_parameters(v5)
    assert (full4["rope_type"], full4["factor"], full4["rope_theta"], swa4["rope_theta"]) == \
           (full5["rope_type"], full5["factor"], full5["rope_theta"], swa5["rope_theta"])


def test_vision_tower_is_skipped_with_a_note() -> None:
    from convert.pipeline import plan_conversion

    checkpoint = open_checkpoint(tiny_checkpoint("gemma3-mm"))
    plan = plan_conversion(checkpoint, NATIVE_TYPES["f32"])
    assert checkpoint.dropped and all(n.startswith(("vision_tower", "multi_modal_projector")) for n in checkpoint.dropped)
    assert any("vision tower" in note for note in plan.notes)
    assert not any("vision" in t.name for t in plan.tensors)


def test_v5_tokenizer_files_use_tokenizer_json_added_tokens(tmp_path: Path) -> None:
    """transformers-v5 tokenizer_config.json lacks added_tokens_decoder: tokenizer.json's flags apply."""
    from convert.vocab import CONTROL, USER_DEFINED, spm_token_table

    model = Path(shutil.copytree(tiny_checkpoint("gemma3"), tmp_path / "model"))
    config = json.loads((model / "tokenizer_config.json").read_text())
    del config["added_tokens_decoder"]
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "tokenizer.json").write_text(json.dumps({"added_tokens": [
        {"id": 100, "content": "<marker>", "special": True},
        {"id": 101, "content": "\u2581\u2581", "special": False},
    ]}))
    tokens, scores, types, _ = spm_token_table(model, 400)
    assert (tokens[100], types[100], scores[100]) == ("<marker>", CONTROL, -1000.0)
    assert (tokens[101], types[101]) == ("  ", USER_DEFINED)


@pytest.mark.parametrize(("name", "shape", "expected"), [
    ("blk.0.attn_norm.weight", (64,), "F32"),
    ("blk.0.attn_q_norm.weight", (16,), "F32"),
    ("blk.0.attn_q.weight", (64, 64), "Q8_0"),
    ("blk.0.attn_q.weight", (64, 48), "F16"),  # 48 is not a whole number of 32-blocks
    ("blk.0.router.scale", (64, 64), "F32"),
])
def test_storage_policy_for_q8_0(name: str, shape: tuple, expected: str) -> None:
    assert storage_type(name, shape, False, NATIVE_TYPES["q8_0"]).name == expected


def test_end_of_turn_id_from_generation_config(tmp_path: Path) -> None:
    """generation_config.json's eos list [eos, <end_of_turn>] → tokenizer.ggml.eot_token_id."""
    from convert.pipeline import plan_conversion

    model = Path(shutil.copytree(tiny_checkpoint("gemma3"), tmp_path / "model"))
    eot = json.loads((model / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    eot_id = next(int(i) for i, entry in eot.items() if entry["content"] == "<end_of_turn>")
    (model / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, eot_id]}))
    fields = {f.key: f.value for f in plan_conversion(open_checkpoint(model), NATIVE_TYPES["f32"]).fields}
    assert fields["tokenizer.ggml.eos_token_id"] == 1
    assert fields["tokenizer.ggml.eot_token_id"] == eot_id


@pytest.mark.parametrize(("type_name", "matrix_type"), [("q6_k", "Q6_K"), ("iq4_nl", "IQ4_NL"), ("q4_0", "Q4_0")])
def test_quantize_any_llama_cpp_type_by_name(type_name: str, matrix_type: str, tmp_path: Path) -> None:
    import llama_cpp
    from click.testing import CliRunner

    from convert.cli import quantize_command
    from tests.convert.oracle import gguf_fields, gguf_tensors
    from tests.convert.oracle import reference_gguf

    source = reference_gguf(tiny_checkpoint("gemma3-k"), "f16", label="gemma3-k")  # H, F multiples of 256
    out = tmp_path / "q.gguf"
    result = CliRunner().invoke(quantize_command, [str(source), "-o", str(out), "--type", type_name])
    assert result.exit_code == 0, result.stderr
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name.upper()}")
    assert gguf_fields(out)["general.file_type"][1] == ftype
    assert gguf_tensors(out)["blk.0.ffn_up.weight"][0] == matrix_type
