"""Gemma 4 12B Unified images and audio through the real runtime: the tiny Unified checkpoint with the real
Gemma 4 vocabulary (tests/runtime/tiny_gemma4_media.py, kind "unified"), converted by our converter (F32 text
GGUF + gemma4uv/gemma4ua mmproj), against transformers' Gemma4UnifiedProcessor.

* prompt items equal the processor's input_ids, media positions included: an image takes one position per
  merged patch, an audio clip one per 640-sample frame (no downsampling), between the same markers as
  Gemma 4's;
* the number of image positions equals the processor's soft tokens for images of any size;
* mtmd decodes Unified image positions non-causally (as transformers' "vision" attention does), audio
  causally;
* first-reply-token logits of an audio question close to transformers' Unified model; of an image question
  close to it with Gemma 4's image attention (both ways on sliding-window layers only), which llama.cpp
  0.3.36 hard-codes for every gemma4 model, while transformers' Unified model lets image tokens attend
  both ways on every layer: measured cosine 0.59 against its own mask, 0.999996 against Gemma 4's. The
  known difference is pinned, so a llama.cpp that runs Unified images as transformers fails here. The
  pixel input is the Gemma 4 PIL processor's 4×4 patches merged by transformers' ``patches_merge`` (what
  the torchvision-only Unified processor does, see tests/convert/tiny_gemma4_unified.py); the image is
  at its native size, so no resize filter is involved.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest

from gemma_edge.llama.mtmd import MediaChunk
from tests.runtime.test_gemma4_media import (
    AUDIO_CONVERSATIONS, CONVERSATIONS, IMAGE_SIZES, MIN_LOGIT_COSINE, audio_part, cosine, first_reply_logits,
    image_part, layout, processor_inputs,
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


def hf_first_reply_logits(processor, model, messages, sliding_only: bool = False):
    """transformers' Unified model; `sliding_only`: with Gemma 4's image attention mask instead of its own."""
    import torch

    from tests.convert.tiny_gemma4_unified import hf_model, transformers_patches_merge
    from tests.runtime.tiny_gemma4_media import gemma4_media_checkpoint

    inputs = processor_inputs(processor, model, messages, return_tensors="pt")
    if "pixel_values" in inputs:
        kernel = processor.image_processor.pooling_kernel_size
        budget = processor.image_processor.max_soft_tokens
        merge = transformers_patches_merge()
        pixels, positions = [], []
        for patches, where in zip(inputs["pixel_values"], inputs["image_position_ids"]):
            n = int((where != -1).all(dim=-1).sum())  # the padding patches come last
            merged, merged_at = merge(patches[None, :n].float(), where[None, :n].long(), n // kernel ** 2)
            pad = budget - n // kernel ** 2
            pixels.append(torch.cat([merged[0], torch.zeros(pad, merged.shape[-1])]))
            positions.append(torch.cat([merged_at[0], torch.full((pad, 2), -1, dtype=torch.long)]))
        inputs["pixel_values"], inputs["image_position_ids"] = torch.stack(pixels), torch.stack(positions)
    hf = hf_model(gemma4_media_checkpoint("unified"))
    if sliding_only:
        from transformers.models.gemma4.modeling_gemma4 import (
            create_masks_for_vision_model, get_block_sequence_ids_for_mask,
        )

        text_config, length = hf.config.get_text_config(), inputs["input_ids"].shape[1]
        inputs["attention_mask"] = create_masks_for_vision_model(
            config=text_config, inputs_embeds=torch.zeros(1, length, text_config.hidden_size), attention_mask=None,
            past_key_values=None, position_ids=torch.arange(length)[None],
            block_sequence_ids=get_block_sequence_ids_for_mask(inputs["mm_token_type_ids"], device="cpu"))
    with torch.no_grad():
        return hf(**inputs).logits[0, -1].float().numpy()


def question(part: dict) -> list[dict]:
    return [{"role": "user", "content": [part, {"type": "text", "text": "Describe it."}]}]


def assert_close(ours: np.ndarray, reference: np.ndarray) -> None:
    assert cosine(ours, reference) > MIN_LOGIT_COSINE
    assert np.max(np.abs(ours - reference)) < 0.05 * np.max(np.abs(reference))


def test_audio_question_first_reply_logits_match_transformers(unified):
    _, _, model, processor = unified
    messages = question(audio_part(1.0))
    assert_close(first_reply_logits(model, model.tokenize_messages(messages)[0]),
                 hf_first_reply_logits(processor, model, messages))


def test_image_question_logits_match_transformers_with_gemma4_image_attention(unified):
    _, _, model, processor = unified
    messages = question(image_part(84, 120, 8))
    ours = first_reply_logits(model, model.tokenize_messages(messages)[0])
    assert_close(ours, hf_first_reply_logits(processor, model, messages, sliding_only=True))
    # the known llama.cpp 0.3.36 difference (convert/mmproj/gemma4_unified.py, ATTENTION_CAVEAT)
    assert cosine(ours, hf_first_reply_logits(processor, model, messages)) < 0.9
