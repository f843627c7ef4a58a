"""Private attributes of llama_cpp.Llama that gemma-edge relies on, named here once (llama-cpp-python
0.3.36; a newer version is checked against this module)."""
from __future__ import annotations

import contextlib
from typing import Iterator

from gemma_edge.llama import llama_cpp


@contextlib.contextmanager
def recording_logits(llm) -> Iterator[list]:
    """Inside: after every `llm.eval`, the logits of its last position are appended (a copy, float32
    numpy array) to the list this yields — the logits each generated token is sampled from."""
    import numpy as np

    recorded: list = []
    lc, original, n_vocab = llama_cpp(), llm.eval, llm.n_vocab()

    def eval_and_record(tokens):
        original(tokens)
        row = lc.llama_get_logits_ith(llm._ctx.ctx, -1)
        recorded.append(np.ctypeslib.as_array(row, shape=(n_vocab,)).copy())

    llm.eval = eval_and_record
    try:
        yield recorded
    finally:
        del llm.eval
