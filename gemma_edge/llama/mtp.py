"""A Gemma 4 MTP drafter run through llama.cpp's MTP context (`--spec mtp[:MODEL]`), as a
gemma_edge.speculative Drafter.

The drafter (`gemma4-assistant` GGUF, checked by gemma_edge.mtp.read_drafter) gets a context of type
LLAMA_CONTEXT_TYPE_MTP whose `ctx_other` is the target's: it has no KV cache of its own but views the
target's (its full-attention layers the target's last layer, its sliding-window layers the one before),
cells included. One drafting step decodes one row: the newest token (the target's choice, not yet in
the target's cache) at that token's position, carrying as its "state" the target's final normed hidden
state at the row that chose it. Each further step feeds the drafted token with the drafter's own
projected state at the same position, as transformers' Gemma4AssistantCandidateGenerator does.

Facts of llama.cpp 0.3.36 this relies on (found while checking the drafter's logits against
transformers on tiny seeded checkpoints, tests/runtime/test_mtp.py):
- The drafter context must be created before the target decodes anything: creating it resizes, and so
  empties, the KV cells it shares with the target. Created later, the target's cached positions are
  forgotten and every key is masked (NaN logits without flash attention, zeros with it: the mismatch
  measured before this was found). `MtpDrafter` resets the engine after attaching, so nothing stale stays.
- Both contexts must agree on flash attention (it decides whether V is stored transposed).
- The hidden states are read through llama.cpp's staging API (src/llama-ext.h, C++ linkage, not in
  llama-cpp-python's bindings): `llama_set_embeddings_nextn` / `llama_get_embeddings_nextn_ith`.
  Unmasked on the target (a row for every token of the last decode, without asking logits of each),
  masked on the drafter. `llama_batch_ext_set_embd_state` is a stub returning false; the state goes in
  as the token's embedding (`llama_batch_ext_set_embd_token`), which the MTP context reads as such.
- Within the sliding window the drafter's logits are transformers' (cosine 0.999998, three chained
  steps). Once the context is longer, llama.cpp's drafter attends to the last window−1 positions in its
  sliding layers, transformers' to the last window+1 (an inclusive bidirectional window): given window−1
  keys transformers comes close (cosine ≥ 0.998 at 17–40 tokens, 0.988 at exactly the window: a remaining
  difference not pinned down). Drafts differ, the output cannot (drafts are verified).
- llama.cpp leaves out ordered embeddings (E2B/E4B drafters: transformers scores only the tokens of the
  top centroids); it scores the whole vocabulary.
"""
from __future__ import annotations

import ctypes
from typing import Sequence

from gemma_edge.errors import InvalidModelError
from gemma_edge.llama import llama_cpp
from gemma_edge.llama.internals import context_pointer, flash_attention_type, llama_library
from gemma_edge.llama.logs import silence_llama_logs
from gemma_edge.mtp import DrafterFacts, MtpDrafterError

# Itanium C++ names of llama.cpp's staging API (src/llama-ext.h declares them without extern "C")
_SET_NEXTN = "_Z26llama_set_embeddings_nextnP13llama_contextbb"
_GET_NEXTN_ITH = "_Z30llama_get_embeddings_nextn_ithP13llama_contexti"


def _staging_api():
    """(set_embeddings_nextn(ctx, on, masked), get_embeddings_nextn_ith(ctx, i) -> float*)."""
    lib = llama_library()
    try:
        set_nextn, get_nextn = lib[_SET_NEXTN], lib[_GET_NEXTN_ITH]
    except AttributeError:
        raise MtpDrafterError("this llama.cpp build does not export the hidden-state API MTP drafting needs "
                              "(llama_set_embeddings_nextn); use --spec ngram or off") from None
    set_nextn.argtypes, set_nextn.restype = [ctypes.c_void_p, ctypes.c_bool, ctypes.c_bool], None
    get_nextn.argtypes, get_nextn.restype = [ctypes.c_void_p, ctypes.c_int32], ctypes.POINTER(ctypes.c_float)
    return set_nextn, get_nextn


class MtpDrafter:
    """A loaded MTP drafter attached to `engine` (a gemma_edge.llama.engine.Engine that has not decoded
    yet, or whose cache may be dropped). Used under the engine's lock. `close()` before the engine's."""

    def __init__(self, facts: DrafterFacts, engine):
        silence_llama_logs()
        lc = llama_cpp().llama_cpp
        self._lc, self.facts, self.engine = lc, facts, engine
        self._set_nextn, self._get_nextn = _staging_api()
        self._target = context_pointer(engine.llm)
        model_params = lc.llama_model_default_params()
        model_params.use_mmap = True
        self._model = lc.llama_model_load_from_file(str(facts.path).encode(), model_params)
        if not self._model:
            raise InvalidModelError(f"{facts.path}: llama.cpp could not load it as an MTP drafter")
        params = lc.llama_context_default_params()
        params.n_ctx = engine.n_ctx
        params.n_batch = params.n_ubatch = 1  # one row per drafting step
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = engine.n_threads
        params.ctx_type = lc.LLAMA_CONTEXT_TYPE_MTP
        params.ctx_other = self._target
        params.flash_attn_type = flash_attention_type(engine.llm)
        params.no_perf = True
        self._ctx = lc.llama_init_from_model(self._model, params)
        if not self._ctx:
            lc.llama_model_free(self._model)
            raise InvalidModelError(f"{facts.path}: llama.cpp could not make an MTP context of it for "
                                    f"{engine.facts.path.name}")
        self._set_nextn(self._target, True, False)
        self._set_nextn(self._ctx, True, True)
        engine.reset()  # the new context emptied the cells it shares with the target
        self._batch = lc.llama_batch_ext_init(self._ctx)
        self.n_embd = facts.target_hidden_size
        self.n_vocab = facts.n_vocab
        self._position = (lc.llama_pos * 1)()

    def step(self, token: int, position: int, state) -> tuple[int, object] | None:
        """One drafting step: the drafter's most likely token after `token` at `position` given `state`
        (a float pointer to one hidden-state row), and its state for the next step (None: llama.cpp failed)."""
        import numpy as np

        lc, batch = self._lc, self._batch
        lc.llama_batch_ext_clear(batch)
        row = lc.llama_batch_ext_add_token(batch, 0, token)
        self._position[0] = position
        if (row < 0 or not lc.llama_batch_ext_set_pos(batch, row, self._position)
                or not lc.llama_batch_ext_set_embd_token(batch, row, lc.llama_embd(state, 1, self.n_embd))
                or not lc.llama_batch_ext_set_output_logits(batch, row, True)
                or lc.llama_process(self._ctx, lc.LLAMA_PROCESS_TYPE_DECODE, batch) != 0):
            return None
        logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(self._ctx, row), shape=(self.n_vocab,))
        return int(np.argmax(logits)), self._get_nextn(self._ctx, row)

    def logits(self):
        """The last step's logits (a view of llama.cpp's buffer, valid until the next step)."""
        import numpy as np

        return np.ctypeslib.as_array(self._lc.llama_get_logits_ith(self._ctx, 0), shape=(self.n_vocab,))

    def target_state(self):
        """The target's final hidden state at the row that chose its newest token (engine.hidden_row)."""
        return self._get_nextn(self._target, self.engine.hidden_row)

    def propose(self, context: Sequence[int], limit: int) -> list[int]:
        """Greedy drafts after `context`, whose last token the target chose and has not evaluated yet."""
        draft: list[int] = []
        if not context or limit <= 0:
            return draft
        token, position, state = context[-1], self.engine.llm.n_tokens, self.target_state()
        while state and len(draft) < limit:
            result = self.step(token, position, state)
            if result is None:
                break
            token, state = result
            draft.append(token)
        return draft

    def close(self) -> None:
        lc = self._lc
        if self._batch is not None:
            lc.llama_batch_ext_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            silence_llama_logs()
            self._set_nextn(self._target, False, False)
            lc.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            lc.llama_model_free(self._model)
            self._model = None
