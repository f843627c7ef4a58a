"""The real 270M split across this process's CPU and two loopback workers (separate processes).

Oracles: llama.cpp single-process on the same prompt, n_batch and (fresh) cache state for the tokens
and logits; llama.cpp's own load log for where the layers went."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from gemma_edge.rpc import RpcError, SupervisedEngine, plain_cpu_weights, run_generation
from gemma_edge.sampling import Sampling

pytestmark = pytest.mark.slow

N_CTX, N_BATCH = 512, 64
PROMPT = "The three largest cities of Italy are"
GREEDY = Sampling(temperature=0)


@pytest.fixture(scope="module")
def reference(embedded_model_path):
    """Single process: tokens, logits and the prompt tokens."""
    from gemma_edge.llama.engine import Engine

    with plain_cpu_weights():  # the workers' kernels (see plain_cpu_weights)
        engine = Engine(embedded_model_path, n_ctx=N_CTX, n_batch=N_BATCH)
    prompt = engine.llm.tokenize(PROMPT.encode(), add_bos=True)
    result = run_generation(engine, prompt, GREEDY, 24, True, lambda piece: None)
    engine.llm.close()
    return prompt, result


def split_engine(path, endpoints, **kw) -> SupervisedEngine:
    return SupervisedEngine(path, endpoints, engine_options={"n_ctx": N_CTX, "n_batch": N_BATCH}, repack=False, **kw)


def test_split_equals_single_process(embedded_model_path, workers, reference):
    prompt, expected = reference
    with split_engine(embedded_model_path, workers.endpoints) as engine:
        placement = engine.start()
        got = engine.generate(prompt, GREEDY, max_tokens=24, logits=True)
    assert [d["layers"] > 0 for d in placement["devices"]] == [True, True, True]
    assert got.tokens == expected["tokens"]
    assert len(got.logits) == len(expected["logits"]) > 0
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(got.logits, expected["logits"]))
    assert worst <= 1e-4


def test_reported_placement_is_llama_cpp_placement(embedded_model_path, workers):
    """An uneven --split, loaded with llama.cpp's debug log on: its per-layer lines are the oracle."""
    script = ("import json, sys; from gemma_edge.llama.engine import Engine; "
              "e = Engine(sys.argv[1], n_ctx=64, rpc=sys.argv[2].split(','), split=[1, 3, 2], verbose=True); "
              "print(json.dumps({'devices': list(e.placement.devices), 'layer_device': e.placement.layer_device}))")
    done = subprocess.run([sys.executable, "-c", script, str(embedded_model_path), ",".join(workers.endpoints)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "GEMMA_EDGE_DEBUG": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    ours = json.loads(done.stdout.strip().splitlines()[-1])
    logged = {int(layer): device for layer, device in
              re.findall(r"load_tensors: layer +(\d+) assigned to device (\S+),", done.stderr)}
    names = ["CPU"] + [re.search(r"\((RPC\d+)\)", name).group(1) for name in ours["devices"][1:]]
    assert logged == {layer: names[d] for layer, d in enumerate(ours["layer_device"])}
    assert set(logged.values()) == set(names)


def test_dead_worker_gives_a_clear_error_then_recovers(embedded_model_path, workers, reference):
    prompt, expected = reference
    victim = workers.endpoints[1]
    with split_engine(embedded_model_path, workers.endpoints, timeout=30) as engine:
        engine.start()
        killed = []

        def kill_once(piece):
            if not killed:
                workers.kill(1)
                killed.append(time.monotonic())

        with pytest.raises(RpcError, match=f"RPC worker {re.escape(victim)} is gone while generating"):
            engine.generate(prompt, GREEDY, max_tokens=400, on_text=kill_once)
        assert time.monotonic() - killed[0] < 15  # an error, not a hang
        with pytest.raises(RpcError, match=f"cannot reach RPC worker {re.escape(victim)}"):
            engine.generate(prompt, GREEDY, max_tokens=4)
        workers.start(1)
        again = engine.generate(prompt, GREEDY, max_tokens=24)
        assert again.tokens == expected["tokens"]
        # A worker that restarts between two requests leaves the child a stale connection: the next
        # request still succeeds (a fresh child, transparently).
        workers.kill(1)
        workers.start(1)
        after_restart = engine.generate(prompt, GREEDY, max_tokens=24)
    assert after_restart.tokens == expected["tokens"]
