"""The llama.cpp CPU build: flags derived from recorded machines, cache keys, the smoke run and the
build script's fallback (gemma_edge/cpu_build.py, scripts/build-llama-wheel.sh).

Expected flags come from ggml's CMake (llama.cpp 0.3.36: which option enables which instructions,
what GGML_NATIVE=OFF leaves on) and each CPU's published features: Xeon Sapphire Rapids (AVX-512
VBMI/VNNI/BF16, AVX-VNNI, AMX), AMD EPYC Zen 5 (the same minus AMX), Ryzen 7 5800U (Zen 3: AVX2, no
AVX-512), Core i5-2520M (Sandy Bridge: AVX only), Pi 5 = Cortex-A76 (ARMv8.2: dotprod, fp16), Pi 4 =
Cortex-A72 (ARMv8.0), Apple M2 (dotprod, fp16, i8mm), Graviton3 = Neoverse V1 (+SVE).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gemma_edge.cpu_build import SMOKE_RECORD, cache_key, cmake_args, smoke
from gemma_edge.hardware import load_recording

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "tests" / "bench" / "profiles"
SCRIPT = REPO / "scripts" / "build-llama-wheel.sh"
VERSION = "0.3.36"

X86_ORDER = ["SSE42", "AVX", "AVX2", "BMI2", "FMA", "F16C", "AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_VNNI",
             "AVX512_BF16", "AMX_TILE", "AMX_INT8", "AMX_BF16"]
AVX512_SET = {"AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"}
BASE_X86 = {"SSE42", "AVX", "AVX2", "BMI2", "FMA", "F16C"}
X86_ON = {
    "intel-xeon-sapphire-rapids-2core": BASE_X86 | {"AVX_VNNI"} | AVX512_SET,  # AMX: in the CPU, off by default
    "ci-x86-2core": BASE_X86 | {"AVX_VNNI"} | AVX512_SET,                      # AMD EPYC, family 26 (Zen 5)
    "x86-laptop": BASE_X86,                                                   # Ryzen 7 5800U
    "x86-old-laptop-avx": {"SSE42", "AVX"},                                   # Core i5-2520M
}
ARM_ARCH = {
    "raspberry-pi-5-8gb": "armv8.2-a+dotprod+fp16",
    "raspberry-pi-4-4gb": "armv8-a",
    "apple-m2-16gb": "armv8.2-a+dotprod+fp16+i8mm",
    "aws-graviton3-2core": "armv8.2-a+dotprod+fp16+i8mm+sve",
}
ALL = sorted(X86_ON) + sorted(ARM_ARCH)


def x86_flags(on: set[str]) -> list[str]:
    return ["-DGGML_NATIVE=OFF"] + [f"-DGGML_{name}={'ON' if name in on else 'OFF'}" for name in X86_ORDER]


@pytest.mark.parametrize("name", sorted(X86_ON))
def test_x86_flags_follow_the_cpu_without_amx(name):
    machine = load_recording(PROFILES / f"{name}.json")
    assert cmake_args(machine) == x86_flags(X86_ON[name])
    assert cmake_args(machine, conservative=True) == x86_flags(X86_ON[name] - AVX512_SET)


def test_the_xeon_has_amx_that_stays_off():
    machine = load_recording(PROFILES / "intel-xeon-sapphire-rapids-2core.json")
    assert {"amx_tile", "amx_int8", "amx_bf16", "avx512", "avx512_bf16"} <= machine.features
    assert "-DGGML_AMX_INT8=OFF" in cmake_args(machine)


def test_avx512_needs_all_five_subsets():
    """ggml's GGML_AVX512 compiles with -mavx512f/cd/vl/dq/bw: a CPU with only AVX-512F (Knights
    Landing) must not get it."""
    machine = load_recording(PROFILES / "ci-x86-2core.json")
    recording = json.loads((PROFILES / "ci-x86-2core.json").read_text())
    recording["cpuinfo"] = recording["cpuinfo"].replace(" avx512bw", "")
    from gemma_edge.hardware import machine_from_recording

    assert "avx512" in machine.features
    assert "avx512" not in machine_from_recording(recording).features


@pytest.mark.parametrize("name", sorted(ARM_ARCH))
def test_arm_march_follows_the_cpu(name):
    machine = load_recording(PROFILES / f"{name}.json")
    assert cmake_args(machine) == ["-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={ARM_ARCH[name]}"]
    conservative = cmake_args(machine, conservative=True)[1]
    assert conservative == f"-DGGML_CPU_ARM_ARCH={ARM_ARCH[name].replace('+sve', '')}"


def test_unknown_cpu_keeps_ggml_defaults():
    import dataclasses

    machine = load_recording(PROFILES / "x86-laptop.json")
    assert cmake_args(dataclasses.replace(machine, features=frozenset())) == []
    assert cmake_args(dataclasses.replace(machine, arch="riscv64")) == []


def test_cache_keys_differ_per_cpu_even_with_equal_flags():
    machines = [load_recording(PROFILES / f"{name}.json") for name in ALL]
    assert len({cache_key(VERSION, "-DGGML_RPC=on", m) for m in machines}) == len(ALL)
    # The Xeon and the EPYC derive the same flags; their keys still differ (the Xeon has AMX).
    xeon, epyc = (load_recording(PROFILES / f"{n}.json") for n in ("intel-xeon-sapphire-rapids-2core", "ci-x86-2core"))
    assert cmake_args(xeon) == cmake_args(epyc)
    assert cache_key(VERSION, " ".join(cmake_args(xeon)), xeon) != cache_key(VERSION, " ".join(cmake_args(epyc)), epyc)
    assert cache_key(VERSION, "-DA=1  -DB=2", epyc) == cache_key(VERSION, "-DA=1 -DB=2", epyc)


# -- the build script's fallback, with the slow steps replaced ------------------------------------

FAKE_BUILD = """
import os, sys, zipfile
out = sys.argv[1]
with open(os.environ["BUILD_LOG"], "a") as log:
    log.write(os.environ["CMAKE_ARGS"] + "\\n")
with zipfile.ZipFile(os.path.join(out, "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl"), "w") as whl:
    whl.writestr("CMAKE_ARGS", os.environ["CMAKE_ARGS"])
"""
# Dies by SIGSEGV when the wheel was built with AVX-512 on (the last -DGGML_AVX512= wins, as in CMake).
FAKE_SMOKE = """
import json, os, signal, sys, zipfile
args = zipfile.ZipFile(sys.argv[1]).read("CMAKE_ARGS").decode().split()
avx512 = [a for a in args if a.startswith("-DGGML_AVX512=")][-1]
if os.environ.get("SMOKE_ALWAYS_DIES") or avx512.endswith("=ON"):
    os.kill(os.getpid(), signal.SIGSEGV)
print(json.dumps({"passed": True, "tokens": [1, 2], "features": ["avx2"]}))
"""


def run_script(tmp_path, profile, cmake_extra="", **env_extra):
    (tmp_path / "build.py").write_text(FAKE_BUILD)
    (tmp_path / "smoke.py").write_text(FAKE_SMOKE)
    env = dict(os.environ, LLAMA_CPP_PYTHON_VERSION=VERSION, PYTHON=sys.executable,
               GEMMA_EDGE_WHEEL_CACHE=str(tmp_path / "cache"), GEMMA_EDGE_CPU_PROFILE=str(PROFILES / f"{profile}.json"),
               GEMMA_EDGE_WHEEL_BUILD=f"{sys.executable} {tmp_path / 'build.py'}",
               GEMMA_EDGE_WHEEL_SMOKE=f"{sys.executable} {tmp_path / 'smoke.py'}",
               BUILD_LOG=str(tmp_path / "builds.log"), CMAKE_ARGS=cmake_extra, **env_extra)
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def builds(tmp_path) -> list[str]:
    log = tmp_path / "builds.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_wheel_that_dies_in_its_smoke_run_is_rebuilt_conservatively(tmp_path):
    xeon = load_recording(PROFILES / "intel-xeon-sapphire-rapids-2core.json")
    # The user asks for AMX too; the fallback must turn it off again.
    amx = "-DGGML_AMX_TILE=ON -DGGML_AMX_INT8=ON -DGGML_AMX_BF16=ON"
    result = run_script(tmp_path, "intel-xeon-sapphire-rapids-2core", amx)
    assert result.returncode == 0, result.stderr
    fallback_lines = [line for line in result.stderr.splitlines() if "conservative" in line]
    assert len(fallback_lines) == 1 and "SIGSEGV" in fallback_lines[0], result.stderr
    first, second = builds(tmp_path)
    assert first.split() == ["-DGGML_RPC=on", *cmake_args(xeon), *amx.split()]
    assert second.split() == ["-DGGML_RPC=on", *amx.split(), *cmake_args(xeon, conservative=True)]
    wheel = Path(result.stdout.strip())
    assert wheel.parent.parent == tmp_path / "cache" and wheel.exists()
    assert zipfile.ZipFile(wheel).read("CMAKE_ARGS").decode() == second
    record = json.loads((wheel.parent / "BUILD.json").read_text())
    assert record["flags"].split() == second.split() and record["smoke"] == {"passed": True, "tokens": [1, 2],
                                                                             "fallback": True}
    # Cached under the key of what was asked for: the next run builds nothing.
    again = run_script(tmp_path, "intel-xeon-sapphire-rapids-2core", amx)
    assert again.returncode == 0 and again.stdout == result.stdout and len(builds(tmp_path)) == 2


def test_a_wheel_that_passes_is_cached_without_fallback(tmp_path):
    result = run_script(tmp_path, "x86-laptop")
    assert result.returncode == 0, result.stderr
    assert "conservative" not in result.stderr and len(builds(tmp_path)) == 1
    record = json.loads((Path(result.stdout.strip()).parent / "BUILD.json").read_text())
    assert record["smoke"]["fallback"] is False and record["cpu"] == "AMD Ryzen 7 5800U with Radeon Graphics"


def test_nothing_is_cached_when_the_conservative_build_dies_too(tmp_path):
    result = run_script(tmp_path, "x86-laptop", SMOKE_ALWAYS_DIES="1")
    assert result.returncode == 1
    assert "conservative build failed its smoke run too (died by SIGSEGV)" in result.stderr
    assert len(builds(tmp_path)) == 2
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_each_cpu_gets_its_own_cache_entry(tmp_path):
    wheels = {run_script(tmp_path, name).stdout for name in ("x86-laptop", "x86-old-laptop-avx")}
    assert len(wheels) == 2 and len(builds(tmp_path)) == 2


# -- the smoke run itself ----------------------------------------------------------------------------

def test_smoke_reports_a_signal(tmp_path):
    wheel = tmp_path / "llama_cpp_python-0.3.36-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr("llama_cpp/__init__.py", "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    status, result = smoke(wheel)
    assert status == 1 and result["signal"] == "SIGILL" and not result["passed"]


@pytest.mark.slow
def test_smoke_passes_with_the_installed_llama_cpp(tmp_path):
    """The real smoke run on the real llama.cpp of this venv (zipped as a wheel): the recorded tokens,
    and the CPU features the build reports."""
    import llama_cpp

    from gemma_edge.doctor import built_features
    from gemma_edge.llama.ggml import cpu_backend_features

    wheel = tmp_path / "llama_cpp_python-0.3.36-installed.whl"
    package = Path(llama_cpp.__file__).parent
    with zipfile.ZipFile(wheel, "w") as whl:
        for path in package.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                whl.write(path, Path("llama_cpp") / path.relative_to(package))
    status, result = smoke(wheel)
    assert status == 0, result
    assert result["features"] == sorted(built_features(cpu_backend_features()))


@pytest.mark.slow
def test_recorded_smoke_tokens_are_transformers_greedy():
    """The oracle for scripts/llama-smoke.json: transformers' greedy continuation on the real 270M's
    de-quantized weights (tests/convert/real_gemma3.py), with margins no CPU's rounding can flip."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tests.convert.real_gemma3 import real_checkpoint

    record = json.loads(SMOKE_RECORD.read_text())
    model = transformers.AutoModelForCausalLM.from_pretrained(real_checkpoint(), dtype=torch.float32)
    ids = torch.tensor([record["prompt_tokens"]])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=len(record["tokens"]), do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
    assert out.sequences[0, ids.shape[1]:].tolist() == record["tokens"]
    margins = [float(torch.topk(step[0], 2).values.diff().abs()) for step in out.logits]
    assert min(margins) > 1.0, margins


@pytest.mark.slow
def test_recorded_smoke_tokens_are_this_llama_cpp_greedy(embedded_model_path):
    from gemma_edge.llama import llama_cpp
    from gemma_edge.measure import raw_loop

    record = json.loads(SMOKE_RECORD.read_text())
    llm = llama_cpp().Llama(str(embedded_model_path), n_ctx=128, n_threads=2, verbose=False)
    assert llm.tokenize(record["prompt"].encode(), add_bos=True) == record["prompt_tokens"]
    assert list(raw_loop(llm, record["prompt_tokens"], len(record["tokens"])).tokens) == record["tokens"]
    assert llm.detokenize(record["tokens"]).decode() == record["text"]
