"""The conversion table: how one Gemma generation converts, everything that differs between generations,
as data.

A generation module (``convert/generations/<name>.py``) builds one :class:`ConversionTable` value and the
registry (``convert/generations/__init__.py``) lists it. Its ``name`` is the runtime's name of the Gemma
generation it produces (``gemma_edge/generations``), with a suffix for a variant (``gemma4-unified``);
``tests/test_generations.py`` checks the two tables agree. The pipeline (``convert/pipeline.py``) never
branches on a generation's name; it only reads the fields below. To add a generation:

1. **Detection.** ``hf_architectures`` — the ``architectures[0]`` strings of ``config.json`` this
   generation converts (e.g. ``("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")``).
   ``gguf_arch`` — the ``general.architecture`` value llama.cpp knows (``"gemma3"``).

2. **Hyper-parameters.** ``defaults`` — the transformers config-class defaults (``GemmaConfig()``...)
   for every field the generation reads, because official config files omit fields that equal the
   defaults. :meth:`ConversionTable.hparams` resolves a config the way the transformers config class does
   (``tests/convert/test_hub_configs.py`` checks it against that class on the Hub's own config files):
   :class:`HParams` = ``{**defaults, **config}`` (with ``text_config`` merged over the top level first,
   see ``convert/checkpoint.py``); then every :class:`LegacyValue` transformers rewrites on load is
   rewritten the same way, with a note (Gemma 1's ``hidden_act: "gelu"``); then ``layer_types(hp)``
   replaces ``layer_types`` with the per-layer attention kinds and ``rope(hp)`` replaces
   ``rope_parameters`` with the RoPE parameters per attention kind (``convert/generations/rope.py``:
   ``rope_scaling`` / ``rope_theta`` / ``rope_local_base_freq`` of older configs folded in as
   transformers folds them). A ``null`` keeps its meaning, no value: it is refused for every key of
   ``defaults`` with a value there unless the key is in ``nullable`` (transformers types it ``X | None``),
   as transformers' strict config classes refuse it.
   ``metadata(hp)`` returns the architecture's GGUF keys as :class:`Field` values (build them with
   :func:`u32`, :func:`f32`, :func:`string`, :func:`boolean`, :func:`i32_array`, ...; key names from
   ``gguf.Keys`` formatted with ``arch=gguf_arch``). It must **refuse** (raise
   :class:`UnsupportedConfig`) any config llama.cpp cannot run as the checkpoint intends, with a message
   naming the runtime's assumption ("llama.cpp's gemma2 hard-codes the query scale to 1/sqrt(head_dim)
   ... but query_pre_attn_scalar is 128"). A GGUF that loads and computes different logits is worse than
   no GGUF. ``general.*`` keys and the vocabulary are written by the pipeline, not here.

3. **Tensors.** ``tensors`` — a tuple of :class:`TensorRule`. Every tensor in the checkpoint (after
   name normalisation: ``language_model.`` removed, multimodal towers dropped, see
   ``convert/checkpoint.py``) must fullmatch exactly one rule's ``hf`` regex, else the conversion
   fails naming the tensor: leftovers are never passed through (llama.cpp rejects extra tensors) and
   never silently dropped. A rule with ``gguf=None`` drops its tensors on purpose (e.g. ``lm_head``
   of tied models). The regex's named group ``bid`` is the layer index and is substituted into
   ``gguf`` (``"blk.{bid}.attn_norm.weight"``). ``transform`` is an element-wise float32 function
   applied to chunks of rows (e.g. :func:`plus_one` for Gemma 1-3 RMSNorm weights, which transformers
   applies as ``x * (1 + w)`` while llama.cpp multiplies by the stored weight) — it must not depend on
   the position of an element, because large tensors are converted a few rows at a time.
   ``stack=n`` collects the tensors whose group ``xid`` is ``0..n-1`` into one GGUF tensor with a new
   leading axis (Gemma 3n ``altup_projections.{0,1,2}``). ``match_vocab=True`` truncates or zero-pads
   the leading axis to the number of GGUF tokens (embedding tables: llama.cpp requires rows ==
   ``len(tokenizer.ggml.tokens)``). ``keep_f32=True`` forces F32 storage for 2-D tensors the runtime
   reads as F32 (routers, altup coefficients); the pipeline already keeps F32 every tensor with <= 1
   dimension, every ``*_norm.weight`` and every name not ending in ``.weight`` (llama.cpp's policy).
   ``required=True`` makes a missing tensor an error (per layer when the pattern has ``bid``).
   Shapes are never transposed: an HF ``np(out, in)`` weight becomes ggml ``{in, out}`` as is.

4. **Generated tensors.** ``extra_tensors(hp, n_tokens, present)`` returns :class:`PlannedTensor`
   values that the checkpoint does not hold (Gemma 4 ``rope_freqs``; Gemma 3n zero placeholders for
   KV-shared layers, given the set ``present`` of GGUF names already planned).

5. **Vocabulary.** ``vocab(checkpoint, hp)`` returns a :class:`Vocab` (tokens and all
   ``tokenizer.*`` keys). ``convert/vocab.py`` provides the SentencePiece path shared by Gemma 1-3n.

6. **Notes.** ``notes(hp, dropped)`` returns human-readable lines printed with the summary, e.g. that a
   vision tower was skipped (``dropped`` = normalised names removed as multimodal). Notes about the
   config itself (legacy values) are collected in ``hp.notes`` by :meth:`ConversionTable.hparams`.

Everything here is pure data and pure functions; reading files and writing GGUF happen elsewhere.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from gguf import GGUFValueType


class UnsupportedConfig(ValueError):
    """The checkpoint's config asks for something llama.cpp's runtime for this architecture cannot do."""


class UnsupportedCheckpoint(ValueError):
    """The checkpoint's tensors do not fit the generation's tensor table (missing or unknown tensors)."""


# ---------------------------------------------------------------- metadata fields


@dataclass(frozen=True)
class Field:
    """One GGUF key/value with its exact GGUF type (the reference writes ints as UINT32, etc.)."""

    key: str
    value: Any
    vtype: GGUFValueType
    sub_type: GGUFValueType | None = None  # element type of an ARRAY


def u32(key: str, value: int) -> Field:
    return Field(key, int(value), GGUFValueType.UINT32)


def f32(key: str, value: float) -> Field:
    return Field(key, float(value), GGUFValueType.FLOAT32)


def string(key: str, value: str) -> Field:
    return Field(key, str(value), GGUFValueType.STRING)


def boolean(key: str, value: bool) -> Field:
    return Field(key, bool(value), GGUFValueType.BOOL)


def i32_array(key: str, values: Sequence[int]) -> Field:
    return Field(key, [int(v) for v in values], GGUFValueType.ARRAY, GGUFValueType.INT32)


def f32_array(key: str, values: Sequence[float]) -> Field:
    return Field(key, [float(v) for v in values], GGUFValueType.ARRAY, GGUFValueType.FLOAT32)


def bool_array(key: str, values: Sequence[bool]) -> Field:
    return Field(key, [bool(v) for v in values], GGUFValueType.ARRAY, GGUFValueType.BOOL)


def string_array(key: str, values: Sequence[str]) -> Field:
    return Field(key, list(values), GGUFValueType.ARRAY, GGUFValueType.STRING)


# ---------------------------------------------------------------- hyper-parameters


class HParams(dict):
    """Effective hyper-parameters: generation defaults, overridden by config.json (text_config merged).

    ``notes`` holds one line per config value that was read differently from what the file says (legacy
    values transformers rewrites on load), printed with the conversion summary."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.notes: list[str] = []

    def require(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise UnsupportedConfig(f"config.json has no value for {key!r}")
        return value


def rope_parameters(hp: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(full-attention rope params, sliding-attention rope params), from either config format.

    transformers v5 writes ``rope_parameters: {"full_attention": {...}, "sliding_attention": {...}}``
    (or one flat dict); v4 writes ``rope_theta``, ``rope_local_base_freq`` and ``rope_scaling``.
    """
    params = hp.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full = dict(params.get("full_attention") or {})
        swa = dict(params.get("sliding_attention") or {})
    else:
        full = dict(params) if params else dict(hp.get("rope_scaling") or {})
        if "rope_type" not in full and "type" in full:
            full["rope_type"] = full["type"]
        swa = {}
    if "rope_theta" not in full and hp.get("rope_theta") is not None:
        full["rope_theta"] = hp["rope_theta"]
    if "rope_theta" not in swa and hp.get("rope_local_base_freq") is not None:
        swa["rope_theta"] = hp["rope_local_base_freq"]
    return full, swa


# ---------------------------------------------------------------- tensors


class TensorSource(Protocol):
    """A 2-D view of a tensor, readable a few rows at a time (rows = product of all leading axes)."""

    shape: tuple[int, ...]  # numpy order of the tensor it stands for

    @property
    def rows(self) -> int: ...

    @property
    def cols(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) as a C-contiguous float32 array of shape (stop - start, cols)."""
        ...


class RowView:
    """`rows` and `cols` of a tensor seen as 2-D (rows = product of all leading axes), from `shape`."""

    shape: tuple[int, ...]

    @property
    def rows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1

    @property
    def cols(self) -> int:
        return self.shape[-1] if self.shape else 1


class ArraySource(RowView):
    """A tensor computed in memory (generated tensors such as Gemma 4's ``rope_freqs``)."""

    def __init__(self, array: np.ndarray):
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.shape = tuple(self.array.shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array.reshape(self.rows, self.cols)[start:stop]


class ZerosSource(RowView):
    """An all-zero tensor (padding rows, placeholder tensors the runtime requires but never reads)."""

    def __init__(self, shape: Sequence[int]):
        self.shape = tuple(int(n) for n in shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.zeros((stop - start, self.cols), dtype=np.float32)


class ConcatSource:
    """Sources laid one after another along the leading axis, under a new overall ``shape``.

    Used for stacking (n tensors of shape s → shape (n, *s)) and for truncating / zero-padding
    embedding rows (one source's first rows, then a :class:`ZerosSource`).
    """

    def __init__(self, parts: Sequence[tuple[TensorSource, int]], shape: Sequence[int]):
        # parts: (source, number of its leading rows used)
        self.parts = list(parts)
        self.shape = tuple(int(n) for n in shape)
        cols = {p.cols for p, _ in self.parts}
        if len(cols) != 1 or self.cols not in cols:
            raise UnsupportedCheckpoint(f"cannot join tensors with row lengths {sorted(cols)}")
        if sum(n for _, n in self.parts) != self.rows:
            raise UnsupportedCheckpoint(f"joined rows do not add up to shape {self.shape}")

    @property
    def rows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=np.int64))

    @property
    def cols(self) -> int:
        return self.shape[-1]

    def read(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        base = 0
        for source, used in self.parts:
            lo, hi = max(start, base), min(stop, base + used)
            if lo < hi:
                pieces.append(source.read(lo - base, hi - base))
            base += used
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)


Transform = Callable[[np.ndarray], np.ndarray]


def plus_one(x: np.ndarray) -> np.ndarray:
    """Gemma 1/2/3 RMSNorm: transformers computes ``x̂ * (1 + w)``; llama.cpp ``x̂ * w`` → store ``w + 1``."""
    return x + np.float32(1.0)


@dataclass(frozen=True)
class TensorRule:
    """HF tensor name pattern → GGUF tensor name, with how to transform and store it (module docstring)."""

    hf: str
    gguf: str | None
    transform: Transform | None = None
    keep_f32: bool = False
    stack: int = 0
    match_vocab: bool = False
    required: bool = True

    def match(self, name: str) -> re.Match[str] | None:
        return re.fullmatch(self.hf, name)


@dataclass
class PlannedTensor:
    """One GGUF tensor to write: its name, float32 data source, element-wise transform, storage rule."""

    name: str
    source: TensorSource
    transform: Transform | None = None
    keep_f32: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape


# ---------------------------------------------------------------- vocabulary


@dataclass
class Vocab:
    """A GGUF vocabulary: the token count (embedding rows must match) and the ``tokenizer.*`` fields."""

    n_tokens: int
    fields: list[Field]


# ---------------------------------------------------------------- the generation value


def _no_extra_tensors(hp: HParams, n_tokens: int, present: set[str]) -> list[PlannedTensor]:
    return []


def _no_notes(hp: HParams, dropped: Sequence[str]) -> list[str]:
    return []


@dataclass(frozen=True)
class LegacyValue:
    """A config value transformers rewrites when it loads the config (and warns about): ``key: value`` is
    read as ``key: replacement``, and ``note`` says so once in the conversion summary."""

    key: str
    value: Any
    replacement: Any
    note: str


def _as_configured(hp: HParams) -> Any:
    return hp.get("layer_types")


@dataclass(frozen=True)
class ConversionTable:
    """How one Gemma generation converts: all it contributes to a conversion (module docstring explains each
    field)."""

    name: str
    hf_architectures: tuple[str, ...]
    gguf_arch: str
    defaults: Mapping[str, Any]
    metadata: Callable[[HParams], list[Field]]
    tensors: tuple[TensorRule, ...]
    vocab: Callable[[Any, HParams], Vocab]
    rope: Callable[[HParams], dict[str, dict[str, Any]]]
    layer_types: Callable[[HParams], list[str] | None] = _as_configured
    legacy_values: tuple[LegacyValue, ...] = ()
    nullable: frozenset[str] = frozenset()  # keys of `defaults` transformers types as `X | None`
    extra_tensors: Callable[[HParams, int, set[str]], list[PlannedTensor]] = _no_extra_tensors
    notes: Callable[[HParams, Sequence[str]], list[str]] = _no_notes
    block_count_key: str = "num_hidden_layers"
    fixed: Mapping[str, Any] = field(default_factory=dict)  # keys the architecture ignores in config.json

    def hparams(self, config: Mapping[str, Any]) -> HParams:
        """The config as the transformers config class resolves it (module docstring, step 2)."""
        for key, default in self.defaults.items():
            optional = key in self.nullable or key in self.fixed
            if config.get(key, default) is None and default is not None and not optional:
                raise UnsupportedConfig(f"config.json sets {key} to null, but it needs a value")
        hp = HParams({**self.defaults, **config, **self.fixed})
        for legacy in self.legacy_values:
            if hp.get(legacy.key) == legacy.value:
                hp[legacy.key] = legacy.replacement
                hp.notes.append(legacy.note)
        hp["layer_types"] = self.layer_types(hp)
        hp["rope_parameters"] = self.rope(hp)
        return hp

    def block_count(self, hp: Mapping[str, Any]) -> int:
        return int(hp[self.block_count_key])


def layer_rule(hf_suffix: str, gguf_suffix: str, **kwargs: Any) -> TensorRule:
    """A per-layer rule: ``model.layers.{bid}.<hf_suffix>`` → ``blk.{bid}.<gguf_suffix>``."""
    return TensorRule(
        hf=r"model\.layers\.(?P<bid>\d+)\." + re.escape(hf_suffix),
        gguf="blk.{bid}." + gguf_suffix,
        **kwargs,
    )


def top_rule(hf_name: str, gguf_name: str | None, **kwargs: Any) -> TensorRule:
    """A rule for one top-level tensor, matched by its exact normalised name."""
    return TensorRule(hf=re.escape(hf_name), gguf=gguf_name, **kwargs)
