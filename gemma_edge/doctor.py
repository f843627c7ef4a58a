"""What this machine can do and the runtime settings that get the most out of it.

The machine comes from `gemma_edge.hardware` (the one reader of /proc and sysctl, whose pure parsers
also read recorded profiles of other machines: `load_recording`). `recommended_runtime()` turns a
machine and a model's facts into the defaults `run`/`chat` use when the user sets nothing
(gemma_edge.runtime applies them; the memory budget is gemma_edge.memory's).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from gemma_edge.cpu_build import LLAMA_BUILD_KEYS, built_features, cmake_args
from gemma_edge.hardware import Machine, detect_machine
from gemma_edge.memory import memory_needed
from gemma_edge.speculative import parse_spec

# The context run/chat use by default when it fits, and the smallest worth recommending (below it a
# chat turn barely fits).
DEFAULT_CONTEXT = 4096
MIN_CONTEXT = 512

# Compiled in only when the user asks for it: AMX (its extra buffer type crashes llama.cpp on some
# Xeons, issue 14; see gemma_edge.cpu_build).
OPT_IN_FEATURES = frozenset({"amx_int8"})


# -- llama.cpp build ---------------------------------------------------------------------------------

def missing_build_features(machine: Machine, built: frozenset[str]) -> list[str]:
    """CPU features this machine has that the build does not use (AMX is off by design: opt-in)."""
    return sorted(f for f in machine.features - built if f in LLAMA_BUILD_KEYS and f not in OPT_IN_FEATURES)


def unsupported_build_features(machine: Machine, built: frozenset[str]) -> list[str]:
    """Instructions the build uses that this CPU lacks: running it dies by SIGILL."""
    return sorted(built - machine.features)


def build_mismatch_warning(machine: Machine, record: dict | None) -> str | None:
    """One line for `info`/`run`, from the build record (read before llama.cpp is loaded, which may
    already execute the missing instructions)."""
    lacking = unsupported_build_features(machine, frozenset(record.get("features", ()))) if record else []
    if not lacking:
        return None
    return (f"warning: llama.cpp here was built on {record.get('cpu', 'another CPU')} for {' '.join(lacking)}, "
            f"which this CPU ({machine.cpu}) lacks, so it may die by SIGILL: rerun scripts/setup-venv.sh here")


def build_report(machine: Machine, backend_features: dict[str, str] | None, extra_buffer_types: list[str],
                 record: dict | None, amx_opt_in: bool) -> dict:
    """What `doctor` says about the llama.cpp build: the features it was compiled for (from the loaded
    library, or from the build record when loading it could crash), those the CPU has that it does not
    use and those it uses that the CPU lacks, AMX, and the smoke run of the build script."""
    built = built_features(backend_features) if backend_features is not None else \
        frozenset(record.get("features", ())) if record else frozenset()
    amx_buffers = "AMX" in extra_buffer_types
    return {
        "built_for": sorted(built),
        "built_for_source": "loaded library" if backend_features is not None else "build record",
        "extra_buffer_types": extra_buffer_types,
        "missing_build_features": missing_build_features(machine, built),
        "unsupported_build_features": unsupported_build_features(machine, built),
        "amx": {"cpu": "amx_int8" in machine.features, "built": "amx_int8" in built,
                "in_use": amx_buffers and amx_opt_in},
        "smoke": record.get("smoke") if record else None,
        "build_flags_used": record.get("flags") if record else None,
    }


def llama_build(machine: Machine) -> dict:
    """`build_report` for the installed llama-cpp-python. The library is not loaded when its build
    record says it uses instructions this CPU lacks."""
    from gemma_edge.llama.ggml import cpu_backend_features, cpu_extra_buffer_types
    from gemma_edge.llama.loader import AMX_OPT_IN, recorded_build

    record = recorded_build()
    opt_in = os.environ.get(AMX_OPT_IN) == "1"
    if build_mismatch_warning(machine, record):
        return build_report(machine, None, [], record, opt_in)
    return build_report(machine, cpu_backend_features(), cpu_extra_buffer_types(), record, opt_in)


# -- recommendations (pure) --------------------------------------------------------------------------

# Approximate bits per weight of each quantization (llama.cpp's quantize table), to say which fits.
BITS_PER_WEIGHT = {"F16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q4_K_M": 4.85, "Q4_0": 4.5,
                   "IQ4_NL": 4.5}


@dataclass(frozen=True)
class QuantRule:
    applies: Callable[[Machine], bool]
    quantization: str
    why: str


# First match wins. Repacking facts are from llama.cpp's ggml-cpu/repack.cpp (the version we pin).
QUANT_RULES = (
    QuantRule(lambda m: m.gpu == "metal", "Q4_K_M",
              "Metal runs K-quants at full speed; Q4_K_M is the best quality per byte at 4 bits"),
    QuantRule(lambda m: {"neon", "i8mm"} <= m.features, "Q4_0",
              "llama.cpp repacks Q4_0 at load into 4x8 tiles for the int8 matrix-multiply (i8mm) instructions"),
    QuantRule(lambda m: {"neon", "dotprod"} <= m.features, "Q4_0",
              "llama.cpp repacks Q4_0 at load into 4x4 tiles for the dot-product (dotprod) instructions"),
    QuantRule(lambda m: "neon" in m.features, "Q4_0",
              "no dotprod (e.g. Cortex-A72): nothing is repacked and Q4_0 has the cheapest NEON kernel"),
    QuantRule(lambda m: "avx2" in m.features, "Q4_K_M",
              "llama.cpp repacks Q4_K into 8x8 tiles on AVX2; Q4_K_M is the best quality per byte at 4 bits"),
    QuantRule(lambda m: True, "Q4_0", "no SIMD kernels were detected: the smallest, simplest 4-bit type"),
)


def context_candidates(facts) -> list[int]:
    """The default context, halved down to MIN_CONTEXT, never above the model's maximum."""
    top = min(facts.context_length, DEFAULT_CONTEXT)
    sizes = [top]
    while sizes[-1] // 2 >= MIN_CONTEXT:
        sizes.append(sizes[-1] // 2)
    return sizes


@dataclass(frozen=True)
class SpeculationEvidence:
    """What bench/speculative.py showed for a model on a CPU; `mode` is what `--spec auto` picks there:
    "ngram" only where prompt lookup was at least as fast as no speculation on every task, free text included."""
    cpu: str       # a substring of the CPU's name
    model: str     # ModelFacts.name
    mode: str
    evidence: str


SPECULATION_EVIDENCE = (
    SpeculationEvidence(
        "AMD EPYC", "Gemma 3 270m", "off",
        "bench/speculative.py --threads 2 on the idle machine, 2026-12-05 (bench/README.md): prompt lookup "
        "0.77-1.03x no speculation over the five tasks, 0.77x on the free story; every exact step pays for "
        "the 262,144 x 640 output matrix through llama.cpp's tinyBLAS"),
)


def recommended_speculation(facts, machine: Machine | None = None) -> tuple[str, str]:
    """What `--spec auto` means for a model on a machine, and why: a mode bench/speculative.py has shown
    at least as fast as no speculation on every task there (SPECULATION_EVIDENCE), otherwise "off"."""
    machine = machine or detect_machine()
    if machine.arch not in ("x86_64", "amd64"):
        return "off", "exact batches (gemma_edge.llama.exact) are verified on x86-64 only"
    for row in SPECULATION_EVIDENCE:
        if row.cpu in machine.cpu and row.model == facts.name:
            return row.mode, row.evidence
    return "off", "no bench/speculative.py run has shown prompt lookup faster for this model on this CPU"


def resolve_spec(value: str | None, facts) -> str:
    """The mode a --spec / `speculative=` value means for a model: "auto" becomes `recommended_speculation`
    for this machine and model."""
    mode = parse_spec(value)
    return recommended_speculation(facts)[0] if mode == "auto" else mode


def recommended_runtime(facts, machine: Machine | None = None, projector_bytes: int = 0) -> dict:
    """Defaults for a model (and its projector) on a machine: `n_threads` (the physical performance
    cores: decoding is memory-bound, SMT siblings and efficiency cores only add synchronisation), `n_ctx`
    (the default context, halved until gemma_edge.memory's budget fits the available RAM; if even the
    smallest does not fit, the smallest, and the loader's memory check explains the refusal), the
    quantization for this CPU, and why."""
    machine = machine or detect_machine()
    candidates = context_candidates(facts)
    fit = lambda n: memory_needed(facts, n, projector_bytes) <= machine.available_memory  # noqa: E731
    n_ctx = next((n for n in candidates if fit(n)), candidates[-1])
    rule = next(r for r in QUANT_RULES if r.applies(machine))
    fits = fit(n_ctx)
    speculative, speculative_why = recommended_speculation(facts, machine)
    return {
        "n_threads": max(1, machine.performance_cores),
        "n_ctx": n_ctx,
        "fits": fits,
        "quantization": rule.quantization,
        "speculative": speculative,
        "why": {
            "n_threads": f"{machine.performance_cores} physical "
                         f"{'performance ' if machine.performance_cores != machine.physical_cores else ''}cores",
            "n_ctx": (f"largest of {candidates} whose weights + KV cache fit in "
                      f"{machine.available_memory / 2**30:.1f} GB available") if fits else
                     f"the model does not fit in {machine.available_memory / 2**30:.1f} GB even with {n_ctx} tokens",
            "quantization": rule.why,
            "speculative": speculative_why,
        },
    }


def quantizations_that_fit(facts, machine: Machine, n_ctx: int = MIN_CONTEXT) -> list[str]:
    """Quantizations of this model (estimated from its parameter count) that fit with `n_ctx`."""
    return [q for q, bits in BITS_PER_WEIGHT.items()
            if memory_needed(facts, n_ctx, weights_bytes=facts.parameters * bits / 8) <= machine.available_memory]


def build_flags(machine: Machine) -> list[dict]:
    """CMAKE_ARGS for llama-cpp-python on this machine, each with why (README). The CPU flags are
    derived by scripts/build-llama-wheel.sh itself (gemma_edge.cpu_build); these are the user's extras."""
    derived = " ".join(cmake_args(machine)) or "(ggml's defaults: -march=native)"
    flags = [{"flag": derived, "why": "derived by scripts/build-llama-wheel.sh from this CPU's features ("
              + (" ".join(sorted(machine.features)) or "none") + "), AMX off unless you add "
              "-DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON", "derived": True}]
    if machine.gpu == "metal":
        flags.append({"flag": "-DGGML_METAL=on", "why": "run on the Apple GPU (Metal)", "derived": False})
    if machine.arch in ("x86_64", "AMD64") and machine.physical_cores >= 8:
        flags.append({"flag": "-DGGML_BLAS=on -DGGML_BLAS_VENDOR=OpenBLAS",
                      "why": "faster prompt processing of F16/F32 models on many cores", "derived": False})
    return flags


def report(facts, machine: Machine | None = None, build: dict | None = None) -> dict:
    """Everything `gemma-edge doctor` prints (`build`: `llama_build(machine)`, when llama.cpp is here)."""
    machine = machine or detect_machine()
    result = {"machine": machine.describe(), "model": facts.describe(),
              "recommended": recommended_runtime(facts, machine),
              "quantizations_that_fit": quantizations_that_fit(facts, machine),
              "build_flags": build_flags(machine)}
    if build is not None:
        result["llama_cpp_build"] = build
    return result
