"""The tiny seeded Gemma 4 target and MTP drafter pair the runtime drafts with, and transformers' drafter
logits for the same inputs (the oracle of gemma_edge.llama.mtp).

The target is the real-vocabulary tiny E2B-like Gemma 4 of tests.convert.tiny_gemma4 (KV-sharing layers, as
the real E2B/E4B whose drafters are published; its last two layers are a sliding and a full one, as llama.cpp's
drafter KV sharing assumes); the drafter is its drafter of tests.convert.fixtures.tiny_gemma4_assistant,
converted by our converter. That drafter has ordered embeddings (transformers scores only the tokens of its
top centroids), which llama.cpp leaves out: the oracle is transformers' full logits, the LM head applied
to the drafter's final normed hidden state.

transformers hands a drafter the target's KV only for a KV-sharing target (`shared_kv_states` holds the
layers that store for sharing): the dense tiny target (no shared layers) gives it none.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np

from tests.convert.fixtures.tiny_gemma4_assistant import assistant_checkpoint, build_model, hf_assistant, recipe
from tests.convert.tiny import cached_dir, cached_file
from tests.convert.tiny_gemma4 import (convert_with_ours, gemma4_checkpoint, read_real_vocab, real_vocab_gguf,
                                       save_checkpoint, tiny_gemma4_gguf, write_tokenizer_files)

KIND = "e2b"


def target_checkpoint() -> Path:
    return gemma4_checkpoint(KIND, vocab="real")


def target_gguf() -> Path:
    return tiny_gemma4_gguf(KIND)


def other_target_checkpoint(backbone_hidden_size: int) -> Path:
    """A drafter like the target's but trained for a target of another hidden size."""
    spec = recipe(KIND, vocab="real")
    spec["backbone_hidden_size"] = backbone_hidden_size

    def build(out: Path) -> None:
        real = read_real_vocab(real_vocab_gguf())
        write_tokenizer_files(real, out, None)
        save_checkpoint(build_model(copy.deepcopy(spec), len(real["tokens"])), out, spec["dtype"])

    return cached_dir(f"gemma4-assistant-{KIND}-backbone{backbone_hidden_size}", spec, build)


@functools.cache
def drafter_gguf(vocab: str = "real", backbone_hidden_size: int | None = None) -> Path:
    """The drafter (`vocab` "tiny": the 512-token one, a drafter for another vocabulary) as a
    `gemma4-assistant` GGUF by our converter, cached on disk."""
    checkpoint = (other_target_checkpoint(backbone_hidden_size) if backbone_hidden_size
                  else assistant_checkpoint(KIND, vocab=vocab))
    return cached_file(f"ours-{checkpoint.name}-f32", {"model": checkpoint.name, "type": "f32"}, ".gguf",
                       lambda path: convert_with_ours(checkpoint, path, "f32"))


def transformers_drafter_steps(prompt: list[int], steps: int = 1, sliding_keys: int | None = None):
    """transformers' MTP drafting as its candidate generator does it, after the target has read `prompt`:
    the target's greedy next token t and its final (normed) hidden state at the prompt's last position
    feed the drafter at t's position; each further step feeds the drafted token and the drafter's
    projected state at the same position. `sliding_keys`: give the drafter's sliding-window layers only
    the target's last that many keys (instead of transformers' inclusive window of window+1).
    Returns (t, [drafter logits per step])."""
    import torch
    from transformers import Gemma4ForCausalLM

    target = Gemma4ForCausalLM.from_pretrained(target_checkpoint(), dtype=torch.float32).eval()
    drafter = hf_assistant(assistant_checkpoint(KIND, vocab="real"))
    normed = []
    drafter.model.norm.register_forward_hook(lambda module, args, output: normed.append(output))
    with torch.no_grad():
        out = target(torch.tensor([prompt]), output_hidden_states=True, return_shared_kv_states=True, use_cache=False)
        token = int(out.logits[0, -1].argmax())
        hidden = out.hidden_states[-1][:, -1:]
        shared = dict(out.shared_kv_states)
        position = torch.tensor([[len(prompt)]])
        mask = torch.ones(1, len(prompt) + 1, dtype=torch.long)
        if sliding_keys is not None:
            keys, values = shared["sliding_attention"]
            shared["sliding_attention"] = (keys[:, :, -sliding_keys:], values[:, :, -sliding_keys:])
            mask = None
        embed = target.get_input_embeddings()
        logits, last = [], token
        for _ in range(steps):
            inputs = torch.cat([embed(torch.tensor([[last]])), hidden], dim=-1)
            step = drafter(inputs_embeds=inputs, attention_mask=mask, position_ids=position,
                           shared_kv_states=shared, use_cache=False)
            full = drafter.lm_head(normed[-1])[0, -1]
            logits.append(full.numpy().astype(np.float64))
            last = int(full.argmax())
            hidden = step.last_hidden_state
    return token, logits
