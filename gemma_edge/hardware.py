"""What the machine has: physical cores and the memory available right now."""
from __future__ import annotations

import os
import platform
import subprocess


def physical_cores() -> int:
    """Physical cores (llama.cpp gains nothing from SMT siblings on the matrix-vector work of decoding)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cores, physical = set(), None
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    cores.add((physical, value.strip()))
            if cores:
                return len(cores)
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            return int(subprocess.run(["sysctl", "-n", "hw.physicalcpu"], capture_output=True, text=True,
                                      timeout=5).stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return max(1, os.cpu_count() or 1)


def available_memory() -> int:
    """Bytes of RAM a new allocation can get now. $GEMMA_EDGE_MAX_MEMORY caps it (headroom for other
    programs on a small board, or a stricter limit under a container)."""
    limit = os.environ.get("GEMMA_EDGE_MAX_MEMORY")
    measured = _measured_available()
    if limit:
        try:
            return min(_parse_size(limit), measured)
        except ValueError:
            from gemma_edge.errors import GemmaEdgeError

            raise GemmaEdgeError(f"GEMMA_EDGE_MAX_MEMORY={limit!r} is not a size (e.g. 3G, 512M)") from None
    return measured


def total_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return _measured_available()


def _measured_available() -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def _parse_size(text: str) -> int:
    text = text.strip().upper().removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)
