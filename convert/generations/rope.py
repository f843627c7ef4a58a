"""RoPE parameters per attention kind, resolved from config.json the way transformers 5.23 resolves them.

Each rule returns ``{"full_attention": {...}, "sliding_attention": {...}}`` with ``rope_type`` and
``rope_theta`` set in both entries; :meth:`ConversionTable.hparams` stores it as ``hp["rope_parameters"]``.
One rule per family of transformers config classes:

* :func:`shared_rope` — ``GemmaConfig`` / ``Gemma2Config`` (``RotaryEmbeddingConfigMixin``): an older
  config's ``rope_scaling`` *replaces* ``rope_parameters`` when both are set; ``rope_theta`` fills in a
  missing theta; a legacy ``type`` key names the ``rope_type``. The dict is per attention kind only when
  it is keyed by the config's layer types, otherwise every layer uses it.
* :func:`layered_rope` — ``Gemma3TextConfig`` / ``Gemma3nTextConfig``: ``rope_parameters`` per kind
  (default: plain rope for both); ``rope_scaling`` is merged into the full-attention entry;
  ``rope_theta`` / ``rope_local_base_freq`` fill in missing full / sliding thetas (``rope_scaling`` with
  ``rope_parameters`` lacking a full-attention entry is refused: transformers fails on it). A ``type`` key does
  not override a ``rope_type`` that is already there, and flat keys beside the per-kind entries are
  ignored — both as in transformers.
* :func:`given_rope` — ``Gemma4TextConfig``: ``rope_parameters`` as given (no older format exists),
  the class default when the file has none; a ``rope_scaling`` key is refused (transformers would let it
  replace ``rope_parameters``, even when null, and then cannot build the rotary embedding).

A theta that is ``null`` in the file is refused: transformers keeps the ``None`` and cannot build the
rotary embedding from it.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from convert.generations.base import UnsupportedConfig

FULL = "full_attention"
SLIDING = "sliding_attention"
KINDS = (FULL, SLIDING)


def _standardized(params: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    resolved = {}
    for kind in KINDS:
        entry = dict(params.get(kind) or {})
        entry.setdefault("rope_type", entry.get("type", "default"))
        if entry.get("rope_theta") is None:
            raise UnsupportedConfig(f"config.json gives no rope_theta for {kind} layers")
        resolved[kind] = entry
    return resolved


def shared_rope(hp: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    params = copy.deepcopy(hp.get("rope_scaling") or hp.get("rope_parameters") or {})
    nested = [kind for kind in params if kind in (hp.get("layer_types") or ())]
    for entry in [params[kind] for kind in nested] or [params]:
        if entry is not None:
            entry.setdefault("rope_theta", hp.get("rope_theta"))
    if nested:
        return _standardized({kind: params[kind] for kind in nested})
    return _standardized({kind: params for kind in KINDS})


def layered_rope(hp: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    params = copy.deepcopy(hp.get("rope_parameters"))
    if params is None:
        params = {SLIDING: {"rope_type": "default"}, FULL: {"rope_type": "default"}}
    if hp.get("rope_scaling") is not None:
        if params.get(FULL) is None:  # transformers fails on it (KeyError)
            raise UnsupportedConfig("config.json has rope_scaling but no full_attention rope_parameters to apply it to")
        params[FULL].update(hp["rope_scaling"])
    for kind, theta_key in ((FULL, "rope_theta"), (SLIDING, "rope_local_base_freq")):
        if params.get(kind) is None:
            params[kind] = {"rope_type": "default"}
        params[kind].setdefault("rope_theta", hp.get(theta_key))
    return _standardized(params)


def given_rope(default: Mapping[str, dict[str, Any]]) -> Callable[[Mapping[str, Any]], dict[str, dict[str, Any]]]:
    """The rule for a config class whose ``rope_parameters`` is ``default`` when the file has none (or null)."""
    def rope(hp: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        if "rope_scaling" in hp:  # transformers would replace rope_parameters with it (null included)
            raise UnsupportedConfig("config.json has rope_scaling, which this generation's configs do not use "
                                    "(rope_parameters holds the RoPE settings)")
        params = hp.get("rope_parameters")
        return _standardized(default if params is None else params)
    return rope
