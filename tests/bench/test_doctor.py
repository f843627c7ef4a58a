"""`doctor`'s recommendations against recorded CPU/RAM profiles.

Expected values come from the machines' published specifications (core counts, which ARM/x86
features each CPU has) and from the written contract of `recommended_runtime` (threads = physical
performance cores; the largest default-or-halved context that passes the engine's own memory check;
quantization by llama.cpp's repacking rules in ggml-cpu/repack.cpp).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gemma_edge.doctor import (build_flags, detect_machine, load_recording, missing_build_features, parse_system_info,
                               recommended_runtime)
from gemma_edge.engine import DEFAULT_CONTEXT, check_fits
from gemma_edge.errors import InsufficientMemoryError

PROFILES = Path(__file__).parent / "profiles"

# Spec sheets: Ryzen 7 5800U 8 cores/16 threads, AVX2, no AVX-512; Pi 5 = 4x Cortex-A76 (ARMv8.2:
# dotprod, no i8mm); Pi 4 = 4x Cortex-A72 (ARMv8.0: no dotprod); Apple M2 = 4 P + 4 E cores, dotprod
# and i8mm, Metal GPU.
SPECS = {
    "x86-laptop": {"threads": 8, "has": {"avx2", "fma", "f16c"}, "lacks": {"avx512", "neon"}, "quant": "Q4_K_M",
                   "gpu": None},
    "raspberry-pi-5-8gb": {"threads": 4, "has": {"neon", "dotprod"}, "lacks": {"i8mm", "avx2"}, "quant": "Q4_0",
                           "gpu": None},
    "raspberry-pi-4-4gb": {"threads": 4, "has": {"neon"}, "lacks": {"dotprod", "i8mm"}, "quant": "Q4_0",
                           "gpu": None},
    "apple-m2-16gb": {"threads": 4, "has": {"neon", "dotprod", "i8mm"}, "lacks": {"avx2"}, "quant": "Q4_K_M",
                      "gpu": "metal"},
    "ci-x86-2core": {"threads": 2, "has": {"avx2", "avx512"}, "lacks": {"neon"}, "quant": "Q4_K_M", "gpu": None},
}


@pytest.fixture(scope="module")
def facts(embedded_model_path):
    from gemma_edge.model import read_model_facts

    return read_model_facts(embedded_model_path)


def machine(name):
    return load_recording(PROFILES / f"{name}.json")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_profile_parses_to_the_published_hardware(name):
    spec, m = SPECS[name], machine(name)
    assert m.performance_cores == spec["threads"]
    assert spec["has"] <= m.features and not (spec["lacks"] & m.features)
    assert m.gpu == spec["gpu"]
    assert 0 < m.available_memory <= m.total_memory


@pytest.mark.parametrize("name", sorted(SPECS))
def test_recommendations_for_the_embedded_model(name, facts, monkeypatch):
    spec, m = SPECS[name], machine(name)
    rec = recommended_runtime(facts, m)
    assert rec["n_threads"] == spec["threads"]
    assert rec["quantization"] == spec["quant"]
    # The 270M fits everywhere: the default context, capped by the model's maximum.
    assert rec["n_ctx"] == min(DEFAULT_CONTEXT, facts.context_length) and rec["fits"]
    monkeypatch.setenv("GEMMA_EDGE_MAX_MEMORY", str(m.available_memory))
    check_fits(facts, rec["n_ctx"])  # the engine accepts what doctor recommends


@pytest.mark.parametrize("name", ["raspberry-pi-4-4gb", "raspberry-pi-5-8gb"])
def test_context_shrinks_until_the_engine_accepts_it(name, facts, monkeypatch):
    """A big model on a small board: the recommended context passes the engine's memory check and
    the next larger candidate does not."""
    m = machine(name)
    monkeypatch.setenv("GEMMA_EDGE_MAX_MEMORY", str(m.available_memory))
    kv = 64 * 1024  # bytes per token, a multi-billion-parameter model's F16 KV cache
    weights = m.available_memory - (300 << 20) - kv * 1536  # leaves room for 1024 tokens, not 2048
    big = dataclasses.replace(facts, weights_bytes=weights, kv_bytes_per_token=kv, context_length=32768)
    rec = recommended_runtime(big, m)
    assert rec["n_ctx"] == 1024 and rec["fits"]
    check_fits(big, rec["n_ctx"])
    with pytest.raises(InsufficientMemoryError):
        check_fits(big, rec["n_ctx"] * 2)


def test_model_that_cannot_fit_is_reported_not_hidden(facts, monkeypatch):
    m = machine("raspberry-pi-4-4gb")
    huge = dataclasses.replace(facts, weights_bytes=m.available_memory + 1)
    rec = recommended_runtime(huge, m)
    assert not rec["fits"] and rec["n_ctx"] == 512
    monkeypatch.setenv("GEMMA_EDGE_MAX_MEMORY", str(m.available_memory))
    with pytest.raises(InsufficientMemoryError):
        check_fits(huge, rec["n_ctx"])


def test_missing_build_features_follow_llama_cpp_system_info():
    # Feature names as ggml-cpu.cpp prints them; a feature the build lacks is simply not printed.
    pi5 = machine("raspberry-pi-5-8gb")
    generic_arm_build = "CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
    assert missing_build_features(pi5, generic_arm_build) == ["dotprod"]
    assert missing_build_features(pi5, generic_arm_build.replace("FP16_VA = 1", "FP16_VA = 1 | DOTPROD = 1")) == []
    assert parse_system_info(generic_arm_build)["NEON"] is True


def test_this_machine_and_its_build(facts):
    """Live detection goes through the same parsers; the installed llama.cpp was built natively here
    (scripts/setup-venv.sh), so it must cover every feature this CPU has."""
    from gemma_edge.doctor import llama_system_info

    m = detect_machine()
    assert m.physical_cores >= 1 and m.available_memory > 0
    assert missing_build_features(m, llama_system_info()) == []
    assert recommended_runtime(facts)["n_threads"] == m.performance_cores


def test_build_flags_by_platform():
    assert [f["flag"] for f in build_flags(machine("apple-m2-16gb"))] == ["-DGGML_METAL=on"]
    assert build_flags(machine("raspberry-pi-5-8gb"))[0]["flag"] == "-DGGML_NATIVE=on"


def test_doctor_cli_json(embedded_model_path):
    from click.testing import CliRunner

    from gemma_edge.cli import main

    result = CliRunner().invoke(main, ["doctor", str(embedded_model_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["recommended"]["n_threads"] == detect_machine().performance_cores
    assert data["missing_build_features"] == []
