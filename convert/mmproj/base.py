"""The encoder interface: everything one encoder tower contributes to an mmproj GGUF, as data.

llama.cpp runs images and audio through a separate "mmproj" GGUF (``general.architecture = "clip"``,
loaded by ``tools/mtmd/clip.cpp``). An **encoder** is one modality of one generation — Gemma 3's
SigLIP vision tower, Gemma 4's vision tower, Gemma 3n's conformer audio tower... A checkpoint with
several sub-configs (``vision_config`` *and* ``audio_config``) gets **one** mmproj holding every
encoder, as llama.cpp expects. An encoder module (``convert/mmproj/<name>.py``) builds one
:class:`Encoder` value and the registry (``convert/mmproj/__init__.py``) lists it;
``convert/mmproj/pipeline.py`` (``plan_mmproj``) never branches on an encoder's name. To add one:

1. **Detection.** ``hf_architectures`` — the ``architectures[0]`` values whose checkpoints carry this
   tower; ``config_key`` — its sub-config (``"vision_config"`` / ``"audio_config"``); ``modality`` —
   ``"vision"`` or ``"audio"`` (selects the ``clip.<modality>.*`` keys and ``clip.has_<modality>_encoder``).
   The encoder is used when the architecture matches *and* ``config.json`` has that sub-config.
   ``name`` is the human label printed in notes ("Gemma 3 vision (SigLIP)").

2. **Not supported yet.** ``unsupported`` — ``None``, or the reason llama.cpp cannot run this tower
   (e.g. ``"llama.cpp 0.3.36's mtmd has no ... graph"``). Such an encoder still claims its tensors
   (``owns``) but contributes nothing: the text GGUF is written and the summary prints one line
   ``"<name>: not supported yet: <reason>"``. ``metadata`` may also raise :class:`UnsupportedConfig`
   for a config the runtime cannot run as intended (note ``"<name>: not supported: <message>"``; a GGUF
   that loads and computes something else is worse than none). A sub-config no encoder module claims,
   and an encoder whose tensors the checkpoint lacks (text-only exports), are notes too. With
   ``--mmproj`` (``mmproj=True``) any of these fails the conversion instead. ``caveat`` — ``None``, or
   a known way llama.cpp's runtime around the encoder differs from transformers (not the encoder's
   own computation, which must match): the file is written and the summary prints ``"<name>: <caveat>"``.

3. **Hyper-parameters.** ``defaults`` — the transformers sub-config class defaults for every field
   read (official configs omit default values). The pipeline passes an :class:`EncoderConfig`:
   ``hp`` = ``{**defaults, **config[config_key]}``, ``text`` = the text generation's effective
   hparams (``text["hidden_size"]`` is the projection size), ``top`` = the raw top-level
   ``config.json`` (``mm_tokens_per_image``...), ``preprocessor`` = ``preprocessor_config.json``
   merged with ``processor_config.json`` (whose ``image_processor`` is lifted to the top level, like
   the reference converter does). ``metadata(cfg)`` returns the encoder's ``clip.*`` keys as
   :class:`~convert.generations.base.Field` values (``u32``/``f32``/``string``/``boolean``/
   ``f32_array``; key names as in clip.cpp's ``clip-impl.h``: ``clip.vision.image_size``,
   ``clip.vision.attention.layer_norm_epsilon``, ``clip.use_gelu``...). Do **not** write the keys the
   pipeline writes: ``general.*``, ``clip.has_<modality>_encoder``, ``clip.<modality>.projection_dim``
   (= text hidden size) and the projector type (``projector_type`` below: written as
   ``clip.projector_type`` when the file has one encoder, as ``clip.<modality>.projector_type`` for
   each when it has several). Two encoders writing the same key with different values is an error.

4. **Tensors.** ``owns`` — a regex ``re.match``-ed against the checkpoint's multimodal tensor names
   (``language_model.`` and one leading ``model.`` removed, so the legacy ``vision_tower.*`` and the
   v5 ``model.vision_tower.*`` layouts look the same): which tensors are this encoder's. A multimodal
   tensor that no encoder of the architecture owns is refused — unless a tower of the checkpoint has
   no encoder module, which is then presumed to own it. Note that transformers 5 *saves* some towers
   under other names than it loads (Gemma 3: ``vision_tower.encoder.*``, without ``vision_model.``):
   match every layout real checkpoints have. ``tensors``
   — a tuple of :class:`EncoderRule`; every owned tensor must ``fullmatch`` exactly one rule's ``hf``
   (else the conversion fails naming it: nothing is passed through or dropped silently). ``gguf=None``
   drops on purpose (or marks an input consumed by ``extra_tensors``). Named group ``bid`` is the block
   index, substituted into ``gguf`` (``"v.blk.{bid}.attn_q.weight"``); other named groups are
   substituted too. ``transform`` is element-wise on float32 row chunks (e.g.
   :func:`~convert.generations.base.plus_one` for a Gemma RMSNorm weight the runtime multiplies by
   as is); ``reshape`` replaces the whole source by another :class:`TensorSource` when the layout
   changes (squeeze, permute, 0-D scalar → 1 element; see :class:`ReshapedSource`); ``storage``
   overrides the storage type (:func:`keep_f32`, :func:`f16_except_in_f32`, :func:`f16_only_in_f16`).
   Without an override, ``DEFAULT_STORAGE`` (the reference's policy common to every mmproj:
   ``v.patch_embd.weight`` F16 in F16 files else F32, position embeddings F32) and then
   ``convert/storage.py``'s policy apply (<= 1-D, ``*_norm.weight`` and non-``.weight`` names F32).
   ``required=True`` makes a missing tensor an error (for every block ``0..n-1`` when ``gguf`` has
   ``{bid}``; ``n`` = ``hp[block_count_key]``). Shapes are never transposed implicitly: HF
   ``np(out, in)`` becomes ggml ``{in, out}``.

5. **Generated tensors.** ``extra_tensors(cfg, owned)`` returns :class:`EncoderTensor` values built
   from several inputs or from nothing (batch-norm folding, constants), given ``owned`` = normalised
   name → source of every tensor this encoder owns.

Everything here is pure data and pure functions; reading files and writing GGUF happen elsewhere.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType

from convert.generations.base import (  # noqa: F401  (re-exported for encoder modules)
    ArraySource, Field, HParams, RowView, TensorSource, Transform, UnsupportedCheckpoint, UnsupportedConfig,
    boolean, f32, f32_array, i32_array, plus_one, string, u32,
)
from convert.storage import OutputType

VISION = "vision"
AUDIO = "audio"

# ---------------------------------------------------------------- storage overrides

Storage = Callable[[OutputType], GGMLQuantizationType]


def keep_f32(output: OutputType) -> GGMLQuantizationType:
    """Always F32 (tensors the runtime reads as F32, or too small to matter)."""
    return GGMLQuantizationType.F32


def f16_only_in_f16(output: OutputType) -> GGMLQuantizationType:
    """F16 in F16 files, else F32: conv kernels (ggml's im2col takes F16 or F32 kernels only)."""
    return GGMLQuantizationType.F16 if output.tensor_type == GGMLQuantizationType.F16 else GGMLQuantizationType.F32


def f16_except_in_f32(output: OutputType) -> GGMLQuantizationType:
    """F32 in F32 files, else F16: weights the graph transposes with ``ggml_cont`` (no quantized copy)."""
    return GGMLQuantizationType.F32 if output.tensor_type == GGMLQuantizationType.F32 else GGMLQuantizationType.F16


# GGUF name regex → storage, applied when a rule sets no override (the reference's MmprojModel policy)
DEFAULT_STORAGE: tuple[tuple[str, Storage], ...] = (
    (r"v\.patch_embd\.weight", f16_only_in_f16),
    (r"(v|a)\.position_embd\.weight", keep_f32),
)


# ---------------------------------------------------------------- sources and rules


class ReshapedSource(RowView):
    """A source seen under another shape with the same element order (squeeze, 0-D → (1,), ...)."""

    def __init__(self, source: TensorSource, shape: Sequence[int]):
        self.source, self.shape = source, tuple(int(n) for n in shape)
        if int(np.prod(self.shape, dtype=np.int64)) != int(np.prod(source.shape, dtype=np.int64)):
            raise UnsupportedCheckpoint(f"cannot view a tensor of shape {list(source.shape)} as {list(self.shape)}")

    def read(self, start: int, stop: int) -> np.ndarray:
        first, last = start * self.cols, stop * self.cols  # flat element range
        src_cols = self.source.cols
        lo, hi = first // src_cols, -(-last // src_cols)
        flat = self.source.read(lo, hi).reshape(-1)[first - lo * src_cols:last - lo * src_cols]
        return flat.reshape(stop - start, self.cols)


def squeeze(source: TensorSource) -> TensorSource:
    """Drop the size-1 axes; a 0-D scalar becomes a 1-element vector (GGUF has no 0-D tensors)."""
    shape = tuple(n for n in source.shape if n != 1) or (1,)
    return source if shape == tuple(source.shape) else ReshapedSource(source, shape)


@dataclass(frozen=True)
class EncoderRule:
    """HF tensor name pattern → mmproj tensor name, with how to reshape, transform and store it."""

    hf: str
    gguf: str | None
    transform: Transform | None = None
    reshape: Callable[[TensorSource], TensorSource] | None = None
    storage: Storage | None = None
    required: bool = True

    def match(self, name: str) -> re.Match[str] | None:
        return re.fullmatch(self.hf, name)


@dataclass
class EncoderTensor:
    """One planned mmproj tensor: name, float32 source, element-wise transform, storage override."""

    name: str
    source: TensorSource
    transform: Transform | None = None
    storage: Storage | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.source.shape)


@dataclass(frozen=True)
class EncoderConfig:
    """What an encoder's metadata may read (module docstring, step 3)."""

    hp: HParams  # the sub-config over the encoder's defaults
    text: Mapping[str, Any]  # the text generation's effective hparams
    top: Mapping[str, Any]  # raw top-level config.json
    preprocessor: Mapping[str, Any]  # preprocessor_config.json + processor_config.json


def _no_extra_tensors(cfg: EncoderConfig, owned: Mapping[str, TensorSource]) -> list[EncoderTensor]:
    return []


def _no_metadata(cfg: EncoderConfig) -> list[Field]:
    return []


@dataclass(frozen=True)
class Encoder:
    """All one encoder tower contributes to an mmproj GGUF (module docstring explains each field)."""

    name: str
    hf_architectures: tuple[str, ...]
    modality: str  # VISION or AUDIO
    config_key: str  # "vision_config" / "audio_config"
    owns: str
    projector_type: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    metadata: Callable[[EncoderConfig], list[Field]] = _no_metadata
    tensors: tuple[EncoderRule, ...] = ()
    extra_tensors: Callable[[EncoderConfig, Mapping[str, TensorSource]], list[EncoderTensor]] = _no_extra_tensors
    unsupported: str | None = None
    caveat: str | None = None  # a known way llama.cpp's runtime differs from transformers, noted when written
    block_count_key: str = "num_hidden_layers"

    def hparams(self, config: Mapping[str, Any]) -> HParams:
        return HParams({**dict(self.defaults), **config})

    def owns_tensor(self, name: str) -> bool:
        return re.match(self.owns, name) is not None

    def block_count(self, hp: Mapping[str, Any]) -> int:
        return int(hp.get(self.block_count_key) or 0)


def block_rule(hf_prefix: str, hf_suffix: str, gguf: str, **kwargs: Any) -> EncoderRule:
    """``<hf_prefix>{bid}.<hf_suffix>`` → ``gguf`` (which contains ``{bid}``)."""
    return EncoderRule(hf=re.escape(hf_prefix) + r"(?P<bid>\d+)\." + re.escape(hf_suffix), gguf=gguf, **kwargs)


def exact_rule(hf_name: str, gguf: str | None, **kwargs: Any) -> EncoderRule:
    """One tensor, matched by its exact normalised name."""
    return EncoderRule(hf=re.escape(hf_name), gguf=gguf, **kwargs)
