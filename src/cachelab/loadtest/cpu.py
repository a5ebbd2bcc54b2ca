"""The load generator's own CPU: a saturated generator under-reports the server.

Locust runs every simulated user of a process on one core (gevent). When that
core is busy, requests leave late and responses are read late, so measured
latency grows and throughput flattens for reasons that have nothing to do
with the system under test. Each process measures its CPU time over the run
(psutil); a run where any generator process averaged more than
:data:`SATURATED_PCT` of a core is flagged ``saturated``: its numbers describe
the generator, not the server.
"""

from __future__ import annotations

import time
from typing import Any

import psutil

SATURATED_PCT = 90.0


class CpuMeter:
    """CPU use of this process since :meth:`start` (mean) and over short intervals (peak)."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._start_cpu = 0.0
        self._start_wall = 0.0
        self._last_cpu = 0.0
        self._last_wall = 0.0
        self.peak_pct = 0.0
        self.started = False

    def _cpu(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def start(self) -> None:
        self._start_cpu = self._last_cpu = self._cpu()
        self._start_wall = self._last_wall = time.monotonic()
        self.peak_pct = 0.0
        self.started = True

    def sample(self) -> float:
        """Percent of one core used since the previous sample; updates the peak."""
        if not self.started:
            self.start()
        cpu, wall = self._cpu(), time.monotonic()
        pct = 100.0 * (cpu - self._last_cpu) / max(wall - self._last_wall, 1e-6)
        self._last_cpu, self._last_wall = cpu, wall
        self.peak_pct = max(self.peak_pct, pct)
        return pct

    def report(self) -> dict[str, Any]:
        if not self.started:
            self.start()
        cpu, wall = self._cpu() - self._start_cpu, time.monotonic() - self._start_wall
        return {
            "cpu_seconds": round(cpu, 3),
            "wall_seconds": round(wall, 3),
            "mean_pct": round(100.0 * cpu / max(wall, 1e-6), 1),
            "peak_pct": round(self.peak_pct, 1),
        }


def generator_summary(processes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Combine per-process reports: the busiest process decides whether the run was saturated."""
    busiest = max((p.get("mean_pct", 0.0) for p in processes.values()), default=0.0)
    return {
        "processes": processes,
        "cpu_seconds": round(sum(p.get("cpu_seconds", 0.0) for p in processes.values()), 3),
        "max_mean_pct": busiest,
        "saturated": busiest > SATURATED_PCT,
        "saturated_threshold_pct": SATURATED_PCT,
        "cores": psutil.cpu_count() or 1,
    }
