"""What the machine has: CPU name, physical and performance cores, instruction-set features, memory.

The one module that asks the OS: `/proc/cpuinfo` + `/proc/meminfo` on Linux, one `sysctl` call on
macOS. A `Machine` is built from that raw text by pure parsers, so recorded profiles of other
machines (a Raspberry Pi, a Mac: tests/bench/profiles) go through exactly the code that reads this
one. Standard library only at import time: scripts/build-llama-wheel.sh runs gemma_edge.cpu_build,
which uses it, before gemma-edge's dependencies are installed.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

# OS feature name → our name. x86 from /proc/cpuinfo "flags", ARM from "Features", macOS from sysctl.
CPUINFO_FEATURES = {
    "sse4_2": "sse4_2", "avx": "avx", "avx2": "avx2", "bmi2": "bmi2", "fma": "fma", "f16c": "f16c",
    "avx512vbmi": "avx512_vbmi", "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16", "avx_vnni": "avx_vnni",
    "amx_tile": "amx_tile", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16",
    "asimd": "neon", "asimddp": "dotprod", "i8mm": "i8mm", "sve": "sve", "asimdhp": "fp16",
}
# Features that need several OS flags: llama.cpp's AVX512 build uses AVX-512 F, CD, VL, DQ and BW.
COMPOSITE_FEATURES = {"avx512": frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})}
# macOS on Intel spells some flags differently (machdep.cpu.features / leaf7_features, lower-cased, "." → "_").
MACHDEP_FEATURES = CPUINFO_FEATURES | {"avx1_0": "avx", "avx512vnni": "avx512_vnni"}
SYSCTL_FEATURES = {
    "hw.optional.AdvSIMD": "neon", "hw.optional.neon": "neon", "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm", "hw.optional.arm.FEAT_FP16": "fp16", "hw.optional.arm.FEAT_SVE": "sve",
}
# The sysctl keys parse_sysctl reads.
SYSCTL_KEYS = ("hw.physicalcpu", "hw.perflevel0.physicalcpu", "hw.memsize", "machdep.cpu.brand_string",
               "machdep.cpu.features", "machdep.cpu.leaf7_features", *SYSCTL_FEATURES)
UNKNOWN_CPU = "unknown CPU"


def features_from_flags(flags: set[str], names: dict[str, str]) -> frozenset[str]:
    found = {names[f] for f in flags if f in names}
    found |= {name for name, needs in COMPOSITE_FEATURES.items() if needs <= flags}
    return frozenset(found)


@dataclass(frozen=True)
class Machine:
    name: str
    system: str                  # "Linux", "Darwin", …
    arch: str                    # "x86_64", "aarch64", "arm64"
    cpu: str
    physical_cores: int
    performance_cores: int       # cores llama.cpp should use (Apple: the P-cores)
    features: frozenset[str]
    total_memory: int
    available_memory: int
    gpu: str | None = None       # "metal" on Apple silicon

    def describe(self) -> dict:
        gb = 2**30
        return {"name": self.name, "system": self.system, "arch": self.arch, "cpu": self.cpu,
                "physical_cores": self.physical_cores, "performance_cores": self.performance_cores,
                "features": sorted(self.features), "total_memory_gb": round(self.total_memory / gb, 1),
                "available_memory_gb": round(self.available_memory / gb, 1), "gpu": self.gpu}


# -- parsers (pure) --------------------------------------------------------------------------------

def parse_cpuinfo(text: str) -> dict:
    """CPU name, physical core count and features from /proc/cpuinfo (x86 or ARM)."""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    cores, processors, flags, name = set(), 0, set(), ""
    board = ""
    for block in blocks:
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "processor" in fields:
            processors += 1
            if "core id" in fields:
                cores.add((fields.get("physical id", "0"), fields["core id"]))
        for key in ("flags", "Features"):
            if key in fields:
                flags.update(fields[key].split())
        name = name or fields.get("model name", "")
        board = board or fields.get("Model", "")
    return {"cpu": board or name or UNKNOWN_CPU, "physical_cores": len(cores) or processors,
            "features": features_from_flags(flags, CPUINFO_FEATURES)}


def parse_meminfo(text: str) -> dict:
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * 1024
    total = values.get("MemTotal", 0)
    return {"total_memory": total, "available_memory": values.get("MemAvailable", values.get("MemFree", total))}


def parse_sysctl(text: str) -> dict:
    """macOS `sysctl -a` (or the subset we ask for): cores, P-cores, memory, ARM features."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    physical = int(values.get("hw.physicalcpu", 0))
    machdep = {flag.replace(".", "_") for flag in (values.get("machdep.cpu.features", "") + " " +
                                                    values.get("machdep.cpu.leaf7_features", "")).lower().split()}
    features = {name for key, name in SYSCTL_FEATURES.items() if values.get(key) == "1"}
    features |= features_from_flags(machdep, MACHDEP_FEATURES)
    total = int(values.get("hw.memsize", 0))
    return {"cpu": values.get("machdep.cpu.brand_string", UNKNOWN_CPU), "physical_cores": physical,
            "performance_cores": int(values.get("hw.perflevel0.physicalcpu", physical)),
            "features": frozenset(features), "total_memory": total,
            "available_memory": int(values.get("available_memory", total))}


def machine_from_recording(recording: dict) -> Machine:
    """A machine from recorded raw text: {"name", "system", "arch", "cpuinfo", "meminfo"} on Linux,
    {"name", "system", "arch", "sysctl"} on macOS (whose "available_memory" line is vm_stat's
    free + inactive pages, recorded alongside)."""
    system, arch = recording["system"], recording["arch"]
    if system == "Darwin":
        info = parse_sysctl(recording["sysctl"])
    else:
        info = parse_cpuinfo(recording["cpuinfo"]) | parse_meminfo(recording["meminfo"])
    return Machine(name=recording["name"], system=system, arch=arch, cpu=info["cpu"],
                   physical_cores=info["physical_cores"],
                   performance_cores=info.get("performance_cores", info["physical_cores"]),
                   features=info["features"], total_memory=info["total_memory"],
                   available_memory=info["available_memory"],
                   gpu="metal" if system == "Darwin" and arch == "arm64" else None)


def load_recording(path: str | Path) -> Machine:
    return machine_from_recording(json.loads(Path(path).read_text(encoding="utf-8")))


# -- this machine (the only reads of /proc/cpuinfo, /proc/meminfo and sysctl) -----------------------

def detect_machine() -> Machine:
    """This machine, read live, with the memory available right now (`available_memory`, so
    $GEMMA_EDGE_MAX_MEMORY applies here as in the engine)."""
    machine = _probe()
    return replace(machine, available_memory=available_memory(machine))


def physical_cores() -> int:
    """Physical cores (llama.cpp gains nothing from SMT siblings on the matrix-vector work of decoding)."""
    return _probe().physical_cores


def cpu_name() -> str | None:
    """The CPU's (or, on a Raspberry Pi, the board's) name; None when the OS does not say."""
    cpu = _probe().cpu
    return None if cpu == UNKNOWN_CPU else cpu


def available_memory(machine: Machine | None = None) -> int:
    """Bytes of RAM a new allocation can get now. $GEMMA_EDGE_MAX_MEMORY caps it (headroom for other
    programs on a small board, or a stricter limit under a container)."""
    limit = os.environ.get("GEMMA_EDGE_MAX_MEMORY")
    measured = (machine or _probe()).available_memory
    if limit:
        try:
            return min(_parse_size(limit), measured)
        except ValueError:
            from gemma_edge.errors import GemmaEdgeError

            raise GemmaEdgeError(f"GEMMA_EDGE_MAX_MEMORY={limit!r} is not a size (e.g. 3G, 512M)") from None
    return measured


def total_memory() -> int:
    return _probe().total_memory


def _probe() -> Machine:
    """This machine as the OS describes it; what the OS files do not say (Windows, restricted
    containers) from os.cpu_count and sysconf."""
    system, arch = platform.system(), platform.machine()
    recording = {"name": platform.node() or "this machine", "system": system, "arch": arch}
    if system == "Darwin":
        recording["sysctl"] = _sysctl(SYSCTL_KEYS)
    else:
        recording["cpuinfo"], recording["meminfo"] = _read("/proc/cpuinfo"), _read("/proc/meminfo")
    machine = machine_from_recording(recording)
    cores = machine.physical_cores or max(1, os.cpu_count() or 1)
    # sysctl has no figure for the memory available now (a recording's comes from vm_stat)
    available = machine.available_memory if "meminfo" in recording else 0
    return replace(machine, physical_cores=cores, performance_cores=machine.performance_cores or cores,
                   total_memory=machine.total_memory or _sysconf("SC_PHYS_PAGES"),
                   available_memory=available or _sysconf("SC_AVPHYS_PAGES"))


def _sysconf(pages: str) -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf(pages)
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def _sysctl(keys: tuple[str, ...]) -> str:
    try:
        return subprocess.run(["sysctl", *keys], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)
