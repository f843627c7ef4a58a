"""The GGUF metadata keys gemma-edge or llama.cpp computes with, and the type and range each must have.

llama.cpp's model loader checks a key's type when it reads it, but asserts (aborts the process) on some
values: a block count outside 1..512, more experts used than exist, an unknown rope scaling type, two
vocabulary entries with the same text, a NaN norm epsilon (found by bench/fuzz_gguf.py); gemma-edge's
own header code divides and multiplies with others. GGUFFile applies the key rules when it reads a
header (check_vocabulary where a model is described or loaded), so a file that breaks one is refused
with InvalidModelError naming the key before llama.cpp, mtmd or our code sees the value. Keys not
listed here are only read structurally.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gemma_edge.errors import InvalidModelError

if TYPE_CHECKING:
    from gemma_edge.gguf_file import GGUFFile

# GGUF value types: the reader (gguf_file) decodes them, the rules below name their kinds.
SCALAR_FORMATS = {  # GGUF value type -> struct format (STRING and ARRAY are the other two)
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
STRING, ARRAY = 8, 9

MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # llama_rope_scaling_type_from_string
INT32_MAX = (1 << 31) - 1  # llama.cpp's API returns these counts as int32 (a larger context length read
# back as -1 broke llama-cpp-python's tokenizer: found by bench/fuzz_gguf.py)
# llama-cpp-python sizes every tokenize() buffer by the training context (4 bytes a token): 2^31 tokens
# took minutes per call (fuzzing again). 16x Gemma 4's 262,144 leaves room for longer models.
MAX_CONTEXT = 1 << 22

_KINDS = {  # GGUF value type -> the kind a rule names
    0: "int", 1: "int", 2: "int", 3: "int", 4: "int", 5: "int", 10: "int", 11: "int",
    6: "float", 12: "float", 7: "bool", 8: "str",
}


@dataclass(frozen=True)
class Rule:
    kinds: tuple[str, ...]  # "int", "float", "bool", "str"; "int[]" etc. for arrays of them
    low: float = 0  # numbers (and array elements): inclusive range; NaN never passes
    high: float = INT32_MAX
    choices: tuple[str, ...] = ()  # strings: the values allowed (empty: any)
    each_element: bool = True  # arrays: check every element's range (off for the vocabulary-sized ones)
    multiple_of: int = 1  # integers: a multiple of this


_TEXT, _FLAG, _REAL = Rule(("str",)), Rule(("bool",)), Rule(("float",))
_COUNT, _POSITIVE = Rule(("int",)), Rule(("int",), 1)
_PER_LAYER = Rule(("int", "int[]"), 1)  # one value, or one per layer
_REALS = Rule(("float[]",))
_ROPE_DIMS = Rule(("int",), 2, multiple_of=2)  # ggml's rope asserts an even count (found by fuzzing)

# "{arch}" stands for general.architecture's value.
RULES: dict[str, Rule] = {
    "general.architecture": _TEXT, "general.type": _TEXT, "general.name": _TEXT, "general.basename": _TEXT,
    "general.finetune": _TEXT, "general.size_label": _TEXT, "general.file_type": _COUNT,
    "general.quantization_version": _COUNT,
    "tokenizer.ggml.model": _TEXT, "tokenizer.ggml.pre": _TEXT, "tokenizer.chat_template": _TEXT,
    "tokenizer.ggml.tokens": Rule(("str[]",)), "tokenizer.ggml.merges": Rule(("str[]",)),
    "tokenizer.ggml.scores": Rule(("float[]", "int[]"), each_element=False),
    "tokenizer.ggml.token_type": Rule(("int[]",), each_element=False),
    **{f"tokenizer.ggml.{name}_token_id": _COUNT
       for name in ("bos", "eos", "eot", "eom", "unknown", "seperator", "padding", "mask")},
    **{f"tokenizer.ggml.add_{name}_token": _FLAG for name in ("bos", "eos", "sep")},
    "tokenizer.ggml.add_space_prefix": _FLAG,
    "{arch}.context_length": Rule(("int",), 1, MAX_CONTEXT), "{arch}.embedding_length": _POSITIVE,
    "{arch}.block_count": Rule(("int",), 1, MAX_LAYERS), "{arch}.feed_forward_length": _PER_LAYER,
    "{arch}.attention.head_count": _PER_LAYER, "{arch}.attention.head_count_kv": _PER_LAYER,
    "{arch}.attention.key_length": _POSITIVE, "{arch}.attention.value_length": _POSITIVE,
    "{arch}.attention.key_length_swa": _POSITIVE, "{arch}.attention.value_length_swa": _POSITIVE,
    "{arch}.attention.sliding_window": _COUNT, "{arch}.attention.sliding_window_pattern": Rule(("bool[]", "int[]")),
    "{arch}.attention.layer_norm_rms_epsilon": _REAL, "{arch}.rope.freq_base": _REAL,
    "{arch}.rope.freq_base_swa": _REAL, "{arch}.rope.scaling.factor": _REAL,
    "{arch}.rope.scaling.type": Rule(("str",), choices=ROPE_SCALING_TYPES),
    "{arch}.expert_count": Rule(("int",), 0, MAX_EXPERTS), "{arch}.expert_used_count": Rule(("int",), 0, MAX_EXPERTS),
    "{arch}.embedding_length_per_layer_input": _COUNT, "{arch}.final_logit_softcapping": _REAL,
    "{arch}.attn_logit_softcapping": _REAL, "{arch}.rope.dimension_count": _ROPE_DIMS,
    "{arch}.rope.dimension_count_swa": _ROPE_DIMS, "{arch}.expert_feed_forward_length": _POSITIVE,
    "{arch}.attention.shared_kv_layers": _COUNT, "{arch}.altup.active_idx": _COUNT,
    "{arch}.altup.num_inputs": _POSITIVE,
    "{arch}.activation_sparsity_scale": Rule(("float[]",), -math.inf),  # -inf: a layer without sparsity
    # mmproj (architecture "clip")
    "clip.has_vision_encoder": _FLAG, "clip.has_audio_encoder": _FLAG, "clip.projector_type": _TEXT,
    "clip.vision.projector_type": _TEXT, "clip.audio.projector_type": _TEXT,
    "clip.vision.image_size": _COUNT, "clip.vision.patch_size": _POSITIVE,
    "clip.vision.projector.scale_factor": _POSITIVE, "clip.vision.image_max_pixels": _COUNT,
    "clip.vision.image_min_pixels": _COUNT, "clip.use_gelu": _FLAG, "clip.vision.image_mean": _REALS,
    "clip.vision.image_std": _REALS, "clip.vision.attention.layer_norm_epsilon": _REAL,
    **{f"clip.{tower}.{key}": _COUNT for tower in ("vision", "audio")  # 0 in some real files
       for key in ("embedding_length", "feed_forward_length", "block_count", "attention.head_count",
                   "projection_dim")},
}


# Architectures all of whose layers read another model's KV cache (an MTP drafter reads its target's).
KV_FROM_TARGET = ("gemma4-assistant",)


def check_keys(gguf: GGUFFile) -> None:
    """Raise InvalidModelError for the first key whose type or value breaks its rule."""
    arch = gguf.get("general.architecture")
    arch = arch if isinstance(arch, str) else ""
    for pattern, rule in RULES.items():
        key = pattern.replace("{arch}", arch)
        if key in gguf.metadata:
            _check(gguf, key, rule)
    _check_lengths(gguf, arch)


def _check(gguf: GGUFFile, key: str, rule: Rule) -> None:
    vtype = gguf.value_types[key]
    kind = _KINDS.get(gguf.array_type(key), "?") + "[]" if vtype == ARRAY else _KINDS[vtype]
    if kind not in rule.kinds:
        raise InvalidModelError(f"{gguf.path}: metadata {key} is {_describe(kind)}, expected "
                                f"{' or '.join(_describe(k) for k in rule.kinds)}")
    if vtype == ARRAY and (not rule.each_element or kind == "str[]"):  # no range to check in strings
        return
    values = gguf.array(key) if vtype == ARRAY else [gguf.metadata[key]]
    if kind in ("int", "int[]", "float", "float[]"):
        bad = next((v for v in values if not rule.low <= v <= rule.high), None)  # NaN compares false
        if bad is not None:
            raise InvalidModelError(f"{gguf.path}: metadata {key} is {bad}, outside {rule.low}..{rule.high}")
        odd = next((v for v in values if kind.startswith("int") and v % rule.multiple_of), None)
        if odd is not None:
            raise InvalidModelError(f"{gguf.path}: metadata {key} is {odd}, not a multiple of {rule.multiple_of}")
    if rule.choices and values[0] not in rule.choices:
        raise InvalidModelError(f"{gguf.path}: metadata {key} is {values[0]!r}, not one of {', '.join(rule.choices)}")


_NAMES = {"int": ("an integer", "integers"), "float": ("a number", "numbers"), "bool": ("a boolean", "booleans"),
          "str": ("a string", "strings"), "?": ("an unknown type", "values of an unknown type")}


def _describe(kind: str) -> str:
    return f"an array of {_NAMES[kind[:-2]][1]}" if kind.endswith("[]") else _NAMES[kind][0]


def _check_lengths(gguf: GGUFFile, arch: str) -> None:
    """Counts that must agree: the per-token arrays and the token list, experts used and experts, shared
    KV layers and layers, the active AltUp input and the inputs."""
    n_tokens = gguf.array_length("tokenizer.ggml.tokens")
    for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        if key in gguf.metadata and gguf.array_length(key) != n_tokens:
            raise InvalidModelError(f"{gguf.path}: metadata {key} has {gguf.array_length(key):,} entries for "
                                    f"{n_tokens:,} tokens")
    used, experts = gguf.get(f"{arch}.expert_used_count", 0), gguf.get(f"{arch}.expert_count", 0)
    if used > experts:
        raise InvalidModelError(f"{gguf.path}: metadata {arch}.expert_used_count {used} is more than the "
                                f"{experts} experts")
    layers, shared = gguf.get(f"{arch}.block_count", 0), gguf.get(f"{arch}.attention.shared_kv_layers", 0)
    if shared >= max(layers, 1) and arch not in KV_FROM_TARGET:
        raise InvalidModelError(f"{gguf.path}: metadata {arch}.attention.shared_kv_layers {shared} leaves none of "
                                f"the {layers} layers its own KV cache")
    active, inputs = gguf.get(f"{arch}.altup.active_idx", 0), gguf.get(f"{arch}.altup.num_inputs", 1)
    if active >= inputs:
        raise InvalidModelError(f"{gguf.path}: metadata {arch}.altup.active_idx {active} is not below "
                                f"altup.num_inputs {inputs}")


def check_vocabulary(gguf: GGUFFile) -> None:
    """No two tokens alike: llama.cpp's vocabulary loader asserts it (an empty token is renamed there, so
    empty ones may repeat). Reads every token, so it runs where a model is described or loaded, not on
    every header read."""
    tokens = [t for t in gguf.string_bytes("tokenizer.ggml.tokens") if t]
    if len(set(tokens)) != len(tokens):
        seen: set[bytes] = set()
        twice = next(t for t in tokens if t in seen or seen.add(t))
        raise InvalidModelError(f"{gguf.path}: the vocabulary holds the token {twice.decode('utf-8', 'replace')!r} "
                                "twice")
