"""No GGUF makes gemma-edge crash: mutated real files through the validating reader (10,000+ per run,
seeded, deterministic) and a sample of them through the real command line."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bench.fuzz_gguf import MUTATIONS, apply_mutations, load_seed, mutate_and_read, run_campaign
from gemma_edge.errors import InvalidModelError
from gemma_edge.gguf_file import GGUFFile
from tests.runtime.fuzz_seeds import seed_files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL_SEED_READS = 1_500  # per converted seed: 7 seeds -> 10,500 reads (~1 ms each)
EMBEDDED_READS = 60  # the embedded 270M's 262k-token vocabulary makes each full read ~0.1 s


@pytest.fixture(scope="module")
def seeds():
    return [load_seed(path) for path in seed_files()]


def test_every_seed_reads_and_has_fields_to_mutate(seeds):
    names = {s.name for s in seeds}
    assert {"gemma1-f16.gguf", "gemma3n-f32.gguf", "gemma4-e2b-f32.gguf", "mmproj-gemma3-mm-f16.gguf"} <= names
    for seed in seeds:
        fields = seed.fields
        assert fields.lengths and fields.types and fields.values and fields.dims and fields.offsets, seed.name


@pytest.mark.parametrize("index", range(7))
def test_mutated_converted_files_are_read_or_refused(seeds, index):
    seed = seeds[index]
    campaign = run_campaign([seed], SMALL_SEED_READS, seed=index)
    assert campaign.crashes == [], campaign.crashes[0]
    # the mutations reach past the first checks: many kinds of rejection, and intact reads too
    assert len(campaign.rejected) >= 10 and campaign.returned > 0, (seed.name, campaign.rejected)


def test_mutated_embedded_model_is_read_or_refused(embedded_model_path):
    campaign = run_campaign([load_seed(embedded_model_path)], EMBEDDED_READS, seed=1)
    assert campaign.crashes == [], campaign.crashes[0]
    assert campaign.total == EMBEDDED_READS and len(campaign.rejected) >= 5


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__)
def test_each_kind_of_mutation_alone_is_read_or_refused(seeds, mutation):
    rng = np.random.default_rng(7)
    outcomes = [mutate_and_read(rng, seeds[i % len(seeds)], (mutation,)) for i in range(140)]
    crashes = [detail for outcome, detail in outcomes if outcome == "crash"]
    assert crashes == [], crashes[0]


# -- through the command line ------------------------------------------------------------------------------

def _mutated_files(seeds, tmp_path, count: int, outcome: str, rng_seed: int) -> list:
    """`count` mutated copies of the small seeds whose read gives `outcome` ("rejected" or "returned")."""
    rng = np.random.default_rng(rng_seed)
    files = []
    while len(files) < count:
        seed = seeds[len(files) % 6]  # the text models (the mmproj is not a model to run)
        state = rng.bit_generator.state
        if mutate_and_read(rng, seed)[0] != outcome:
            continue
        rng.bit_generator.state = state  # replay the same mutation to write it out
        path = tmp_path / f"{len(files)}-{seed.name}"
        _write_mutation(rng, seed, path)
        files.append(path)
    return files


def _write_mutation(rng, seed, path) -> None:
    with apply_mutations(rng, seed) as view:
        path.write_bytes(view)


def _gemma_edge(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "gemma_edge", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.mark.slow
def test_refused_files_give_one_line_and_exit_2_from_info_and_run(seeds, tmp_path):
    for i, path in enumerate(_mutated_files(seeds, tmp_path, 12, "rejected", rng_seed=3)):
        command = ("info", str(path)) if i % 2 else ("run", "hi", "-m", str(path), "--max-tokens", "2")
        result = _gemma_edge(*command)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (command, result.returncode, result.stderr[-2000:])
        assert lines[0].startswith("gemma-edge: error:") and "Traceback" not in result.stderr


@pytest.mark.slow
def test_files_that_pass_the_checks_never_kill_llama_cpp(seeds, tmp_path):
    """Mutations the reader cannot tell from a real file (flipped weights, changed values) reach llama.cpp:
    it generates or refuses in one line, never dies by a signal."""
    for path in _mutated_files(seeds, tmp_path, 8, "returned", rng_seed=5):
        result = _gemma_edge("run", "hi", "-m", str(path), "--max-tokens", "2", "--temperature", "0")
        assert result.returncode in (0, 2), (path.name, result.returncode, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
        if result.returncode == 2:
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr


COMMANDS = {  # every command that opens a GGUF, with {model}/{mmproj}/{tmp} filled in
    "info": ["info", "{model}"],
    "run": ["run", "hi", "-m", "{model}"],
    "chat": ["chat", "-m", "{model}"],
    "serve": ["serve", "-m", "{model}", "--port", "0"],
    "bench": ["bench", "{model}"],
    "perplexity": ["perplexity", "{model}", "{tmp}/text.txt"],
    "doctor": ["doctor", "{model}"],
    "template": ["template", "--check", "{model}"],
    "quantize": ["quantize", "{model}", "-o", "{tmp}/out.gguf", "--type", "q8_0"],
    "mmproj": ["run", "hi", "-m", "{text_model}", "--mmproj", "{mmproj}", "--image", "{tmp}/image.png"],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_malformed_gguf_in_one_line(seeds, tmp_path, command):
    from PIL import Image

    model = _mutated_files(seeds, tmp_path, 1, "rejected", rng_seed=len(command))[0]
    mmproj_seed, mmproj = seeds[6], tmp_path / "mmproj.gguf"
    rng = np.random.default_rng(0)
    while True:  # the first rejected mutation of the mmproj, written out
        state = rng.bit_generator.state
        if mutate_and_read(rng, mmproj_seed)[0] == "rejected":
            rng.bit_generator.state = state
            _write_mutation(rng, mmproj_seed, mmproj)
            break
    (tmp_path / "text.txt").write_text("Some text to score.\n")
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "image.png")
    args = [a.format(model=model, mmproj=mmproj, tmp=tmp_path, text_model=seed_files()[3])
            for a in COMMANDS[command]]
    result = _gemma_edge(*args, timeout=180)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (args, result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and str(mmproj if command == "mmproj" else model) in lines[0]
    assert not (tmp_path / "out.gguf").exists()


def test_python_api_raises_the_projects_error(seeds, tmp_path):
    import gemma_edge
    from convert.quantize import quantize
    from gemma_edge.errors import GemmaEdgeError, InvalidModelError

    for path in _mutated_files(seeds, tmp_path, 4, "rejected", rng_seed=21):
        with pytest.raises(InvalidModelError):
            gemma_edge.load(path)
        with pytest.raises(InvalidModelError):
            quantize(path, tmp_path / "out.gguf", "q8_0")
        assert not (tmp_path / "out.gguf").exists()
    with pytest.raises(GemmaEdgeError, match="mmproj"):
        gemma_edge.load(seed_files()[3], mmproj=tmp_path / "0-gemma1-f16.gguf")


def test_a_projector_mtmd_refuses_is_one_error_with_nothing_more_on_stderr(tmp_path, monkeypatch):
    """A well-formed mmproj of a projector type mtmd does not know passes the reader; mtmd refuses it and
    the half-built projector is cleaned up without an 'Exception ignored' traceback."""
    import gc
    import struct

    import gemma_edge
    from gemma_edge.projector import ProjectorError

    files = seed_files()
    data = files[6].read_bytes()
    value = b"clip.projector_type" + struct.pack("<IQ", 8, 6) + b"gemma3"  # key, string type, length, value
    assert data.count(value) == 1
    mmproj = tmp_path / "mmproj.gguf"
    mmproj.write_bytes(data.replace(value, value[:-1] + b"X"))  # renamed in place: same length
    ignored = []  # what Python would print as "Exception ignored in ..." (e.g. from a __del__)
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    with pytest.raises(ProjectorError, match="mtmd could not load"):
        gemma_edge.load(files[3], mmproj=mmproj, n_ctx=64)
    gc.collect()
    assert ignored == []


def _with_value(source, key: str, fmt: str, value, field: int = 0) -> bytes:
    """`source`'s bytes with the scalar metadata `key`'s value (struct format `fmt`) set to `value`;
    fmt "type" with field -4 sets its GGUF value type instead."""
    import struct

    data = bytearray(source.read_bytes())
    name = key.encode()
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name) + 4 + field
    fmt = "<I" if fmt == "type" else fmt
    data[at:at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return bytes(data)


# Values llama.cpp asserts on (aborting the process) or computes nonsense from: refused before it loads.
ABORTING_VALUES = {
    "NaN norm epsilon": (0, "gemma.attention.layer_norm_rms_epsilon", "<f", float("nan"), "is nan"),
    "no layers": (0, "gemma.block_count", "<I", 0, "block_count is 0"),
    "more layers than llama.cpp holds": (1, "gemma2.block_count", "<I", 513, "outside 1..512"),
    "every layer sharing KV": (5, "gemma4.attention.shared_kv_layers", "<I", 1000, "leaves none"),
    "AltUp input out of range": (4, "gemma3n.altup.active_idx", "<I", 4, "not below"),
    "a float where an integer belongs": (2, "tokenizer.ggml.bos_token_id", "type", 6, "is a number"),
    "an odd rope dimension count": (5, "gemma4.rope.dimension_count", "<I", 31, "not a multiple of 2"),
    "a context llama.cpp reads back as -1": (1, "gemma2.context_length", "<I", 1 << 31, "outside 1..4194304"),
    "a context that makes every tokenize() allocate 8 GB": (2, "gemma3.context_length", "<I", (1 << 31) - 1,
                                                            "outside 1..4194304"),
}


@pytest.mark.parametrize("case", list(ABORTING_VALUES))
def test_values_llama_cpp_would_abort_on_are_refused(case, tmp_path):
    index, key, fmt, value, message = ABORTING_VALUES[case]
    data = _with_value(seed_files()[index], key, fmt, value, field=-4 if fmt == "type" else 0)
    with pytest.raises(InvalidModelError, match=message):
        GGUFFile.from_buffer(data, case)


def test_two_tokens_alike_are_refused_before_llama_cpp_asserts(tmp_path):
    from gemma_edge.gguf_keys import check_vocabulary

    data = bytearray(seed_files()[0].read_bytes())
    gguf = GGUFFile.from_buffer(data)
    tokens = gguf.string_bytes("tokenizer.ggml.tokens")
    first, second = next((a, b) for a, b in zip(tokens, tokens[1:]) if len(a) == len(b) and a != b and a)
    at = data.index(second, data.index(first) + len(first))
    data[at:at + len(second)] = first
    with pytest.raises(InvalidModelError, match="twice"):
        check_vocabulary(GGUFFile.from_buffer(data))
