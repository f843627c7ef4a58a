"""Registry of mmproj encoders (one modality of one generation each; see ``base.py``'s docstring).

Add an encoder by writing ``convert/mmproj/<name>.py`` and listing its
:class:`~convert.mmproj.base.Encoder` in ``_ENCODERS`` below. Modules are imported lazily, in order:
a module that does not exist (yet) is skipped, and converting Gemma 3 never imports the Gemma 4 ones.
"""
from __future__ import annotations

from collections.abc import Iterator

from convert.lazy import listed
from convert.mmproj.base import Encoder

# (module, attribute) of every encoder; within one checkpoint, vision before audio
_ENCODERS = (
    ("convert.mmproj.gemma3_vision", "GEMMA3_VISION"),
    ("convert.mmproj.gemma3n_vision", "GEMMA3N_VISION"),
    ("convert.mmproj.gemma3n_audio", "GEMMA3N_AUDIO"),
    ("convert.mmproj.gemma4_vision", "GEMMA4_VISION"),
    ("convert.mmproj.gemma4_audio", "GEMMA4_AUDIO"),
    ("convert.mmproj.gemma4_unified", "GEMMA4_UNIFIED_VISION"),
    ("convert.mmproj.gemma4_unified", "GEMMA4_UNIFIED_AUDIO"),
)

# the sub-configs that describe an encoder tower, in the order encoders are written
SUB_CONFIGS = ("vision_config", "audio_config")


def encoders() -> Iterator[Encoder]:
    return listed(_ENCODERS)


def encoder_for(architecture: str | None, config_key: str) -> Encoder | None:
    """The encoder of ``architecture``'s ``config_key`` tower, or None when no module handles it."""
    for encoder in encoders():
        if architecture in encoder.hf_architectures and encoder.config_key == config_key:
            return encoder
    return None
