"""What a benchmark prints about the machine it ran on: the processor, the cores, the system, the load."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe() -> str:
    """`AMD EPYC ..., 2 CPUs, Linux 6.1.0; Python 3.11.7`."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; Python {platform.python_version()}"
    )


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
