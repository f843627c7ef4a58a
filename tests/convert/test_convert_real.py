"""The real Gemma 3 270M (recovered from the embedded GGUF as a BF16 safetensors checkpoint): byte-identical
to llama.cpp's reference converter, quantized perplexity close to F32, bounded conversion memory."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.convert.oracle import gguf_differences, read_header, reference_gguf
from tests.convert.real_gemma3 import real_checkpoint, real_conversion

pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.slow

PERPLEXITY_TOKENS = 2000
WINDOW = 500  # perplexity in 4 fresh windows, like llama.cpp's perplexity tool, to bound the logits buffer
MEMORY_SLACK_BYTES = 300 * 1000 * 1000


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return real_checkpoint()


@pytest.mark.parametrize("type_name", ["f32", "f16"])
def test_real_weights_same_as_reference(checkpoint: Path, type_name: str, tmp_path: Path) -> None:
    from convert.api import convert_checkpoint

    ours = tmp_path / "ours.gguf"
    convert_checkpoint(checkpoint, ours, type_name)
    assert gguf_differences(ours, reference_gguf(checkpoint, type_name, label="270m")) == []


def perplexity(gguf_path: Path, text: str) -> float:
    from llama_cpp import Llama

    llm = Llama(str(gguf_path), n_ctx=WINDOW, n_batch=WINDOW, n_ubatch=WINDOW, logits_all=True, verbose=False,
                n_threads=2)
    try:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False)[:PERPLEXITY_TOKENS]
        assert len(ids) == PERPLEXITY_TOKENS
        nll, count = 0.0, 0
        for start in range(0, len(ids), WINDOW - 1):
            window = [llm.token_bos()] + ids[start:start + WINDOW - 1]
            llm.reset()
            llm.eval(window)
            logits = np.asarray(llm.scores[: len(window) - 1], dtype=np.float32)
            top = logits.max(axis=1, keepdims=True)
            log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1, dtype=np.float64))
            nll += float(np.sum(log_norm - logits[np.arange(len(window) - 1), window[1:]], dtype=np.float64))
            count += len(window) - 1
        return float(np.exp(nll / count))
    finally:
        llm.close()


def fixed_text() -> str:
    """A fixed English text present in every CPython install (its license, ~3,000 tokens)."""
    import os

    return (Path(os.__file__).parent / "LICENSE.txt").read_text(encoding="utf-8")


def test_quantized_perplexity_close_to_f32(checkpoint: Path) -> None:
    text = fixed_text()
    f32 = perplexity(real_conversion(checkpoint, "f32"), text)
    q8 = perplexity(real_conversion(checkpoint, "q8_0"), text)
    q4 = perplexity(real_conversion(checkpoint, "q4_k_m"), text)
    assert 1.0 < f32 < 100.0, f32  # a working language model on English text
    assert abs(q8 / f32 - 1) <= 0.01, (f32, q8)
    assert abs(q4 / f32 - 1) <= 0.10, (f32, q4)


def test_conversion_memory_bounded_by_largest_tensor(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.gguf"
    # a fresh parent process, so RUSAGE_CHILDREN sees only the converter
    probe = (
        "import resource, subprocess, sys\n"
        f"subprocess.run([sys.executable, '-m', 'convert', 'convert', {str(checkpoint)!r}, '-o', {str(out)!r},"
        " '--type', 'f16', '--quiet'], check=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    )
    peak = int(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout)
    largest = max(nbytes for _, _, _, nbytes in read_header(out).tensors.values())
    assert largest >= 262144 * 640 * 2  # the F16 embedding
    assert peak <= largest + MEMORY_SLACK_BYTES, json.dumps({"peak": peak, "largest": largest})
