"""Gemma 3n's audio tower (USM conformer + ``embed_audio``): not supported yet by llama.cpp 0.3.36.

llama.cpp knows the projector type ``gemma3na`` by name only (``clip-impl.h``); its reference converter
maps part of the tower to ``a.*`` names (and stops at ``subsample_conv_projection.conv_0.norm.weight``,
which it cannot map, on a transformers-built checkpoint); its mtmd cannot run any of it:

* ``clip.cpp``'s hyper-parameter loader has no case for ``gemma3na``: an mmproj whose audio projector
  is ``gemma3na`` fails to load ("unknown vision projector type gemma3na");
* in a Gemma 3n mmproj (vision ``gemma3nv`` + audio ``gemma3na``) ``clip_init`` skips the audio tower
  on purpose ("we don't support audio for Gemma 3N, but GGUF contains audio tensors");
* there is no graph builder for it (``models/conformer.cpp`` is LFM2's FastConformer: relative-position
  biases u/v, batch norm, 8x conv sub-sampling; Gemma 3n's USM conformer has chunked local attention
  with per-dimension query scales and logit soft-capping, group-normed 2-D sub-sampling, a light conv
  block with RMSNorms and the ``embed_audio`` soft-embedding projection), and ``mtmd.cpp`` has no audio
  preprocessor (Gemma 3n's log-mel front end) for it.

Writing the tower under Gemma 4's ``gemma4a`` type instead (its graph has the same chunked attention:
chunk 12, 12 past frames, soft-cap 50, per-dimension query scale) would load but compute something
else: gemma4a's sub-sampling normalises each frame over channels (LayerNorm) with symmetric time
padding, Gemma 3n's normalises cumulatively over time (CumulativeGroupNorm, eps 1e-3) with (0, 2) time
padding; gemma4a has no final 4x time reduction (``conf_reduction_factor``); and mtmd's gemma4a front
end (20 ms window, 0-8 kHz mel bands, no pre-emphasis, mel floor 1e-3) is not Gemma3nAudioFeatureExtractor
(32 ms frames, 125-7600 Hz bands, pre-emphasis 0.97, mel floor 1e-5).

The encoder therefore claims the tower's tensors (so a Gemma 3n checkpoint converts, its vision tower
included) and contributes a one-line note instead of tensors.
"""
from __future__ import annotations

from convert.mmproj.base import AUDIO, Encoder

GEMMA3N_AUDIO = Encoder(
    name="Gemma 3n audio (USM conformer)",
    hf_architectures=("Gemma3nForConditionalGeneration",),
    modality=AUDIO,
    config_key="audio_config",
    owns=r"(audio_tower|embed_audio)\.",
    projector_type="gemma3na",
    unsupported=(
        "llama.cpp 0.3.36's mtmd cannot run it: clip.cpp has no loader or graph for projector type gemma3na "
        "(its conformer.cpp is LFM2's) and skips the audio tower of a Gemma 3n mmproj, and mtmd.cpp has no "
        "audio preprocessing for it"
    ),
)
