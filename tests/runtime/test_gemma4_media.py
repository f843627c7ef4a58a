"""Gemma 4 images and audio through the real runtime: tiny seeded Gemma4ForConditionalGeneration checkpoints
with the real Gemma 4 vocabulary (tests/runtime/tiny_gemma4_media.py: an E2B-like text with vision and
audio, a dense 31B-like text with vision), converted by our converter (F32 text GGUF + F32 mmproj), run by
llama.cpp + mtmd on one side and transformers on the other (Gemma4Processor built from the checkpoint,
Gemma4ForConditionalGeneration).

* prompt items equal the processor's input_ids, media positions included (image and audio markers are
  the real tokens with their real ids);
* the number of image positions equals the processor's for images of any size and aspect ratio (the
  projector sizes them as transformers' image processor does; see gemma_edge/projector.py for why mtmd
  alone cannot);
* first-reply-token logits of an image or audio question close to transformers';
* a second chat turn after a media turn evaluates only its new positions;
* `run --image` / `run --audio` on the command line.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from gemma_edge.llama.engine import common_prefix, position_identities, prompt_positions
from gemma_edge.formats import render_prompt
from gemma_edge.llama.mtmd import MediaChunk

# min cosine of our first-reply logits to transformers' (F32 both sides). Measured: images 0.99995–0.99996
# (100×150, resized on both sides) and 0.9997–0.9998 (native 84×120), audio 0.99998 (1 s and 2 s), the
# same prompts without media 0.999995
MIN_LOGIT_COSINE = 0.999
AUDIO_SECONDS = (1.0, 2.0)  # 25 and 50 audio positions; lengths whose log-mel frames need no padding
IMAGE_SIZES = {  # (height, width): native 7×10 soft tokens, near-native, smaller (upscaled), larger
    "native": (84, 120), "near-native": (85, 119), "small square": (50, 50), "wide": (30, 200),
    "tall": (300, 17), "large": (400, 400), "portrait": (123, 77), "very wide": (7, 900),
}


@pytest.fixture(scope="module")
def loaded(gemma4_vocab_path):
    """kind -> (checkpoint, text GGUF, mmproj, loaded Model, Gemma4Processor), each built and loaded once."""
    from gemma_edge.api import Model
    from tests.runtime.tiny_gemma4_media import gemma4_media_checkpoint, gemma4_media_pair, gemma4_processor

    cache: dict = {}

    def get(kind: str):
        if kind not in cache:
            checkpoint = gemma4_media_checkpoint(kind)
            text, mmproj = gemma4_media_pair(kind)
            model = Model(text, n_ctx=256, n_threads=2, mmproj=mmproj)
            cache[kind] = (checkpoint, text, mmproj, model, gemma4_processor(checkpoint))
        return cache[kind]

    yield get
    for _, _, _, model, _ in cache.values():
        model.close()


@pytest.fixture(params=["e2b", "dense"])
def setup(request, loaded):
    return loaded(request.param)


@pytest.fixture
def e2b(loaded):
    return loaded("e2b")


def image_part(height: int, width: int, seed: int) -> dict:
    from tests.runtime.tiny_gemma4_media import image_png

    return {"type": "image", "bytes": image_png(height, width, seed)}


def waveform(seconds: float, seed: int = 0) -> np.ndarray:
    """tiny_gemma4_audio's chirp as the 16-bit WAV carries it (what mtmd decodes)."""
    from tests.convert.tiny_gemma4_audio import test_waveform

    return np.rint(np.clip(test_waveform(seconds, seed), -1, 1) * 32767).astype(np.int16) / 32768.0


def audio_part(seconds: float, seed: int = 0) -> dict:
    from tests.runtime.tiny_gemma4_media import wav_bytes

    return {"type": "audio", "bytes": wav_bytes(waveform(seconds, seed))}


def processor_inputs(processor, model, messages, return_tensors=None):
    """Gemma4Processor on the official template's prompt for `messages` and their images and audio."""
    from PIL import Image

    parts = [part for message in messages if isinstance(message["content"], list) for part in message["content"]]
    images = [Image.open(io.BytesIO(p["bytes"])).convert("RGB") for p in parts if p["type"] == "image"]
    audio = [decode_wav(p["bytes"]) for p in parts if p["type"] == "audio"]
    return processor(text=render_prompt(messages, format=model.format), images=[images] if images else None,
                     audio=audio or None, add_special_tokens=False, return_tensors=return_tensors)


def decode_wav(data: bytes) -> np.ndarray:
    import wave

    with wave.open(io.BytesIO(data)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2") / 32768.0


def layout(items, processor) -> list[int]:
    """Prompt items as the processor writes them: each media position is its soft token."""
    soft = {"image": processor.image_token_id, "audio": processor.audio_token_id}
    out = []
    for item in items:
        out += [soft[item.kind]] * item.n_pos if isinstance(item, MediaChunk) else [item]
    return out


# -- prompt layout ------------------------------------------------------------------------------------

CONVERSATIONS = {
    "image first": lambda: [{"role": "user", "content": [image_part(84, 120, 1),
                                                         {"type": "text", "text": "What is this?"}]}],
    "system, text around two images of other sizes": lambda: [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": [{"type": "text", "text": "Compare"}, image_part(50, 70, 2),
                                     {"type": "text", "text": "with"}, image_part(200, 90, 3),
                                     {"type": "text", "text": "please."}]}],
    "image in an earlier turn": lambda: [
        {"role": "user", "content": [image_part(100, 100, 4), {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And the shape?"}],
}
AUDIO_CONVERSATIONS = {
    "audio then a question": lambda: [{"role": "user", "content": [audio_part(1.0),
                                                                    {"type": "text", "text": "Transcribe."}]}],
    "image and two audio clips": lambda: [
        {"role": "user", "content": [image_part(60, 90, 5), audio_part(2.0, 1),
                                     {"type": "text", "text": "and"}, audio_part(1.0, 2)]}],
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_image_prompt_items_equal_the_processor_input_ids(setup, name):
    _, _, _, model, processor = setup
    messages = CONVERSATIONS[name]()
    items, _ = model.tokenize_messages(messages)
    expected = list(processor_inputs(processor, model, messages)["input_ids"][0])
    assert layout(items, processor) == expected
    n_images = sum(isinstance(item, MediaChunk) for item in items)
    assert n_images == expected.count(model.engine.special_id("<|image>")) >= 1
    assert model.engine.special_id("<|image|>") == processor.image_token_id == 258880  # the real ids
    assert model.engine.special_id("<|image>") == 255999 and model.engine.special_id("<image|>") == 258882


@pytest.mark.parametrize("name", AUDIO_CONVERSATIONS)
def test_audio_prompt_items_equal_the_processor_input_ids(e2b, name):
    _, _, _, model, processor = e2b
    messages = AUDIO_CONVERSATIONS[name]()
    items, _ = model.tokenize_messages(messages)
    expected = list(processor_inputs(processor, model, messages)["input_ids"][0])
    assert layout(items, processor) == expected
    assert model.engine.special_id("<|audio|>") == processor.audio_token_id == 258881
    assert model.engine.special_id("<|audio>") == 256000 and model.engine.special_id("<audio|>") == 258883
    audio = [item.n_pos for item in items if isinstance(item, MediaChunk) and item.kind == "audio"]
    assert audio and expected.count(processor.audio_token_id) == sum(audio)


# -- image token budget ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_image_positions_equal_the_processor_soft_tokens_for_any_size(e2b, size):
    from PIL import Image

    from gemma_edge.media import load_media

    _, _, _, model, processor = e2b
    part = image_part(*IMAGE_SIZES[size], seed=7)
    chunk = model.engine.media_chunk(load_media(part))
    image = Image.open(io.BytesIO(part["bytes"])).convert("RGB")
    (expected,) = processor.image_processor(images=[image])["num_soft_tokens_per_image"]
    assert chunk.n_pos == expected <= model.engine.projector.image_budget.max_tokens


@pytest.mark.parametrize("budget", [70, 140, 280, 560, 1120])
@pytest.mark.parametrize("side", [(16, 3), (4, 3), (14, 2)])
def test_image_budget_sizes_like_transformers(budget, side):
    """The projector's sizing rule against transformers' own function, over sizes from 1 pixel to 4000,
    every aspect ratio from 1:4000 to 4000:1 in the sample (extreme ones hit its one-row/one-column rule)."""
    from transformers.models.gemma4.image_processing_pil_gemma4 import get_aspect_ratio_preserving_size

    from gemma_edge.projector import ImageBudget

    patch, kernel = side
    rule = ImageBudget(patch * kernel, budget)
    rng = np.random.default_rng(budget * 100 + patch)
    sizes = [(w, h) for w in (1, 2, 7, 47, 48, 49, 480, 4000) for h in (1, 3, 48, 333, 640, 4000)]
    sizes += [tuple(int(v) for v in rng.integers(1, 4000, size=2)) for _ in range(300)]
    for width, height in sizes:
        expected_h, expected_w = get_aspect_ratio_preserving_size(height, width, patch, budget * kernel ** 2, kernel)
        assert rule.size(width, height) == (expected_w, expected_h), (width, height)


def test_the_budget_comes_from_the_checkpoints_processor_config(e2b):
    _, _, mmproj, model, processor = e2b
    from gemma_edge.gguf_file import GGUFFile

    budget = model.engine.projector.image_budget
    assert budget.max_tokens == processor.image_processor.max_soft_tokens == 70
    assert budget.side == processor.image_processor.patch_size * processor.image_processor.pooling_kernel_size
    gguf = GGUFFile(mmproj)
    try:
        assert gguf.get("clip.vision.image_max_pixels") == 70 * budget.side ** 2
    finally:
        gguf.close()


# -- logits against transformers -------------------------------------------------------------------------

def first_reply_logits(model, items) -> np.ndarray:
    from llama_cpp import llama_get_logits_ith

    model.engine.reset()
    with model.engine.lock:
        model.engine._prefill(items)  # the prompt alone: its last logits are the first reply token's
        return np.ctypeslib.as_array(llama_get_logits_ith(model.engine.llm._ctx.ctx, -1),
                                     shape=(model.engine.llm.n_vocab(),)).copy()


def hf_first_reply_logits(checkpoint, processor, model, messages) -> np.ndarray:
    import torch
    from transformers import Gemma4ForConditionalGeneration

    hf = Gemma4ForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    inputs = processor_inputs(processor, model, messages, return_tensors="pt")
    with torch.no_grad():
        return hf(**inputs).logits[0, -1].float().numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_image_question_first_reply_logits_match_transformers(setup):
    """A non-native image (resized on both sides) under the bidirectional image attention both sides use."""
    checkpoint, _, _, model, processor = setup
    messages = [{"role": "user", "content": [image_part(100, 150, 8), {"type": "text", "text": "Describe it."}]}]
    items, _ = model.tokenize_messages(messages)
    assert [item.non_causal for item in items if isinstance(item, MediaChunk)] == [True]  # text hidden 64
    ours = first_reply_logits(model, items)
    reference = hf_first_reply_logits(checkpoint, processor, model, messages)
    assert cosine(ours, reference) > MIN_LOGIT_COSINE
    assert np.max(np.abs(ours - reference)) < 0.05 * np.max(np.abs(reference))


@pytest.mark.parametrize("seconds", AUDIO_SECONDS)
def test_audio_question_first_reply_logits_match_transformers(e2b, seconds):
    checkpoint, _, _, model, processor = e2b
    messages = [{"role": "user", "content": [audio_part(seconds), {"type": "text", "text": "Transcribe it."}]}]
    items, _ = model.tokenize_messages(messages)
    assert [item.non_causal for item in items if isinstance(item, MediaChunk)] == [False]
    ours = first_reply_logits(model, items)
    reference = hf_first_reply_logits(checkpoint, processor, model, messages)
    assert cosine(ours, reference) > MIN_LOGIT_COSINE
    assert np.max(np.abs(ours - reference)) < 0.05 * np.max(np.abs(reference))


# -- chat: KV reuse after a media turn ---------------------------------------------------------------------

@pytest.mark.parametrize("media", ["image", "audio"])
def test_turn_two_after_a_media_turn_evaluates_only_new_positions(e2b, media):
    from gemma_edge.chat import Chat

    model = e2b[3]
    model.engine.reset()
    chat = Chat(model, temperature=0, max_tokens=6)
    part = image_part(90, 130, 9) if media == "image" else audio_part(1.0, 3)
    first = chat.send([part, {"type": "text", "text": "What is it?"}])
    prompt1, _ = model.tokenize_messages(chat.messages[:-1])
    cached = model.engine.cached_tokens
    assert cached[:prompt_positions(prompt1)] == position_identities(prompt1)
    assert first.usage["prompt_tokens_evaluated"] == prompt_positions(prompt1)

    second = chat.send("Say more.")
    assert chat.messages[0]["content"][0]["type"] == media  # still in the history
    prompt2, _ = model.tokenize_messages(chat.messages[:-1])
    reused = common_prefix(cached, position_identities(prompt2))
    assert reused >= prompt_positions(prompt1)  # the media positions came from the cache
    assert second.usage["prompt_tokens"] == prompt_positions(prompt2)
    assert second.usage["prompt_tokens_evaluated"] == prompt_positions(prompt2) - reused


# -- command line ------------------------------------------------------------------------------------------

def run_json(*args) -> dict:
    from click.testing import CliRunner

    from gemma_edge.cli import main

    result = CliRunner().invoke(main, ["run", *args, "--json", "-t", "0", "-n", "4", "--ctx-size", "256"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


@pytest.mark.parametrize("media", ["image", "audio"])
def test_run_with_media_answers_like_the_api(e2b, media, tmp_path):
    _, text, _, model, _ = e2b
    part = image_part(70, 110, 10) if media == "image" else audio_part(1.0, 4)
    path = tmp_path / ("in.png" if media == "image" else "in.wav")
    path.write_bytes(part["bytes"])
    doc = run_json("Describe it.", "-m", str(text), f"--{media}", str(path))
    model.engine.reset()
    expected = model.generate([{"role": "user", "content": [{"type": media, "path": str(path)},
                                                            {"type": "text", "text": "Describe it."}]}],
                              temperature=0, max_tokens=4)
    assert doc["content"] == expected.content
    assert doc["usage"]["prompt_tokens"] == expected.usage["prompt_tokens"]
    text_only, _ = model.tokenize_messages([{"role": "user", "content": "Describe it."}])
    chunk = next(item for item in model.tokenize_messages([{"role": "user", "content": [part]}])[0]
                 if isinstance(item, MediaChunk))
    # its positions and its two markers
    assert doc["usage"]["prompt_tokens"] - prompt_positions(text_only) == chunk.n_pos + 2
