"""Shared by the benchmarks: what machine they ran on, and timing that notices other processes.

Benchmarks often run on shared machines. ``Clock`` measures wall seconds, this process's CPU
seconds and, on Linux, the CPU seconds every *other* process used meanwhile (from
``/proc/stat``): ``others_cores`` near 0 means the figure is an idle machine's.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def machine_cpu_seconds() -> float | None:
    """Busy CPU seconds of the whole machine since boot (Linux /proc/stat), or None elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Clock:
    """Accumulates wall seconds, this process's CPU seconds and the other processes' CPU seconds."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.others: float | None = 0.0

    def __enter__(self) -> "Clock":
        self._start = (time.perf_counter(), time.process_time(), machine_cpu_seconds())
        return self

    def __exit__(self, *exc) -> None:
        t, c, m = self._start
        wall, cpu, machine = time.perf_counter() - t, time.process_time() - c, machine_cpu_seconds()
        self.wall += wall
        self.cpu += cpu
        if m is None or machine is None or self.others is None:
            self.others = None
        else:
            self.others += max(0.0, machine - m - cpu)

    @property
    def others_cores(self) -> float | None:
        return None if self.others is None else round(self.others / max(self.wall, 1e-9), 2)

    def figures(self) -> dict:
        return {"wall_s": round(self.wall, 2), "cpu_s": round(self.cpu, 2),
                "cores_busy": round(self.cpu / self.wall, 2) if self.wall else 0.0, "others_cores": self.others_cores}


def machine_info() -> dict:
    """CPU model, usable CPUs, memory, OS and Python: recorded with every result."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    return {"cpu_model": model, "cpus": len(os.sched_getaffinity(0)), "memory_gib": mem_gib,
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "load_avg_1min": round(os.getloadavg()[0], 2)}
