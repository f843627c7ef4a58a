"""What the Hub ships converts: the official config.json files (tests/convert/hub_configs.py), and every legacy
key, ``null`` and missing key a config can carry, are resolved exactly as transformers 5.23's own config
classes resolve them (the oracle: ``AutoConfig.from_pretrained`` on the same file), and the converter either
accepts the config or refuses it in one line — in particular whenever transformers itself refuses it.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from convert.checkpoint import read_config
from convert.generations import generation_for, generations
from convert.generations.base import HParams, UnsupportedConfig
from convert.generations.gemma3n import sparsity_pattern
from convert.generations.gemma4 import full_layer_head_dim, full_layer_kv_heads
from convert.generations.rope import FULL
from tests.convert.hub_configs import HUB_CONFIGS
from tests.convert.tiny_gemma import tiny_checkpoint

pytest.importorskip("transformers")

# Resolved values compared with the oracle when its config class declares them as fields.
FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
    "attention_bias", "hidden_act", "hidden_activation", "sliding_window", "query_pre_attn_scalar",
    "final_logit_softcapping", "attn_logit_softcapping", "layer_types", "use_bidirectional_attention",
    "num_kv_shared_layers", "hidden_size_per_layer_input", "attention_k_eq_v", "use_double_wide_mlp",
)
ROPE_KEYS = ("rope_type", "rope_theta", "factor", "partial_rotary_factor")
# Values a generation computes from several keys, next to where the oracle keeps them.
DERIVED = {
    "gemma3n": lambda hp, oracle: (sparsity_pattern(hp), list(oracle.activation_sparsity_pattern)),
    "gemma4": lambda hp, oracle: ((full_layer_head_dim(hp), full_layer_kv_heads(hp) or hp["num_key_value_heads"]),
                                  _full_layer(oracle)),
}
DERIVED["gemma4-unified"] = DERIVED["gemma4-assistant"] = DERIVED["gemma4-unified-assistant"] = DERIVED["gemma4"]
DELETE = object()
# (key, value) applied to the text config: legacy keys, nulls, missing keys, older formats.
MUTATIONS = [
    ("hidden_act", "gelu"), ("hidden_act", None), ("hidden_act", DELETE), ("hidden_activation", "gelu"),
    ("hidden_activation", None), ("head_dim", None), ("head_dim", DELETE), ("sliding_window", None),
    ("final_logit_softcapping", None), ("attn_logit_softcapping", None), ("query_pre_attn_scalar", None),
    ("layer_types", None), ("layer_types", DELETE), ("rope_scaling", None),
    ("rope_scaling", {"rope_type": "linear", "factor": 2.0}), ("rope_scaling", {"type": "linear", "factor": 2.0}),
    ("rope_parameters", None), ("rope_parameters", {"rope_type": "default", "rope_theta": 5000.0}),
    ("rope_theta", None), ("rope_theta", 20000.0), ("rope_local_base_freq", 20000.0),
    ("sliding_window_pattern", 3), ("_sliding_window_pattern", 3), ("torch_dtype", "float16"),
    ("dtype", "bfloat16"), ("global_head_dim", None), ("num_global_key_value_heads", 2),
    ("per_layer_config", None), ("activation_sparsity_pattern", None), ("activation_sparsity_pattern", 0.95),
    ("tie_word_embeddings", None), ("num_key_value_heads", None), ("num_kv_shared_layers", None),
]


def _full_layer(oracle) -> tuple[int, int]:
    first_full = oracle.layer_types.index(FULL)
    layer = oracle.per_layer_config[first_full]
    return layer.head_dim, layer.num_key_value_heads


def write_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def oracle_config(directory: Path):
    """transformers' text config for the file, or None when transformers refuses the file."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(directory).get_text_config()
    except Exception:  # noqa: BLE001 — any refusal by transformers is the fact under test
        return None


def converter_verdict(directory: Path) -> tuple[HParams | None, str | None]:
    """(resolved hyper-parameters, refusal): the converter's reading of the file and its one-line refusal if any."""
    config, architecture, _ = read_config(directory)
    generation = generation_for(architecture)
    try:
        hp = generation.hparams(config)
    except UnsupportedConfig as error:
        return None, str(error)
    try:
        generation.metadata(hp)
    except UnsupportedConfig as error:
        return hp, str(error)
    return hp, None


def resolution_differences(generation_name: str, hp: HParams, oracle) -> list[str]:
    declared = {f.name for f in dataclasses.fields(type(oracle))}
    # Gemma 4: head_dim / num_key_value_heads vary per layer; the global value is the sliding layers' (the full
    # layers' are compared in DERIVED)
    oracle.allow_global_per_layer_attribute_access = True
    differences = []
    for key in FIELDS:
        if key not in declared:
            continue
        ours, theirs = hp.get(key), getattr(oracle, key)
        if isinstance(theirs, list) and not isinstance(ours, list):  # Gemma 3n: one FFN width for every layer
            ours = [ours] * len(theirs)
        if ours != theirs:
            differences.append(f"{key}: ours {ours!r}, transformers {theirs!r}")
    theirs_rope = oracle.rope_parameters
    for kind, ours_params in hp["rope_parameters"].items():
        theirs_params = theirs_rope[kind] if kind in theirs_rope else theirs_rope  # flat: every kind
        for key in ROPE_KEYS:
            if ours_params.get(key) != theirs_params.get(key):
                differences.append(f"rope {kind}.{key}: ours {ours_params.get(key)!r}, "
                                   f"transformers {theirs_params.get(key)!r}")
    if generation_name in DERIVED:
        ours, theirs = DERIVED[generation_name](hp, oracle)
        if ours != theirs:
            differences.append(f"derived: ours {ours!r}, transformers {theirs!r}")
    return differences


def _text_level(config: dict) -> dict:
    return config["text_config"] if "text_config" in config else config


@pytest.mark.parametrize("name", list(HUB_CONFIGS))
def test_official_config_converts_as_transformers_reads_it(name: str, tmp_path: Path) -> None:
    directory = write_config(tmp_path / "model", json.loads(HUB_CONFIGS[name][1]))
    oracle = oracle_config(directory)
    assert oracle is not None, f"transformers refuses {name}'s config"
    hp, refusal = converter_verdict(directory)
    assert refusal is None, refusal
    config, architecture, _ = read_config(directory)
    assert resolution_differences(generation_for(architecture).name, hp, oracle) == []


@pytest.mark.parametrize(("key", "value"), MUTATIONS,
                         ids=[f"{k}={'(missing)' if v is DELETE else repr(v)}"[:48] for k, v in MUTATIONS])
@pytest.mark.parametrize("name", list(HUB_CONFIGS))
def test_legacy_keys_and_nulls_resolve_as_transformers(name: str, key: str, value, tmp_path: Path) -> None:
    """Where transformers refuses the file, the converter refuses it in one line; where transformers reads it,
    the converter reads the same hyper-parameters (and accepts, or refuses what llama.cpp cannot run, in one line)."""
    config = json.loads(HUB_CONFIGS[name][1])
    text = _text_level(config)
    if value is DELETE:
        text.pop(key, None)
    else:
        text[key] = value
    directory = write_config(tmp_path / "model", config)
    oracle = oracle_config(directory)
    hp, refusal = converter_verdict(directory)
    if refusal is not None:
        assert refusal and "\n" not in refusal
    if oracle is None:
        assert refusal is not None, f"transformers refuses {key}={value!r}, the converter accepts it"
        return
    if hp is not None:
        _, architecture, _ = read_config(directory)
        assert resolution_differences(generation_for(architecture).name, hp, oracle) == []


ORACLE_CLASSES = {"gemma1": "GemmaConfig", "gemma2": "Gemma2Config", "gemma3": "Gemma3TextConfig",
                  "gemma3n": "Gemma3nTextConfig", "gemma4": "Gemma4TextConfig",
                  "gemma4-unified": "Gemma4UnifiedTextConfig", "embeddinggemma": "Gemma3TextConfig",
                  "gemma4-assistant": "Gemma4TextConfig", "gemma4-unified-assistant": "Gemma4UnifiedTextConfig"}
# the drafters' top-level keys (text_config merged over them) are their own config class's fields
OUTER_CLASSES = {"gemma4-assistant": "Gemma4AssistantConfig",
                 "gemma4-unified-assistant": "Gemma4UnifiedAssistantConfig"}
# Defaults the config classes take from keyword arguments, not from declared fields.
KWARG_DEFAULTS = {
    "rope_theta": "RotaryEmbeddingConfigMixin.default_theta / default_theta['global']",
    "rope_local_base_freq": "Gemma3(n)TextConfig.default_theta['local']",
    "sliding_window_pattern": "Gemma3TextConfig: kwargs.get('sliding_window_pattern', 6)",
    "global_head_dim": "Gemma4TextConfig: kwargs.pop('global_head_dim', 512)",
    "num_global_key_value_heads": "Gemma4TextConfig: kwargs.pop('num_global_key_value_heads', None)",
}

# Gemma 4 keys the Unified table inherits that Gemma4UnifiedTextConfig does not have (no per-layer embeddings,
# no experts: its `fixed` turns both off, so these are never read)
NOT_IN_CLASS = {"gemma4-unified": {"vocab_size_per_layer_input", "num_experts", "top_k_experts",
                                   "moe_intermediate_size"}}
NOT_IN_CLASS["gemma4-unified-assistant"] = NOT_IN_CLASS["gemma4-unified"]


@pytest.mark.parametrize("generation", list(generations()), ids=lambda g: g.name)
def test_defaults_are_the_config_class_defaults(generation, tmp_path: Path) -> None:
    """Every default a generation table assumes for a missing key is transformers' own, a null is allowed
    exactly where the field is optional, and an empty config resolves as the config class resolves nothing."""
    import transformers

    oracle_class = getattr(transformers, ORACLE_CLASSES[generation.name])
    fields = {f.name: f for f in dataclasses.fields(oracle_class)}
    if generation.name in OUTER_CLASSES:
        fields.update({f.name: f for f in dataclasses.fields(getattr(transformers, OUTER_CLASSES[generation.name]))
                       if f.name != "text_config"})
    for key, value in generation.defaults.items():
        if key in KWARG_DEFAULTS or key in generation.fixed or key in NOT_IN_CLASS.get(generation.name, ()):
            continue
        assert key in fields, f"{generation.name}: {key} is not a {oracle_class.__name__} field"
        default = fields[key].default
        assert value == default, f"{generation.name}: {key} = {value!r}, {oracle_class.__name__}: {default!r}"
        if default is not None:  # a null in the file is refused exactly where transformers' field refuses it
            optional = type(None) in typing.get_args(fields[key].type)
            assert (key in generation.nullable) == optional, f"{generation.name}: {key} nullable: {optional}"
    oracle = oracle_class()
    hp = generation.hparams({})
    assert resolution_differences(generation.name, hp, oracle) == []


@pytest.mark.parametrize(("config", "refused"), [
    ({"hidden_act": "gelu"}, False),  # the official Gemma 1 value: read as the tanh approximation
    ({"hidden_act": "gelu", "hidden_activation": "gelu"}, False),  # GemmaConfig ignores hidden_activation
    ({"hidden_act": "relu"}, True),
    ({"hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu"}, False),
])
def test_gemma1_activation_keys_follow_gemma_config(config: dict, refused: bool) -> None:
    generation = generation_for("GemmaForCausalLM")
    hp = generation.hparams(config)
    if refused:
        with pytest.raises(UnsupportedConfig, match="tanh-approximated GELU"):
            generation.metadata(hp)
        return
    generation.metadata(hp)
    assert hp["hidden_act"] == "gelu_pytorch_tanh"
    assert len(hp.notes) == (config["hidden_act"] == "gelu")


def test_hub_form_gemma1_checkpoint_converts_like_the_transformers5_form(tmp_path: Path) -> None:
    """The same weights under the Hub's legacy config.json and under transformers 5's: the same GGUF."""
    from convert.api import convert_checkpoint
    from tests.convert.oracle import gguf_differences

    hub, saved = tmp_path / "hub.gguf", tmp_path / "saved.gguf"
    summary = convert_checkpoint(tiny_checkpoint("gemma-hub"), hub, "f32")
    convert_checkpoint(tiny_checkpoint("gemma"), saved, "f32")
    assert gguf_differences(hub, saved, {}) == []
    assert [note for note in summary.notes if "gelu" in note] == summary.notes and len(summary.notes) == 1


def test_gemma_edge_convert_on_the_hub_form_gemma1_checkpoint(tmp_path: Path) -> None:
    """`gemma-edge convert` end to end on a checkpoint whose config.json says hidden_act "gelu": exit 0, the
    GGUF written, the legacy value named once on stderr."""
    model = tiny_checkpoint("gemma-hub")
    assert json.loads((model / "config.json").read_text())["hidden_act"] == "gelu"
    out = tmp_path / "gemma1.gguf"
    command = [sys.executable, "-m", "gemma_edge", "convert", str(model), "-o", str(out), "--type", "q8_0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and 'hidden_act "gelu"' in notes[0] and "gelu_pytorch_tanh" in notes[0], result.stderr
    assert "Traceback" not in result.stderr
