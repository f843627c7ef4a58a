"""Images end to end through the real engine: the tiny seeded Gemma 3 vision checkpoint converted by our
converter (F32 text GGUF + F32 mmproj), llama.cpp + mtmd on one side, transformers on the other."""
from __future__ import annotations

import io

import numpy as np
import pytest

from gemma_edge.llama.engine import common_prefix, position_identities, prompt_positions
from gemma_edge.media import MediaError

GREEDY_STEPS = 8
DECISIVE_MARGIN = 0.05  # a step is compared only while transformers' top-2 logits differ by this much


@pytest.fixture(scope="module")
def pair():
    from tests.convert.tiny_gemma3_vision import tiny_gemma3_vision
    from tests.runtime.tiny_vision import gemma3_vision_pair

    return (tiny_gemma3_vision(), *gemma3_vision_pair())


@pytest.fixture(scope="module")
def vision(pair):
    from gemma_edge.api import Model

    _, text, mmproj = pair
    model = Model(text, n_ctx=256, n_threads=2, mmproj=mmproj)
    yield model
    model.close()


def image_part(seed: int) -> dict:
    from tests.convert.tiny_gemma3_vision import IMAGE_SIZE
    from tests.runtime.tiny_vision import image_png

    return {"type": "image", "bytes": image_png(seed, IMAGE_SIZE)}


def question(seed: int, text: str = "Describe the image.") -> list[dict]:
    # no "?": in the tiny vocabulary it is the piece the checkpoint's config names its image token
    return [{"role": "user", "content": [image_part(seed), {"type": "text", "text": text}]}]


def hf_inputs(checkpoint, items, part):
    """transformers' inputs for the same prompt: our token ids with the model's image token at every image
    position, the image processor's pixels, and token_type_ids marking the image positions."""
    import torch
    from PIL import Image
    from transformers import AutoConfig, Gemma3ImageProcessor

    image_token = AutoConfig.from_pretrained(checkpoint).image_token_id
    ids = [token if isinstance(token, int) else image_token for token in position_identities(items)]
    image = Image.open(io.BytesIO(part["bytes"])).convert("RGB")
    pixels = Gemma3ImageProcessor.from_pretrained(checkpoint)(images=[image], return_tensors="pt")["pixel_values"]
    input_ids = torch.tensor([ids])
    return {"input_ids": input_ids, "pixel_values": pixels, "token_type_ids": (input_ids == image_token).long()}


def test_first_token_logits_and_greedy_reply_match_transformers(vision, pair):
    """Logits of the first reply token close to transformers' (F32 both sides), and the greedy reply equal
    token for token while transformers' choice is decisive (tiny random models have near-ties, where F32
    rounding differences may legitimately pick the other token) and is not the tiny vocabulary's piece
    that doubles as the image token (transformers would take a generated one for an image position)."""
    import torch
    from llama_cpp import llama_get_logits_ith
    from transformers import Gemma3ForConditionalGeneration

    checkpoint, _, _ = pair
    messages = question(3)
    items, _ = vision.tokenize_messages(messages)
    inputs = hf_inputs(checkpoint, items, messages[0]["content"][0])

    hf = Gemma3ForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32,
                                                        attn_implementation="eager").eval()
    stops = sorted(vision.engine.stop_ids)
    image_token = hf.config.image_token_id
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=GREEDY_STEPS, do_sample=False, eos_token_id=stops,
                          suppress_tokens=[image_token], output_logits=True, return_dict_in_generate=True,
                          pad_token_id=0)
    hf_tokens = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    hf_logits = [step[0].float().numpy() for step in out.logits]

    vision.engine.reset()
    with vision.engine.lock:
        vision.engine._prefill(items)  # the prompt alone: its last logits are the first reply token's
        ours = np.ctypeslib.as_array(llama_get_logits_ith(vision.engine.llm._ctx.ctx, -1),
                                     shape=(vision.engine.llm.n_vocab(),)).copy()
    reference = hf_logits[0][:ours.shape[0]]
    cosine = float(ours @ reference / (np.linalg.norm(ours) * np.linalg.norm(reference)))
    assert cosine > 0.9999, cosine
    assert np.max(np.abs(ours - reference)) < 1e-3 * np.max(np.abs(reference)) + 1e-4

    gen = vision.engine.generate(items, vision.sampling(temperature=0), max_tokens=GREEDY_STEPS)
    gen.text()
    ours_tokens = gen.tokens + ([stops[0]] if gen.finish_reason == "stop" else [])
    compared = 0
    for step, (hf_token, logits) in enumerate(zip(hf_tokens, hf_logits)):
        top2 = np.sort(logits)[-2:]
        if top2[1] - top2[0] < DECISIVE_MARGIN or int(np.argmax(logits)) == image_token:
            break
        if hf_token in stops:
            assert gen.finish_reason == "stop" and len(gen.tokens) == step
            compared += 1
            break
        assert ours_tokens[step] == hf_token, (step, ours_tokens, hf_tokens)
        compared += 1
    assert compared >= 3, (compared, hf_tokens)


def test_chat_keeps_the_image_and_turn_two_evaluates_only_new_tokens(vision):
    from gemma_edge.chat import Chat

    vision.engine.reset()
    chat = Chat(vision, temperature=0, max_tokens=6)
    first = chat.send(question(4)[0]["content"])
    prompt1, _ = vision.tokenize_messages(chat.messages[:-1])
    cached = vision.engine.cached_tokens
    assert cached[:prompt_positions(prompt1)] == position_identities(prompt1)
    assert first.usage["prompt_tokens_evaluated"] == prompt_positions(prompt1)

    second = chat.send("Describe it again.")
    assert chat.messages[0]["content"][0]["type"] == "image"  # still in the history
    prompt2, _ = vision.tokenize_messages(chat.messages[:-1])
    reused = common_prefix(cached, position_identities(prompt2))
    assert reused >= prompt_positions(prompt1)  # the image's positions came from the cache
    assert second.usage["prompt_tokens"] == prompt_positions(prompt2)
    assert second.usage["prompt_tokens_evaluated"] == prompt_positions(prompt2) - reused


def test_a_different_image_in_the_same_place_is_evaluated_again(vision):
    greedy = {"temperature": 0, "max_tokens": 6}
    vision.engine.reset()
    vision.chat(question(5), **greedy)
    items, _ = vision.tokenize_messages(question(6))
    image_start = next(i for i, identity in enumerate(position_identities(items)) if isinstance(identity, tuple))
    warm = vision.chat(question(6), **greedy)
    # everything from the new image on is evaluated; what precedes it is reused
    assert warm.usage["prompt_tokens_evaluated"] == prompt_positions(items) - image_start
    vision.engine.reset()
    cold = vision.chat(question(6), **greedy)
    assert cold.usage["prompt_tokens_evaluated"] == prompt_positions(items)
    assert warm.content == cold.content


def test_image_on_a_text_only_model_is_one_clear_line(model):
    with pytest.raises(MediaError) as error:
        model.chat(question(1), max_tokens=2)
    message = str(error.value)
    assert "has no vision projector" in message and "mmproj" in message and "\n" not in message


def test_audio_on_a_vision_only_projector_is_one_clear_line(vision):
    from gemma_edge.formats import get_format

    assert vision.engine.supports("image") and not vision.engine.supports("audio")
    gemma4 = get_format("gemma4-small")
    vision.turn_format = gemma4  # a format with an audio placeholder, on this image-only projector
    try:
        with pytest.raises(MediaError) as error:
            vision.chat([{"role": "user", "content": [{"type": "audio", "bytes": b"RIFF"}]}], max_tokens=2)
    finally:
        vision.turn_format = get_format("gemma3")
    assert str(error.value).startswith("this model's projector has no audio encoder")
    assert "\n" not in str(error.value)


def test_a_text_gguf_is_not_a_projector(pair):
    from gemma_edge.api import Model
    from gemma_edge.projector import ProjectorError

    _, text, _ = pair
    with pytest.raises(ProjectorError, match="not an mmproj file"):
        Model(text, n_ctx=64, mmproj=text)


def test_load_finds_the_projector_beside_the_model(pair, tmp_path):
    import shutil

    from gemma_edge.api import load

    _, text, mmproj = pair
    shutil.copy(text, tmp_path / "tiny.gguf")
    shutil.copy(mmproj, tmp_path / "mmproj-tiny.gguf")
    model = load(tmp_path / "tiny.gguf", n_ctx=64)
    try:
        assert model.engine.supports("image")
    finally:
        model.close()
    text_only = load(tmp_path / "tiny.gguf", n_ctx=64, mmproj=False)
    try:
        assert not text_only.engine.supports("image")
    finally:
        text_only.close()
