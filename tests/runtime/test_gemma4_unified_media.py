"""Gemma 4 12B Unified images and audio through the real runtime: the tiny Unified checkpoint with the real
Gemma 4 vocabulary (tests/runtime/tiny_gemma4_media.py, kind "unified"), converted by our converter (F32 text
GGUF + gemma4uv/gemma4ua mmproj), against transformers' Gemma4UnifiedProcessor.

* prompt items equal the processor's input_ids, media positions included: an image takes one position per
  merged patch, an audio clip one per 640-sample frame (no downsampling), between the same markers as
  Gemma 4's;
* the number of image positions equals the processor's soft tokens for images of any size;
* mtmd decodes Unified image positions non-causally (as transformers' "vision" attention does), audio
  causally.
"""
from __future__ import annotations

import io
import math

import pytest

from gemma_edge.projector import MediaChunk
from tests.runtime.test_gemma4_media import (
    AUDIO_CONVERSATIONS, CONVERSATIONS, IMAGE_SIZES, audio_part, image_part, layout, processor_inputs,
)

pytestmark = pytest.mark.slow  # a real-vocabulary checkpoint and a model load
AUDIO_SECONDS_IN = {"audio then a question": (1.0,), "image and two audio clips": (2.0, 1.0)}


@pytest.fixture(scope="module")
def unified(gemma4_vocab_path):
    """(text GGUF, mmproj, loaded Model, Gemma4UnifiedProcessor)."""
    from gemma_edge.api import Model
    from tests.runtime.tiny_gemma4_media import gemma4_media_checkpoint, gemma4_media_pair, gemma4_processor

    checkpoint = gemma4_media_checkpoint("unified")
    text, mmproj = gemma4_media_pair("unified")
    model = Model(text, n_ctx=256, n_threads=2, mmproj=mmproj)
    yield text, mmproj, model, gemma4_processor(checkpoint)
    model.close()


def test_projector_is_the_unified_one(unified):
    _, mmproj, model, processor = unified
    from gemma_edge.projector import read_projector_file

    projector = read_projector_file(mmproj)
    assert (projector.vision_type, projector.audio_type) == ("gemma4uv", "gemma4ua")
    from transformers import Gemma4UnifiedProcessor

    assert isinstance(processor, Gemma4UnifiedProcessor)
    assert model.format == "gemma4-large" and model.engine.supports("image") and model.engine.supports("audio")


@pytest.mark.parametrize("name", [*CONVERSATIONS, *AUDIO_CONVERSATIONS])
def test_prompt_items_equal_the_processor_input_ids(unified, name):
    _, _, model, processor = unified
    messages = {**CONVERSATIONS, **AUDIO_CONVERSATIONS}[name]()
    items, _ = model.tokenize_messages(messages)
    expected = list(processor_inputs(processor, model, messages)["input_ids"][0])
    assert layout(items, processor) == expected
    images = [item for item in items if isinstance(item, MediaChunk) and item.kind == "image"]
    audio = [item for item in items if isinstance(item, MediaChunk) and item.kind == "audio"]
    assert all(chunk.non_causal for chunk in images) and not any(chunk.non_causal for chunk in audio)
    assert len(images) == expected.count(model.engine.special_id("<|image>"))
    # one audio position per 640-sample frame (40 ms at 16 kHz), no downsampling
    assert [chunk.n_pos for chunk in audio] == [math.ceil(s * 16_000 / 640) for s in AUDIO_SECONDS_IN.get(name, ())]


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_image_positions_equal_the_processor_soft_tokens_for_any_size(unified, size):
    from PIL import Image

    from gemma_edge.media import load_media

    _, _, model, processor = unified
    part = image_part(*IMAGE_SIZES[size], seed=7)
    chunk = model.engine.media_chunk(load_media(part))
    image = Image.open(io.BytesIO(part["bytes"])).convert("RGB")
    (expected,) = processor.image_processor(images=[image])["num_soft_tokens_per_image"]
    assert chunk.n_pos == expected <= model.engine.projector.image_budget.max_tokens
