"""What machine a number was measured on: CPU model, core count, load.

Training speed on a CPU depends on the cores and on whatever else runs beside it (a
training run that shares two cores with a test suite runs at half speed), so every
speed we record carries these three facts; `bench train` prints them before its numbers.
"""

from __future__ import annotations

import os
import platform
from typing import Any


def cpu_model() -> str:
    """The processor's model name (Linux `/proc/cpuinfo`), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> tuple[float, float, float] | None:
    """1, 5 and 15-minute load averages, or None where the OS has none."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return None
    return round(one, 2), round(five, 2), round(fifteen, 2)


def machine_facts() -> dict[str, Any]:
    """CPU model, usable cores and load, as recorded in model cards and printed by benchmarks."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cores": cores, "load_average": load_average()}
