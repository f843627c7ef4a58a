"""Media in prompts: placeholders tied to their parts, the per-format expansion, and the prompt items the
engine builds for a conversation with images, checked position by position against transformers'
processor (Gemma3Processor on the tiny seeded Gemma 3 vision checkpoint; our converter's GGUF + mmproj
through the real llama.cpp/mtmd)."""
from __future__ import annotations

import io

import pytest

from gemma_edge.formats import Segment, expand_media, get_format, render_prompt, render_segments

IMAGE = {"type": "image", "path": "unused.png"}
OTHER = {"type": "image", "path": "other.png"}


# -- formats (pure) -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["gemma3", "gemma3n", "gemma4-small", "gemma4-large"])
def test_placeholder_segments_carry_their_own_part_and_join_to_the_template_string(fmt):
    messages = [{"role": "user", "content": [{"type": "text", "text": "a"}, IMAGE, {"type": "text", "text": "b"},
                                             OTHER]}]
    segments = render_segments(messages, format=fmt)
    assert "".join(s.text for s in segments) == render_prompt(messages, format=fmt)
    media = [s for s in segments if s.is_media]
    assert [s.part for s in media] == [IMAGE, OTHER] and all(s.special for s in media)
    assert media[0].part is IMAGE and media[1].part is OTHER  # the part itself, not a count


def test_gemma3_expansion_joins_the_blank_lines_into_the_neighbouring_text():
    """Gemma3Processor: "\\n\\n<start_of_image>" + soft tokens + "<end_of_image>\\n\\n", tokenized as one string."""
    messages = [{"role": "user", "content": [IMAGE, {"type": "text", "text": "What is it?"}]}]
    expanded = expand_media(render_segments(messages, format="gemma3"), get_format("gemma3").media_expansion)
    texts = [(s.text, s.special, s.is_media) for s in expanded]
    assert texts == [("<bos>", True, False), ("<start_of_turn>", True, False), ("user\n\n\n", False, False),
                     ("<start_of_image>", True, False), ("<start_of_image>", True, True),
                     ("<end_of_image>", True, False), ("\n\nWhat is it?", False, False),
                     ("<end_of_turn>", True, False), ("\n", False, False), ("<start_of_turn>", True, False),
                     ("model\n", False, False)]


def test_gemma4_expansion_has_only_the_markers():
    messages = [{"role": "user", "content": [IMAGE, {"type": "text", "text": "What is it?"}]}]
    expanded = expand_media(render_segments(messages, format="gemma4-small"),
                            get_format("gemma4-small").media_expansion)
    at = next(i for i, s in enumerate(expanded) if s.is_media)
    assert [s.text for s in expanded[at - 1:at + 3]] == ["<|image>", "<|image|>", "<image|>", "What is it?"]
    assert expanded[at - 2] == Segment("user\n", False)


def test_formats_without_an_expansion_for_a_kind():
    assert "audio" not in get_format("gemma3n").media_expansion  # mtmd has no gemma3na encoder
    assert "video" not in get_format("gemma4-small").media_expansion
    assert set(get_format("gemma4-large").media_expansion) == {"image", "audio"}
    assert get_format("gemma2").media_expansion == {}


# -- prompt items against transformers' processor ------------------------------------------------------

@pytest.fixture(scope="module")
def gemma3_vision():
    from gemma_edge.api import Model
    from tests.convert.tiny_gemma3_vision import tiny_gemma3_vision
    from tests.runtime.tiny_vision import gemma3_vision_pair

    checkpoint = tiny_gemma3_vision()
    text, mmproj = gemma3_vision_pair()
    model = Model(text, n_ctx=256, mmproj=mmproj)
    yield checkpoint, model
    model.close()


def layout(items, image_token_id: int) -> list[int]:
    """Prompt items as the processor writes them: each media position is the processor's image token."""
    from gemma_edge.llama.mtmd import MediaChunk

    out = []
    for item in items:
        out += [image_token_id] * item.n_pos if isinstance(item, MediaChunk) else [item]
    return out


CONVERSATIONS = {
    "image first": lambda a, b: [{"role": "user", "content": [a, {"type": "text", "text": "What is this?"}]}],
    "system, text around two images": lambda a, b: [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": [{"type": "text", "text": "Compare"}, a, {"type": "text", "text": "with"}, b,
                                     {"type": "text", "text": "please."}]}],
    "image in an earlier turn": lambda a, b: [
        {"role": "user", "content": [a, {"type": "text", "text": "Colour?"}]},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "And the shape?"}],
}


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_gemma3_prompt_items_equal_the_processor_input_ids(gemma3_vision, name):
    from PIL import Image

    from tests.convert.tiny_gemma3_vision import IMAGE_SIZE, MM_TOKENS_PER_IMAGE
    from tests.runtime.tiny_vision import gemma3_processor, image_png

    checkpoint, model = gemma3_vision
    pngs = [image_png(1, IMAGE_SIZE), image_png(2, IMAGE_SIZE)]
    messages = CONVERSATIONS[name](*({"type": "image", "bytes": png} for png in pngs))
    items, _ = model.tokenize_messages(messages)

    processor = gemma3_processor(checkpoint)
    prompt = render_prompt(messages, format="gemma3")
    n_images = prompt.count("<start_of_image>")
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs[:n_images]]
    expected = processor(text=prompt, images=[images], add_special_tokens=False)["input_ids"][0]
    image_token = processor.image_token_ids[0]

    assert layout(items, image_token) == list(expected)
    chunks = [item for item in items if not isinstance(item, int)]
    assert len(chunks) == n_images and all(c.n_pos == MM_TOKENS_PER_IMAGE for c in chunks)
    assert list(expected).count(image_token) == n_images * MM_TOKENS_PER_IMAGE
