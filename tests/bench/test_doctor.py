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

from gemma_edge.doctor import (DEFAULT_CONTEXT, build_flags, build_mismatch_warning, build_report, built_features,
                               detect_machine, missing_build_features, recommended_runtime)
from gemma_edge.hardware import load_recording
from gemma_edge.memory import check_fits
from gemma_edge.errors import InsufficientMemoryError

PROFILES = Path(__file__).parent / "profiles"

# Spec sheets: Ryzen 7 5800U 8 cores/16 threads, AVX2, no AVX-512; Pi 5 = 4x Cortex-A76 (ARMv8.2:
# dotprod, no i8mm); Pi 4 = 4x Cortex-A72 (ARMv8.0: no dotprod); Apple M2 = 4 P + 4 E cores, dotprod
# and i8mm, Metal GPU; Xeon Platinum 8481C (Sapphire Rapids) AVX-512 + AMX; Core i5-2520M (Sandy
# Bridge) 2 cores/4 threads, AVX without AVX2/FMA/F16C; Graviton3 (Neoverse V1) dotprod, i8mm, SVE.
SPECS = {
    "x86-laptop": {"threads": 8, "has": {"avx2", "fma", "f16c"}, "lacks": {"avx512", "neon"}, "quant": "Q4_K_M",
                   "gpu": None},
    "raspberry-pi-5-8gb": {"threads": 4, "has": {"neon", "dotprod"}, "lacks": {"i8mm", "avx2"}, "quant": "Q4_0",
                           "gpu": None},
    "raspberry-pi-4-4gb": {"threads": 4, "has": {"neon"}, "lacks": {"dotprod", "i8mm"}, "quant": "Q4_0",
                           "gpu": None},
    "apple-m2-16gb": {"threads": 4, "has": {"neon", "dotprod", "i8mm"}, "lacks": {"avx2"}, "quant": "Q4_K_M",
                      "gpu": "metal"},
    "ci-x86-2core": {"threads": 2, "has": {"avx2", "avx512"}, "lacks": {"neon", "amx_int8"}, "quant": "Q4_K_M",
                     "gpu": None},
    "intel-xeon-sapphire-rapids-2core": {"threads": 2, "has": {"avx512", "avx512_vnni", "avx512_bf16", "amx_int8"},
                                         "lacks": {"neon"}, "quant": "Q4_K_M", "gpu": None},
    "x86-old-laptop-avx": {"threads": 2, "has": {"avx"}, "lacks": {"avx2", "fma", "f16c"}, "quant": "Q4_0",
                           "gpu": None},
    "aws-graviton3-2core": {"threads": 2, "has": {"neon", "dotprod", "i8mm", "sve"}, "lacks": {"avx2"},
                            "quant": "Q4_0", "gpu": None},
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


def test_missing_build_features_follow_the_cpu_backend_features():
    # Feature names as ggml-cpu.cpp's ggml_backend_get_features lists them; a feature the build lacks is absent.
    pi5 = machine("raspberry-pi-5-8gb")
    generic_arm_build = {"NEON": "1", "ARM_FMA": "1", "FP16_VA": "1", "LLAMAFILE": "1", "OPENMP": "1", "REPACK": "1"}
    assert missing_build_features(pi5, built_features(generic_arm_build)) == ["dotprod"]
    assert missing_build_features(pi5, built_features(generic_arm_build | {"DOTPROD": "1"})) == []


def test_amx_is_off_by_design_not_missing():
    """The Xeon's derived build (gemma_edge.cpu_build) leaves AMX out: doctor does not call that missing,
    and says the CPU has AMX and it is not in use."""
    xeon = machine("intel-xeon-sapphire-rapids-2core")
    derived = {"SSE3": "1", "SSSE3": "1", "AVX": "1", "AVX_VNNI": "1", "AVX2": "1", "F16C": "1", "FMA": "1",
               "BMI2": "1", "AVX512": "1", "AVX512_VBMI": "1", "AVX512_VNNI": "1", "AVX512_BF16": "1", "REPACK": "1"}
    report = build_report(xeon, derived, ["CPU_REPACK"], None, amx_opt_in=False)
    assert report["missing_build_features"] == [] and report["unsupported_build_features"] == []
    assert report["amx"] == {"cpu": True, "built": False, "in_use": False}
    assert report["smoke"] is None
    with_amx = build_report(xeon, derived | {"AMX_INT8": "1"}, ["AMX", "CPU_REPACK"], None, amx_opt_in=True)
    assert with_amx["amx"] == {"cpu": True, "built": True, "in_use": True}


def test_a_build_for_another_cpu_is_named_before_loading():
    """A venv built on the Xeon, run on the old laptop: the record says what the library uses."""
    old_laptop = machine("x86-old-laptop-avx")
    record = {"features": ["avx", "avx2", "avx512", "fma"], "cpu": "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz",
              "flags": "-DGGML_RPC=on …", "smoke": {"passed": True, "tokens": [1], "fallback": False}}
    line = build_mismatch_warning(old_laptop, record)
    assert "avx2 avx512 fma" in line and "Xeon" in line and "i5-2520M" in line and "\n" not in line
    report = build_report(old_laptop, None, [], record, amx_opt_in=False)
    assert report["unsupported_build_features"] == ["avx2", "avx512", "fma"]
    assert report["built_for_source"] == "build record" and report["smoke"]["passed"]
    assert build_mismatch_warning(machine("intel-xeon-sapphire-rapids-2core"), record) is None


def test_info_warns_in_one_line_about_a_foreign_build(embedded_model_path, tmp_path, monkeypatch):
    import sys

    from click.testing import CliRunner

    from gemma_edge.cli import main
    from gemma_edge.llama.loader import LLAMA_BUILD_RECORD

    lacking = sorted({"avx512", "sve", "amx_int8"} - detect_machine().features)
    (tmp_path / LLAMA_BUILD_RECORD).write_text(json.dumps({"features": lacking, "cpu": "a faraway CPU"}))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    result = CliRunner().invoke(main, ["info", str(embedded_model_path)])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("\n") == 1 and "a faraway CPU" in result.stderr and " ".join(lacking) in result.stderr


def test_this_machine_and_its_build(facts):
    """Live detection goes through the same parsers; the installed llama.cpp was built here
    (scripts/setup-venv.sh), so it uses every feature this CPU has (AMX only on request) and
    nothing it lacks."""
    from gemma_edge.llama.ggml import cpu_backend_features

    m = detect_machine()
    built = built_features(cpu_backend_features())
    assert m.physical_cores >= 1 and m.available_memory > 0
    assert missing_build_features(m, built) == [] and built <= m.features
    assert recommended_runtime(facts)["n_threads"] == m.performance_cores


def test_build_flags_by_platform():
    assert [f["flag"] for f in build_flags(machine("apple-m2-16gb"))] == [
        "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16+i8mm", "-DGGML_METAL=on"]
    pi5 = build_flags(machine("raspberry-pi-5-8gb"))
    assert len(pi5) == 1 and pi5[0]["derived"] and "armv8.2-a+dotprod+fp16" in pi5[0]["flag"]


def test_doctor_cli_json(embedded_model_path):
    from click.testing import CliRunner

    from gemma_edge.cli import main

    result = CliRunner().invoke(main, ["doctor", str(embedded_model_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["recommended"]["n_threads"] == detect_machine().performance_cores
    build = data["llama_cpp_build"]
    assert build["missing_build_features"] == [] and build["unsupported_build_features"] == []
    assert build["built_for_source"] == "loaded library" and "CPU_REPACK" in build["extra_buffer_types"]
    assert build["amx"]["cpu"] == ("amx_int8" in detect_machine().features)


def test_doctor_lines_name_amx_and_the_smoke_run():
    from gemma_edge.cli.doctor import build_lines

    xeon = machine("intel-xeon-sapphire-rapids-2core")
    record = {"features": ["avx", "avx2"], "cpu": xeon.cpu, "flags": "-DGGML_RPC=on",
              "smoke": {"passed": True, "tokens": [1], "fallback": True}}
    lines = build_lines(build_report(xeon, {"AVX": "1", "AVX2": "1"}, ["CPU_REPACK"], record, amx_opt_in=False))
    assert lines[-2].startswith("AMX         in this CPU, not used (opt in:")
    assert lines[-1] == ("smoke run   passed after falling back to the conservative build (no AVX-512, no AMX)")
    assert any("does not use: avx512" in line for line in lines)


def test_spec_auto_follows_the_benchmark_evidence(facts, monkeypatch):
    """`--spec auto` is "ngram" only where SPECULATION_EVIDENCE records prompt lookup at least as fast on every
    task; elsewhere (no evidence, or not x86-64, where exact batches are unverified) it is "off"."""
    from gemma_edge.doctor import SPECULATION_EVIDENCE, SpeculationEvidence, recommended_speculation

    epyc = dataclasses.replace(machine("raspberry-pi-5-8gb"), arch="x86_64", cpu="AMD EPYC 9B45")
    assert recommended_speculation(facts, epyc)[0] == next(
        row.mode for row in SPECULATION_EVIDENCE if row.model == facts.name and row.cpu in epyc.cpu)
    win = SpeculationEvidence("AMD EPYC", facts.name, "ngram", "measured win")
    import gemma_edge.doctor as doctor

    monkeypatch.setattr(doctor, "SPECULATION_EVIDENCE", (win,))
    assert recommended_speculation(facts, epyc) == ("ngram", "measured win")
    assert recommended_runtime(facts, epyc)["speculative"] == "ngram"
    assert recommended_speculation(facts, machine("raspberry-pi-5-8gb"))[0] == "off"  # aarch64
    assert recommended_speculation(facts, dataclasses.replace(epyc, cpu="Intel Xeon"))[0] == "off"
