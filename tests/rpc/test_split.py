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

from gemma_edge.errors import RpcError
from gemma_edge.llama.internals import recording_logits
from gemma_edge.model import read_model_facts
from gemma_edge.rpc.supervision import SupervisedEngine
from gemma_edge.runtime import resolve_settings
from gemma_edge.sampling import Sampling

pytestmark = pytest.mark.slow

N_CTX, N_BATCH = 512, 64
PROMPT = "The three largest cities of Italy are"
GREEDY = Sampling(temperature=0)


def plain_settings(facts, **kw):
    """Local weights in plain CPU buffers, as a worker holds them: llama.cpp's repacked kernels (e.g.
    Q4_K in 8x8 blocks on AVX2) round differently, by up to ~1 logit on the 270M, and a worker cannot
    repack, so only then does a split run compute exactly what one process computes."""
    return resolve_settings(facts, n_ctx=N_CTX, n_batch=N_BATCH, extra_buffers=False, **kw)


@pytest.fixture(scope="module")
def reference(embedded_model_path):
    """Single process: tokens, logits and the prompt tokens."""
    from gemma_edge.llama.engine import Engine

    facts = read_model_facts(embedded_model_path)
    engine = Engine(facts, plain_settings(facts))
    prompt = engine.llm.tokenize(PROMPT.encode(), add_bos=True)
    with recording_logits(engine.llm) as logits:
        gen = engine.generate(prompt, GREEDY, max_tokens=24)
        gen.text()
    engine.close()
    sampled = len(gen.tokens) + (gen.finish_reason == "stop")
    return prompt, {"tokens": gen.tokens, "logits": logits[:sampled]}


def split_engine(path, endpoints, speculative="off", **kw) -> SupervisedEngine:
    facts = read_model_facts(path)
    return SupervisedEngine(facts, plain_settings(facts, rpc=endpoints, speculative=speculative), **kw)


def generate(engine, prompt, max_tokens, on_text=None):
    gen = engine.generate(prompt, GREEDY, max_tokens=max_tokens)
    for piece in gen:
        if on_text is not None:
            on_text(piece)
    return gen


def test_split_equals_single_process(embedded_model_path, workers, reference):
    prompt, expected = reference
    with split_engine(embedded_model_path, workers.endpoints, record_logits=True) as engine:
        placement = engine.placement.as_dict()
        got = generate(engine, prompt, 24)
    assert [d["layers"] > 0 for d in placement["devices"]] == [True, True, True]
    assert got.tokens == expected["tokens"]
    assert len(engine.recorded_logits) == len(expected["logits"]) > 0
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(engine.recorded_logits, expected["logits"]))
    assert worst <= 1e-4


def test_reported_placement_is_llama_cpp_placement(embedded_model_path, workers):
    """An uneven --split, loaded with llama.cpp's debug log on: its per-layer lines are the oracle."""
    script = ("import json, sys; from gemma_edge.model import read_model_facts; "
              "from gemma_edge.runtime import open_engine, resolve_settings; f = read_model_facts(sys.argv[1]); "
              "e = open_engine(f, resolve_settings(f, n_ctx=64, rpc=sys.argv[2].split(','), split=[1, 3, 2]), "
              "verbose=True, supervised=False); "
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
        killed = []

        def kill_once(piece):
            if not killed:
                workers.kill(1)
                killed.append(time.monotonic())

        with pytest.raises(RpcError, match=f"RPC worker {re.escape(victim)} is gone while generating"):
            generate(engine, prompt, 400, on_text=kill_once)
        assert time.monotonic() - killed[0] < 15  # an error, not a hang
        with pytest.raises(RpcError, match=f"cannot reach RPC worker {re.escape(victim)}"):
            generate(engine, prompt, 4)
        workers.start(1)
        again = generate(engine, prompt, 24)
        assert again.tokens == expected["tokens"]
        # A worker that restarts between two requests leaves the child a stale connection: the next
        # request still succeeds (a fresh child, transparently).
        workers.kill(1)
        workers.start(1)
        after_restart = generate(engine, prompt, 24)
    assert after_restart.tokens == expected["tokens"]


def test_every_generation_option_crosses_to_the_child(embedded_model_path, workers):
    """Interventions (forced tokens, as a thinking budget forces its closing marker), logprobs, speculation
    and grammars behave as in one process; a generation its caller stops reading leaves the child ready
    for the next. Both engines are loaded for speculation (exact batches, which speculation needs)."""
    from gemma_edge.llama.engine import Engine
    from gemma_edge.speculative import make_speculation

    facts = read_model_facts(embedded_model_path)
    local = Engine(facts, plain_settings(facts, speculative="ngram"))
    prompt = local.llm.tokenize(PROMPT.encode(), add_bos=True)
    forced = local.llm.tokenize(b" Venice", add_bos=False)

    def forcing():
        seen = []

        def intervene(generated):
            if len(generated) >= 3 and not seen:
                seen.append(list(generated))
                return forced
            return None
        return intervene, seen

    def run(engine, max_tokens=16, **options):
        engine.reset()
        gen = engine.generate(prompt, GREEDY, max_tokens=max_tokens, **options)
        gen.text()
        return gen

    with split_engine(embedded_model_path, workers.endpoints, speculative="ngram") as split:
        results = []
        for engine in (local, split):
            intervene, seen = forcing()
            with_options = run(engine, intervene=intervene, logprobs=3)
            speculative = run(engine, 32, speculation=make_speculation("ngram"))  # alone: it decodes in batches
            grammar = run(engine, grammar='root ::= " Milan, Rome and Naples."')
            # read in this process's vocabulary (the split engine's tokenizer), while the engines are open
            records = [(r["token"], [t["token"] for t in r["top_logprobs"]]) for r in with_options.logprob_records()]
            text = engine.detokenize(grammar.tokens)
            results.append((with_options, seen, speculative, grammar, records, text))
        stream = iter(split.generate(prompt, GREEDY, max_tokens=200))
        next(stream), next(stream)
        stream.close()  # abandoned after two pieces
        again = run(split)
        expected = run(local)
    local.close()
    (want, want_seen, want_speculative, want_grammar, want_records, _), \
        (got, got_seen, got_speculative, got_grammar, got_records, got_text) = results
    assert got.tokens == want.tokens and forced[0] in got.tokens
    assert got_seen == want_seen and got.finish_reason == want.finish_reason and got.usage == want.usage
    assert got_speculative.tokens == want_speculative.tokens and got_speculative.usage == want_speculative.usage
    assert got_speculative.usage["drafted_tokens"] > 0
    for (lp, top), (want_lp, want_top) in zip(got.token_logprobs, want.token_logprobs, strict=True):
        assert abs(lp - want_lp) <= 1e-4 and [t for t, _ in top] == [t for t, _ in want_top]
    assert got_records == want_records
    assert got_grammar.tokens == want_grammar.tokens
    assert got_text == " Milan, Rome and Naples."
    assert again.tokens == expected.tokens and again.usage == expected.usage


SCRIPT = """\
import os, signal, sys
import gemma_edge
from gemma_edge.sampling import Sampling

model = gemma_edge.load(sys.argv[1], n_ctx=256, rpc=sys.argv[2].split(","))  # a script without a main guard
child = model.engine._process.pid
events = 0
try:
    for event in model.stream("Tell me a long story", raw=True, max_tokens=200, temperature=0):
        events += 1
        if events == 3:
            os.killpg(0, signal.SIGINT)  # what Ctrl-C in a terminal sends: to the whole process group
except KeyboardInterrupt:
    print("interrupted", events)
print("next", repr(model.generate("The capital of France is", raw=True, max_tokens=6, temperature=0).content))
print("same child", model.engine._process.pid == child)
"""


def test_a_script_is_interrupted_like_one_process(embedded_model_path, workers, tmp_path):
    """load(rpc=...) from a plain script (the child is a fresh interpreter, not a re-import of it);
    Ctrl-C stops the reply in progress and leaves the loaded model to the next request."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(embedded_model_path), ",".join(workers.endpoints)],
                          capture_output=True, text=True, timeout=300, start_new_session=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    import gemma_edge

    single = gemma_edge.load(embedded_model_path, n_ctx=256)
    expected = single.generate("The capital of France is", raw=True, max_tokens=6, temperature=0).content
    single.close()
    assert done.stdout.splitlines() == ["interrupted 3", f"next {expected!r}", "same child True"]
