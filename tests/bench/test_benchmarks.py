"""Each benchmark runs on a tiny budget (`--quick`, one thread) and writes well-formed results.
Nothing here is timed: speed is measured by `make bench`, never asserted in unit tests."""
from __future__ import annotations

import importlib.util
import json

import pytest

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
pytestmark = pytest.mark.slow


def written(out, name) -> dict:
    assert (out / f"{name}.md").read_text(encoding="utf-8").startswith("###")
    assert (out / f"{name}.png").exists() == HAS_MATPLOTLIB
    return json.loads((out / f"{name}.json").read_text(encoding="utf-8"))


def assert_spread(stats: dict) -> None:
    assert stats["min"] <= stats["median"] <= stats["max"] and stats["n"] >= 1


def test_bench_command_json(embedded_model_path, tmp_path):
    from click.testing import CliRunner

    from gemma_edge.cli import main

    result = CliRunner().invoke(main, ["bench", str(embedded_model_path), "--threads", "1", "--prompt-tokens", "12",
                                       "--gen-tokens", "4", "--repeat", "2", "--json", "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report == json.loads((tmp_path / "b.json").read_text())
    assert report["identical_tokens"]  # both sides did the same work from the same state
    for side in ("gemma-edge", "llama.cpp"):
        assert len(report["runs"][side]) == 2
        assert all(r["prompt_tokens"] == 12 for r in report["runs"][side])
        for metric in ("prefill_tokens_per_s", "decode_tokens_per_s", "ttft_s", "rss_mb"):
            assert_spread(report["sides"][side][metric])
    sides, ratio = report["sides"], report["ratio_to_llama_cpp"]["gemma-edge"]
    assert ratio["decode_tokens_per_s"] == pytest.approx(
        sides["gemma-edge"]["decode_tokens_per_s"]["median"] / sides["llama.cpp"]["decode_tokens_per_s"]["median"],
        abs=1e-3)


def test_overhead(tmp_path):
    from bench import overhead

    overhead.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    report = written(tmp_path, "overhead")
    assert report["identical_tokens"]
    # The chat side prefilled exactly the prompt the raw side evaluated.
    assert {r["prompt_tokens"] for side in report["runs"].values() for r in side} == {report["settings"]["prompt_tokens"]}


@pytest.mark.slow
def test_speculative(tmp_path):
    from bench import speculative

    speculative.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    report = written(tmp_path, "speculative")
    [row] = report["tasks"].values()
    assert row["same_tokens_as_exact"] is True  # prompt lookup changes no token of the exact decoding
    assert set(row["speedup_over_off"]) == {speculative.OFF, speculative.EXACT, speculative.NGRAM, speculative.LCPP}
    assert report["auto_verdict"] in ("ngram", "off")
    assert set(report["goals"]) == {"input_grounded_at_least_1_5x", "ahead_of_llama_cpp_python_lookup",
                                    "free_story_at_least_0_97x"}


@pytest.mark.slow
def test_speculative_draft_pair(tmp_path, embedded_model_path):
    from bench import speculative
    from tests.convert.real_gemma3 import real_checkpoint, real_conversion

    target = real_conversion(real_checkpoint(), "q8_0")  # the mode's default F16 target is a longer conversion
    speculative.main(["--quick", "--threads", "1", "--out", str(tmp_path), "--model", str(target),
                      "--draft", str(embedded_model_path)])
    report = written(tmp_path, speculative.DRAFT_NAME)
    [row] = report["tasks"].values()
    assert row["same_tokens_as_off"] and row["speedup_over_off"] > 0
    assert int(row["accepted_per_drafted"].split("/")[1]) > 0


def test_kv_reuse(tmp_path):
    from bench import kv_reuse

    kv_reuse.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    report = written(tmp_path, "kv_reuse")
    turns = report["per_turn"]
    assert [t["turn"] for t in turns] == [1, 2, 3]
    assert turns[0]["prompt_tokens_evaluated"] == turns[0]["prompt_tokens"]
    for t in turns[1:]:  # later turns only prefill what is new
        assert 0 < t["prompt_tokens_evaluated"] < t["prompt_tokens"] - turns[0]["prompt_tokens"]
    assert report["last_turn_without_reuse"]["prompt_tokens_evaluated"] == turns[-1]["prompt_tokens"]


def test_thread_scaling(tmp_path):
    """The quantization half needs an F16 conversion and seven quantizations: `make bench` only."""
    from bench import threads_quants

    threads_quants.main(["--quick", "--threads", "1", "--types", "--out", str(tmp_path)])
    report = written(tmp_path, "threads_quants")
    assert [row["threads"] for row in report["threads"]] == [1]
    assert report["quantizations"] == []
    assert report["threads"][0]["llama.cpp"]["decode_tokens_per_s"] > 0


def test_bandwidth_through_run_all(tmp_path, embedded_model_path):
    """`make bench`'s entry point, here with one script: its results and the summary."""
    from bench import run_all
    from gemma_edge.model import read_model_facts

    run_all.main(["--quick", "--threads", "1", "--out", str(tmp_path),
                  "--skip", "overhead", "kv_reuse", "transformers", "threads_quants"])
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "Machine:" in summary and (tmp_path / "bandwidth.md").read_text(encoding="utf-8") in summary
    report = written(tmp_path, "bandwidth")
    assert report["bandwidth"]["gb_per_s_best"] >= report["bandwidth"]["gb_per_s_median"] > 0
    [model] = report["models"]
    facts = read_model_facts(embedded_model_path)
    position = report["settings"]["prompt_tokens"] + report["settings"]["gen_tokens"] // 2
    per_token = facts.weights_bytes + facts.kv_bytes_per_token * position
    assert model["bytes_per_token_mb"] == round(per_token / 2**20, 1)
    assert model["bound_tokens_per_s"] == pytest.approx(report["bandwidth"]["gb_per_s_best"] * 1e9 / per_token, abs=0.1)
    assert model["llama_cpp_efficiency"] == pytest.approx(
        model["llama_cpp_decode_tokens_per_s"] / model["bound_tokens_per_s"], abs=2e-3)


def test_transformers_comparison(tmp_path):
    """Both stacks in their own processes on the same weights; greedy decoding agrees on the first
    tokens (transformers from the de-quantized weights in float32, llama.cpp on the Q4_K_M blocks)."""
    from bench import transformers_cpu

    transformers_cpu.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    report = written(tmp_path, "transformers")
    assert set(report["sides"]) == {"gemma-edge", "llama.cpp", "transformers"}
    assert report["greedy_tokens_in_common_with_llama_cpp"] >= 1
    assert all(r["prompt_tokens"] == report["settings"]["prompt_tokens"] for r in report["runs"]["transformers"])


def test_embeddings_comparison(tmp_path):
    """gemma-edge and sentence-transformers' modules embed the same texts, each in its own process."""
    pytest.importorskip("sentence_transformers")
    from bench import embed

    embed.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    out = tmp_path / "embed.md"
    assert out.read_text(encoding="utf-8").startswith("###")
    report = json.loads((tmp_path / "embed.json").read_text(encoding="utf-8"))
    edge, st = (report["sides"][side] for side in embed.SIDES)
    for side in (edge, st):
        assert side["min_s"] <= side["median_s"] <= side["max_s"] and side["peak_rss_mb"] > 0
    assert report["ratio_gemma_edge_to_sentence_transformers"]["texts_per_s"] == pytest.approx(
        edge["texts_per_s"] / st["texts_per_s"], rel=0.01)
