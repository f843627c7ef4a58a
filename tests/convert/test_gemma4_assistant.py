"""Gemma 4 MTP drafters (tiny seeded checkpoints saved by transformers 5.23 with the kv-sharing shim,
tests/convert/fixtures/tiny_gemma4_assistant.py) → ``gemma4-assistant``:

* byte-identical to llama.cpp's own converter (``Gemma4AssistantModel``) on the same checkpoint, for the
  plain drafter, the one with ordered embeddings (E2B/E4B-like, whose ``masked_embedding`` both leave out)
  and the Unified one (the reference run on the older spelling of its text config, which it needs);
* llama.cpp 0.3.36 loads the GGUF as a drafter (hidden sizes, MTP layer count) and refuses a context for it
  without a target's, and every tensor equals transformers' weight (F32);
* refusals: configs no transformers drafter has, a missing or unusable target hidden size, an untied head.
"""
from __future__ import annotations

import ctypes
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from convert.checkpoint import read_config
from convert.generations.base import UnsupportedConfig
from convert.generations.gemma4_assistant import GEMMA4_ASSISTANT, GEMMA4_UNIFIED_ASSISTANT
from tests.convert.fixtures.tiny_gemma4_assistant import (
    N_LAYERS, TARGET_HIDDEN, assistant_checkpoint, hf_assistant,
)
from tests.convert.oracle import gguf_differences, gguf_fields, gguf_tensors, reference_convert
from tests.convert.tiny import cached_file, linked_copy
from tests.convert.tiny_gemma4 import TINY_VOCAB_SIZE, conversion_refusal, convert_with_ours
from tests.convert.tiny_gemma4_unified import OLDER_TEXT_KEYS, older_text_config_copy

ARCH = "gemma4-assistant"
DRAFTER_HIDDEN = 32
# HF name → llama.cpp's (src/models/gemma4-assistant.cpp loads these; gguf-py names them)
TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "pre_projection.weight": "nextn.pre_projection.weight",
             "post_projection.weight": "nextn.post_projection.weight"}
LAYER_NAMES = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
               "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.o_proj.weight": "attn_output.weight",
               "post_attention_layernorm.weight": "post_attention_norm.weight",
               "pre_feedforward_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
               "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
               "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
               "layer_scalar": "layer_output_scale.weight"}


def reference_gguf(target: str, type_name: str) -> Path:
    """llama.cpp's converter on the drafter (cached); the Unified one on a copy whose text config spells out the
    keys llama.cpp's converter requires and transformers 5.23 no longer writes."""
    source = assistant_checkpoint(target)
    recipe = {"model": source.name, "type": type_name, "older": OLDER_TEXT_KEYS if target == "unified" else None,
              "converter": "llama-cpp-python 0.3.36"}

    def build(path: Path) -> None:
        if target != "unified":
            reference_convert(source, path, type_name)
            return
        with tempfile.TemporaryDirectory() as scratch:
            reference_convert(older_text_config_copy(source, Path(scratch) / "checkpoint"), path, type_name)

    return cached_file(f"ref-{source.name}-{type_name}", recipe, ".gguf", build)


def raw_config(target: str) -> dict:
    return json.loads((assistant_checkpoint(target) / "config.json").read_text())


def merged_config(target: str, **changes) -> dict:
    return {**read_config(assistant_checkpoint(target))[0], **changes}


# ---------------------------------------------------------------- llama.cpp's converter


@pytest.mark.slow
@pytest.mark.parametrize(("target", "type_name"), [("dense", "f32"), ("dense", "f16"), ("dense", "q8_0"),
                                                   ("e2b", "f32"), ("unified", "f32"), ("unified", "q8_0")])
def test_same_gguf_as_llama_cpps_converter(target: str, type_name: str, tmp_path: Path) -> None:
    ours = convert_with_ours(assistant_checkpoint(target), tmp_path / "ours.gguf", type_name)
    assert gguf_differences(ours, reference_gguf(target, type_name)) == []
    fields = gguf_fields(ours)
    assert fields["general.architecture"][1] == ARCH
    assert fields[f"{ARCH}.embedding_length_out"] == ("UINT32", TARGET_HIDDEN)
    assert fields[f"{ARCH}.nextn_predict_layers"] == ("UINT32", N_LAYERS)
    assert fields[f"{ARCH}.attention.shared_kv_layers"] == ("UINT32", N_LAYERS)


def test_unified_drafter_config_lacks_what_llama_cpps_converter_needs() -> None:
    """Why the Unified reference runs on a copy: transformers 5.23 saves the text config without these keys."""
    text = raw_config("unified")["text_config"]
    assert text["model_type"] == "gemma4_unified_text" and not set(OLDER_TEXT_KEYS) & set(text)


def test_ordered_embeddings_are_left_out_with_a_note(tmp_path: Path) -> None:
    from convert.api import convert_checkpoint

    assert raw_config("e2b")["use_ordered_embeddings"] is True
    summary = convert_checkpoint(assistant_checkpoint("e2b"), tmp_path / "e2b.gguf", "f32")
    assert any("masked_embedding" in note for note in summary.notes)
    assert not any(name.startswith("masked") for name in gguf_tensors(tmp_path / "e2b.gguf"))


# ---------------------------------------------------------------- llama.cpp and transformers


@pytest.mark.parametrize("target", ["dense", "e2b", "unified"])
def test_llama_cpp_loads_it_as_a_drafter_that_needs_a_target(target: str, tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    path = convert_with_ours(assistant_checkpoint(target), tmp_path / "drafter.gguf", "f32")
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
    assert model, "llama.cpp did not load the drafter"
    try:
        buffer = ctypes.create_string_buffer(64)
        llama_cpp.llama_model_meta_val_str(model, b"general.architecture", buffer, len(buffer))
        assert buffer.value.decode() == ARCH
        assert llama_cpp.llama_model_n_embd(model) == DRAFTER_HIDDEN
        assert llama_cpp.llama_model_n_embd_out(model) == TARGET_HIDDEN
        assert llama_cpp.llama_model_n_layer_nextn(model) == N_LAYERS
        assert llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model)) == TINY_VOCAB_SIZE
        # a drafter context reads the target's KV cache and embeddings: without one llama.cpp refuses it
        assert not llama_cpp.llama_init_from_model(model, llama_cpp.llama_context_default_params())
    finally:
        llama_cpp.llama_model_free(model)


@pytest.mark.slow
def test_drafter_for_the_real_vocabulary_target_has_the_targets_vocabulary(tmp_path: Path) -> None:
    """The drafter of tiny_gemma4_gguf("e2b") (real 262,144-token vocabulary): both GGUFs, from the same
    tokenizer files, carry the same tokenizer keys (a runtime pairs them by vocabulary)."""
    from tests.convert.tiny_gemma4 import tiny_gemma4_gguf

    drafter = gguf_fields(convert_with_ours(assistant_checkpoint("e2b", vocab="real"), tmp_path / "d.gguf", "f16"))
    target = gguf_fields(tiny_gemma4_gguf("e2b"))
    tokenizer_keys = {key for key in target if key.startswith("tokenizer.")}
    assert tokenizer_keys == {key for key in drafter if key.startswith("tokenizer.")}
    assert all(drafter[key] == target[key] for key in tokenizer_keys)
    assert len(drafter["tokenizer.ggml.tokens"][1]) == 262144


def gguf_arrays(path: Path) -> dict[str, np.ndarray]:
    from gguf import GGUFReader

    tensors = GGUFReader(path).tensors
    return {t.name: np.array(t.data).reshape(tuple(int(n) for n in reversed(t.shape))) for t in tensors}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["e2b", "unified"])
def test_every_tensor_is_transformers_weight(target: str, tmp_path: Path) -> None:
    directory = assistant_checkpoint(target)
    weights = {name: value.numpy() for name, value in hf_assistant(directory).state_dict().items()}
    arrays = gguf_arrays(convert_with_ours(directory, tmp_path / "drafter.gguf", "f32"))
    expected = dict(TOP_NAMES)
    for i in range(N_LAYERS):
        expected.update({f"model.layers.{i}.{hf}": f"blk.{i}.{gguf}" for hf, gguf in LAYER_NAMES.items()})
    for hf, gguf in expected.items():
        np.testing.assert_array_equal(arrays[gguf], weights[hf].reshape(arrays[gguf].shape), err_msg=hf)
    # what is left: the tied head (transformers' copy of the embedding table), the centroid mask, rope_freqs
    np.testing.assert_array_equal(weights["lm_head.weight"], weights["model.embed_tokens.weight"])
    assert {n for n in weights if n not in expected} <= {"lm_head.weight", "masked_embedding.centroids.weight",
                                                         "masked_embedding.token_ordering"}
    assert set(arrays) - set(expected.values()) == {"rope_freqs.weight"}


# ---------------------------------------------------------------- refusals


def metadata_of(config: dict, generation=GEMMA4_ASSISTANT) -> dict:
    return {f.key: f.value for f in generation.metadata(generation.hparams(config))}


@pytest.mark.parametrize(("change", "message"), [
    ({"hidden_size_per_layer_input": 16}, "has no hidden size per layer input"),
    ({"vocab_size_per_layer_input": 512}, "has no vocab size per layer input"),
    ({"enable_moe_block": True}, "has no enable moe block"),
    ({"use_double_wide_mlp": True}, "has no use double wide mlp"),
    ({"num_kv_shared_layers": 2}, "every layer of a Gemma 4 drafter reads the target's KV cache"),
    ({"backbone_hidden_size": None}, "config.json has no backbone_hidden_size"),
    ({"backbone_hidden_size": DRAFTER_HIDDEN}, "to differ from the drafter's, but both are 32"),
    ({"tie_word_embeddings": False}, "always reuses token_embd as the output layer"),
])
def test_refuses_what_no_drafter_runtime_has(change: dict, message: str) -> None:
    with pytest.raises(UnsupportedConfig, match=message):
        metadata_of(merged_config("dense", **change))


def test_config_is_read_as_transformers_resolves_it() -> None:
    """Gemma4AssistantConfig makes 0 shared layers mean all; the Unified text config has no per-layer
    embeddings or experts, whatever its file says."""
    assert metadata_of(merged_config("dense", num_kv_shared_layers=0))[f"{ARCH}.attention.shared_kv_layers"] == 4
    unified = merged_config("unified", hidden_size_per_layer_input=256, enable_moe_block=True,
                            vocab_size_per_layer_input=262144)
    assert metadata_of(unified, GEMMA4_UNIFIED_ASSISTANT)[f"{ARCH}.embedding_length_per_layer_input"] == 0


def test_a_drafter_without_its_target_hidden_size_is_refused_in_one_line(tmp_path: Path) -> None:
    checkpoint = linked_copy(assistant_checkpoint("dense"), tmp_path / "ckpt",
                           lambda raw: raw.pop("backbone_hidden_size"))
    assert "no backbone_hidden_size" in conversion_refusal(checkpoint, tmp_path / "out.gguf")


def test_a_drafter_without_tokenizer_files_is_told_to_take_its_targets(tmp_path: Path) -> None:
    checkpoint = linked_copy(assistant_checkpoint("dense"), tmp_path / "ckpt", drop=("tokenizer.json",))
    assert "copy the target's tokenizer.json" in conversion_refusal(checkpoint, tmp_path / "out.gguf")


def test_a_target_labelled_as_a_drafter_is_refused_in_one_line(tmp_path: Path) -> None:
    """A Gemma 4 model whose config names the drafter class: it has no target hidden size (and K/V weights)."""
    from tests.convert.tiny_gemma4 import gemma4_checkpoint

    checkpoint = linked_copy(gemma4_checkpoint("dense"), tmp_path / "ckpt",
                           lambda raw: raw.update(architectures=["Gemma4AssistantForCausalLM"]))
    assert "no backbone_hidden_size" in conversion_refusal(checkpoint, tmp_path / "out.gguf")
