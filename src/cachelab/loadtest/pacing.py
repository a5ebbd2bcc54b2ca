"""Open-model pacing and coordinated-omission correction.

A closed-loop user sends its next request only after the previous answer:
when the server stalls for a second, the user simply stops asking, and the
second of requests it *would* have sent is never measured (coordinated
omission). A paced user instead has a schedule — task ``k`` is due at
``t0 + k·interval`` — and keeps to it: after a stall it sends the overdue
tasks back to back. Each request is timed twice: raw (from when it was sent)
and corrected, from when it was *due* (``raw + lag``, where lag is how late
its task started against the schedule). Corrected percentiles are what a
stream of real users arriving at that rate would have seen; they are never
below the raw ones.
"""

from __future__ import annotations

import random
import time


class Pacer:
    """One user's schedule of intended task start times (``time.perf_counter`` seconds)."""

    def __init__(
        self, interval: float, *, phase: float | None = None, rng: random.Random | None = None
    ) -> None:
        if interval <= 0:
            raise ValueError("pacing interval must be > 0")
        self.interval = interval
        # Spread users over one interval so N users do not fire in lock-step.
        offset = phase if phase is not None else (rng or random).random() * interval
        self.due = time.perf_counter() + offset
        self._lag: float | None = None
        self.tasks = 0

    def wait(self) -> float:
        """Seconds to sleep before the next task is due (0 when already late).

        Called as Locust's ``wait_time`` before the first task too (see the users' ``on_start``).
        """
        if self.tasks:
            self.due += self.interval
        self.tasks += 1
        self._lag = None
        return max(0.0, self.due - time.perf_counter())

    def lag(self) -> float:
        """How late the current task started against its schedule; fixed at its first request."""
        if self._lag is None:
            self._lag = max(0.0, time.perf_counter() - self.due)
        return self._lag
