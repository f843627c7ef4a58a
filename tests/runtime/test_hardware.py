"""gemma_edge.hardware is the one place that asks the OS what the machine has, and stays importable
with the standard library alone (scripts/build-llama-wheel.sh runs gemma_edge.cpu_build before any
dependency is installed)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gemma_edge import hardware

REPO = Path(__file__).resolve().parents[2]
OS_SOURCES = ("/proc/cpuinfo", "/proc/meminfo", '"sysctl"')


def test_only_hardware_reads_the_os_descriptions_of_the_machine():
    readers = sorted(str(path.relative_to(REPO)) for package in ("gemma_edge", "convert", "bench")
                     for path in (REPO / package).rglob("*.py")
                     if any(source in path.read_text(encoding="utf-8") for source in OS_SOURCES))
    assert readers == ["gemma_edge/hardware.py"]


def test_cpu_build_imports_only_the_standard_library():
    probe = ("import json, sys, gemma_edge.cpu_build; "
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names))))")
    out = subprocess.run([sys.executable, "-S", "-c", probe], cwd=REPO, env={"PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True).stdout
    assert set(json.loads(out)) <= {"gemma_edge", "__main__"}


def test_the_live_probe_is_one_machine():
    """Cores, CPU and memory asked one at a time agree with the whole machine (same reader, same parse)."""
    machine = hardware.detect_machine()
    assert machine.physical_cores == hardware.physical_cores() >= 1
    assert machine.total_memory == hardware.total_memory() > 0
    assert hardware.cpu_name() in (machine.cpu, None)
